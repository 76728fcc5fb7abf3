"""Learning curves and forecast plots, saved as PNG next to each export."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_learning_curves(
    history: dict[str, list[float]], path: Path, title: str, best_epoch: int | None = None
) -> None:
    """Train/validation loss and metric per epoch, as the seed notebooks plot them.

    Args:
        history: Keras' ``History.history``.
        path: the PNG to write.
        title: the figure title.
        best_epoch: 1-based epoch whose weights were kept (early stopping); marked on
            every panel.
    """
    metrics = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"validation {key}")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle=":", label=f"best epoch {best_epoch}")
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


def plot_report(
    bars: list[tuple[str, float, float | None, bool]], path: Path, metric: str = "accuracy"
) -> None:
    """Our test metric per export beside the seed's published figure.

    Args:
        bars: ``(label, ours, seed's figure or None, synthetic)`` per export. Synthetic
            bars are hatched and labelled, and never get a seed bar beside them.
        path: the PNG to write.
        metric: the axis label.
    """
    height = max(3.0, 0.45 * len(bars) + 1.8)
    fig, ax = plt.subplots(figsize=(9, height))
    rows = np.arange(len(bars))
    for row, (label, ours, published, synthetic) in zip(rows, bars):
        ax.barh(
            row - 0.2,
            ours,
            height=0.38,
            color="tab:grey" if synthetic else "tab:blue",
            hatch="//" if synthetic else None,
            label="ours, synthetic data" if synthetic else "ours, real data",
        )
        ax.text(ours, row - 0.2, f" {ours:.3f}" + (" (synthetic)" if synthetic else ""), va="center")
        if published is not None and not synthetic:
            ax.barh(row + 0.2, published, height=0.38, color="tab:orange", label="seed's published")
            ax.text(published, row + 0.2, f" {published:.3f}", va="center")
    ax.set_yticks(rows, [label for label, *_ in bars])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3)  # room for the value labels
    ax.set_xlabel(f"test {metric}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(
            unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.18),
            ncol=3, frameon=False,
        )
    if not bars:
        ax.text(0.5, 0.5, f"no export with a test {metric}", ha="center", transform=ax.transAxes)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Trained exports against the seeds' published results")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
