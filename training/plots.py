"""Learning curves and forecast plots, saved as PNG next to each export."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_learning_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Train/validation loss and metric per epoch, as the seed notebooks plot them."""
    metrics = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_forecast(truth: np.ndarray, prediction: np.ndarray, path: Path, title: str) -> None:
    """One-step predictions against the truth on the held-out month."""
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = np.arange(len(truth))
    ax.plot(steps, truth, "o-", label="truth")
    ax.plot(steps, prediction, "s--", label="prediction")
    ax.set_xlabel("step in held-out month")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
