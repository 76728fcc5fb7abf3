"""Train, evaluate, export and register one model variant.

Typical usage::

    result = train_model("imdb", options=TrainOptions(synthetic=True, quick=True))
    print(result.metric, result.value, result.export_path)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import data as data_lib
from training import export as export_lib
from training import plots
from training.models import get_model_module

log = logging.getLogger(__name__)

# (epochs, batch size) for a full run and for the quick profile, per model.
DEFAULT_SCHEDULE: dict[str, dict[str, tuple[int, int]]] = {
    "reuters": {"full": (10, 64), "quick": (6, 64)},
    "imdb": {"full": (5, 128), "quick": (3, 64)},
    "cifar": {"full": (10, 64), "quick": (3, 64)},
    "cosine": {"full": (60, 16), "quick": (30, 16)},
    "mnist": {"full": (5, 128), "quick": (3, 64)},
    "translator": {"full": (30, 64), "quick": (8, 64)},
}

LOSSES = {
    "binary": ("binary_crossentropy", ["accuracy"]),
    "multiclass": ("sparse_categorical_crossentropy", ["accuracy"]),
    "regression": ("mse", ["mae"]),
}


class UsageError(Exception):
    """A bad model or variant name; the CLI prints it and exits with code 2."""


@dataclass(frozen=True)
class TrainOptions:
    variant: str | None = None  # None: the model's default variant
    epochs: int | None = None  # None: DEFAULT_SCHEDULE
    batch_size: int | None = None
    quick: bool = False  # small data and few epochs: for make serve, demos and tests
    synthetic: bool = False
    data_path: Path | None = None
    out: Path = Path("exports")
    seed: int = 0
    register: bool = True  # also register in the BentoML store
    # Under make serve's quick profile an unreachable dataset falls back to synthetic data
    # with a loud warning; everywhere else it is an error.
    synthetic_fallback: bool = False


@dataclass(frozen=True)
class TrainResult:
    model: str
    variant: str
    data: str  # "synthetic" or the dataset source
    metric: str
    value: float
    seconds: float
    export_path: Path
    version: int
    metrics: dict[str, float]
    history: dict[str, list[float]]
    bento_tag: str | None
    keras_model: Any = dataclasses.field(default=None, repr=False, compare=False)
    dataset: Any = dataclasses.field(default=None, repr=False, compare=False)


def resolve_variant(name: str, variant: str | None) -> tuple[Any, str]:
    """The model module and a validated variant name."""
    try:
        module = get_model_module(name)
    except KeyError:
        raise UsageError(f"unknown model {name!r}") from None
    variant = variant or module.DEFAULT_VARIANT
    if variant not in module.VARIANTS:
        valid = ", ".join(sorted(module.VARIANTS))
        raise UsageError(f"unknown variant {variant!r} for {name} (valid: {valid})")
    return module, variant


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _load_with_fallback(load, options: TrainOptions):
    try:
        return load(synthetic=options.synthetic)
    except data_lib.DatasetUnavailable as exc:
        if not options.synthetic_fallback:
            raise
        banner = "!" * 78
        print(
            f"{banner}\nWARNING: {exc}\nWARNING: falling back to SYNTHETIC data; "
            f"this model has not seen the real dataset.\n{banner}",
            file=sys.stderr,
        )
        return load(synthetic=True)


def _to_model_inputs(module, x: np.ndarray) -> np.ndarray:
    if module.INPUT == "image":
        x = x.astype("float32") / 255.0
        return x[..., None] if x.ndim == 3 else x
    if module.INPUT == "window":
        return x.astype("float32")
    return x.astype("int32")


def train_model(name: str, options: TrainOptions = TrainOptions()) -> TrainResult:
    """Trains, evaluates, exports and (optionally) registers one model variant.

    Raises:
        UsageError: unknown model or variant.
        training.data.DataError: the data could not be loaded.
    """
    module, variant = resolve_variant(name, options.variant)
    keras.utils.set_random_seed(options.seed)
    schedule = DEFAULT_SCHEDULE[name]["quick" if options.quick else "full"]
    epochs = options.epochs or schedule[0]
    batch_size = options.batch_size or schedule[1]
    started = time.perf_counter()

    if name == "translator":
        trained = _train_translator(module, variant, options, epochs, batch_size)
    else:
        trained = _train_keras(module, variant, options, epochs, batch_size)
    model, dataset, history, metrics, export_module, params, extra_plots = trained

    names = export_lib.SIGNATURES[module.INPUT]
    model_dir = Path(options.out) / name
    path = export_lib.save_export(export_module, model_dir, names)
    version = int(path.name)
    seconds = time.perf_counter() - started

    plots.plot_learning_curves(history, path / "learning_curves.png", f"{name} / {variant}")
    for plot in extra_plots:
        plot(path)

    config = dataclasses.asdict(module.Config())
    if name == "translator":
        # The caps in Config are upper bounds; the model's real id ranges come from the data.
        config.update(
            source_vocab_size=len(dataset.source_vocab),
            target_vocab_size=len(dataset.target_vocab),
        )
    metadata = {
        "model": name,
        "variant": variant,
        "version": version,
        "params": params,
        "dataset": {
            "name": name,
            "source": dataset.source,
            "synthetic": bool(dataset.synthetic),
        },
        "metrics": metrics,
        "labels": list(getattr(dataset, "labels", []) or []),
        "signatures": export_lib.signature_specs(export_module, names),
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": options.seed,
            "quick": options.quick,
            "seconds": round(seconds, 1),
            "config": config,
        },
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": _git_revision(),
        "export_path": str(path.resolve()),
    }
    export_lib.write_metadata(path, metadata)

    tag = None
    if options.register:
        from training.registry import register_export

        tag = register_export(path, metadata)

    metric = next(iter(metrics))
    return TrainResult(
        model=name,
        variant=variant,
        data="synthetic" if dataset.synthetic else dataset.source,
        metric=metric,
        value=float(metrics[metric]),
        seconds=seconds,
        export_path=path,
        version=version,
        metrics=metrics,
        history=history,
        bento_tag=tag,
        keras_model=model,
        dataset=dataset,
    )


def _train_keras(module, variant, options, epochs, batch_size):
    config = module.Config()
    model = module.build_model(variant, config)
    load_kwargs: dict[str, Any] = {
        "data_path": options.data_path,
        "quick": options.quick,
        "seed": options.seed,
    }
    if module.INPUT == "text":
        load_kwargs.update(vocab_size=config.vocab_size, maxlen=int(model.inputs[0].shape[1]))
    if module.INPUT == "window":
        load_kwargs.update(window=int(model.inputs[0].shape[1]))
    dataset = _load_with_fallback(
        lambda synthetic: data_lib.load_dataset(module.NAME, synthetic=synthetic, **load_kwargs),
        options,
    )
    for warning in dataset.extra.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    x_train = _to_model_inputs(module, dataset.x_train)
    x_test = _to_model_inputs(module, dataset.x_test)
    loss, metric_names = LOSSES[module.TASK]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metric_names)
    fit = model.fit(
        x_train,
        dataset.y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=0.1,
        shuffle=True,
        verbose=2 if options.quick else 1,
    )
    scores = model.evaluate(x_test, dataset.y_test, batch_size=256, verbose=0, return_dict=True)
    if module.TASK == "regression":
        metrics = {"mse": float(scores["loss"]), "mae": float(scores["mae"])}
    else:
        metrics = {"accuracy": float(scores["accuracy"]), "loss": float(scores["loss"])}
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    export_module = export_lib.build_export_module(
        module.INPUT, model, dataset, getattr(config, "vocab_size", 0)
    )
    extra_plots = []
    if module.TASK == "regression":
        prediction = model.predict(x_test, verbose=0).reshape(-1)

        def forecast_plot(path: Path) -> None:
            plots.plot_forecast(
                dataset.y_test, prediction, path / "forecast.png", f"{module.NAME} held-out month"
            )

        extra_plots.append(forecast_plot)
    return model, dataset, history, metrics, export_module, model.count_params(), extra_plots


def _train_translator(module, variant, options, epochs, batch_size):
    config = module.Config()
    dataset = _load_with_fallback(
        lambda synthetic: module.load_pairs(
            synthetic=synthetic,
            data_path=options.data_path,
            quick=options.quick,
            seed=options.seed,
            config=config,
        ),
        options,
    )
    model = module.build_model(variant, config, dataset)
    fit = module.fit(
        model,
        dataset,
        epochs=epochs,
        batch_size=batch_size,
        seed=options.seed,
        verbose=2 if options.quick else "auto",
    )
    metrics = {k: float(v) for k, v in module.evaluate(model, dataset).items()}
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    export_module = module.make_export_module(model, dataset)
    return model, dataset, history, metrics, export_module, model.count_params(), []
