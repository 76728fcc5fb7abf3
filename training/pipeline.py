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

import numpy as np

from training import data as data_lib
from training import export as export_lib
from training import plots
from training import recipes as recipes_lib
from training.models import get_model_module
from training.recipes import fit_with_early_stopping, seed_everything

log = logging.getLogger(__name__)

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
    # None: the recipe's (training.recipes: the seed's for a full run, short for --quick).
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None  # "adam" or "rmsprop"
    learning_rate: float | None = None
    patience: int | None = None
    validation_split: float | None = None
    quick: bool = False  # small data and few epochs: for make serve, demos and tests
    synthetic: bool = False
    data_path: Path | None = None
    word_index: Path | None = None  # text: the word_index JSON; None: next to data_path
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
    best_epoch: int = 0  # 1-based epoch whose weights were exported
    stopped_epoch: int = 0  # 1-based last epoch run (the budget unless early stopping ended it)
    recipe: recipes_lib.Recipe | None = None
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
    seed_everything(options.seed)
    recipe = resolve_recipe(name, variant, options)
    started = time.perf_counter()

    if name == "translator":
        trained = _train_translator(module, variant, options, recipe)
    else:
        trained = _train_keras(module, variant, options, recipe)
    model, dataset, fit, metrics, export_module, params, extra_plots, config = trained
    history = fit.history

    names = export_lib.SIGNATURES[module.INPUT]
    model_dir = Path(options.out) / name
    # Versions are numbered per model across the exports folder and the store, so that a
    # new one is always the latest the service sees, whichever --out it was written to.
    minimum = 1
    if options.register:
        from training.registry import latest_version

        minimum = latest_version(name) + 1
    path = export_lib.save_export(export_module, model_dir, names, minimum)
    version = int(path.name)
    seconds = time.perf_counter() - started

    plots.plot_learning_curves(
        history, path / "learning_curves.png", f"{name} / {variant}", best_epoch=fit.best_epoch
    )
    for plot in extra_plots:
        plot(path)

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
        # Forecasters only: steps of the forecast_steps signature's output.
        **({"max_horizon": export_module.max_horizon} if module.INPUT == "window" else {}),
        "training": {
            "epochs": recipe.epochs,  # the budget; stopped_epoch is how many ran
            "batch_size": recipe.batch_size,
            "seed": options.seed,
            "quick": options.quick,
            "seconds": round(seconds, 1),
            "best_epoch": fit.best_epoch,
            "stopped_epoch": fit.stopped_epoch,
            "recipe": recipe.as_metadata(),
            "config": config,
        },
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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
        best_epoch=fit.best_epoch,
        stopped_epoch=fit.stopped_epoch,
        recipe=recipe,
        keras_model=model,
        dataset=dataset,
    )


def resolve_recipe(name: str, variant: str, options: TrainOptions) -> recipes_lib.Recipe:
    """The recipe of this run: the model's (full or quick) with the options' overrides.

    Raises:
        UsageError: an unknown optimizer or an out-of-range value.
    """
    try:
        recipe = recipes_lib.with_overrides(
            recipes_lib.recipe_for(name, variant, options.quick),
            epochs=options.epochs,
            batch_size=options.batch_size,
            optimizer=options.optimizer,
            learning_rate=options.learning_rate,
            patience=options.patience,
            validation_split=options.validation_split,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not 0.0 < recipe.validation_split < 1.0:
        raise UsageError(f"validation split must be in (0, 1), got {recipe.validation_split}")
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.patience < 0:
        raise UsageError("epochs and batch size must be >= 1, patience >= 0")
    if recipe.learning_rate <= 0:
        raise UsageError(f"learning rate must be > 0, got {recipe.learning_rate}")
    return recipe


def _train_keras(module, variant, options, recipe):
    config = module.Config()
    model = module.build_model(variant, config)
    # Variant-specific data (e.g. reuters' raw variants: the seed's num_words and filter).
    setup = module.data_setup(variant, config) if hasattr(module, "data_setup") else {}
    load_kwargs: dict[str, Any] = {
        "data_path": options.data_path,
        "quick": options.quick,
        "seed": options.seed,
    }
    vocab_size = setup.pop("vocab_size", getattr(config, "vocab_size", 0))
    if module.INPUT == "text":
        load_kwargs.update(
            vocab_size=vocab_size,
            maxlen=int(model.inputs[0].shape[1]),
            word_index_path=options.word_index,
            **setup,
        )
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
    model.compile(optimizer=recipe.make_optimizer(), loss=loss, metrics=metric_names)
    fit = fit_with_early_stopping(
        model,
        lambda callbacks: model.fit(
            x_train,
            dataset.y_train,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            validation_split=recipe.validation_split,
            shuffle=True,
            callbacks=callbacks,
            verbose=2 if options.quick else 1,
        ),
        recipe,
    )
    scores = model.evaluate(x_test, dataset.y_test, batch_size=256, verbose=0, return_dict=True)
    if module.TASK == "regression":
        metrics = {"mse": float(scores["loss"]), "mae": float(scores["mae"])}
    else:
        metrics = {"accuracy": float(scores["accuracy"]), "loss": float(scores["loss"])}
    export_module = export_lib.build_export_module(module.INPUT, model, dataset, vocab_size)
    extra_plots = []
    if module.TASK == "regression":
        prediction = model.predict(x_test, verbose=0).reshape(-1)

        def forecast_plot(path: Path) -> None:
            plots.plot_forecast(
                dataset.y_test, prediction, path / "forecast.png", f"{module.NAME} held-out month"
            )

        extra_plots.append(forecast_plot)
    metadata_config = dataclasses.asdict(config)
    if module.INPUT == "text":
        # What the exported signature accepts: the service range-checks token ids with it.
        metadata_config["vocab_size"] = vocab_size
    return (
        model,
        dataset,
        fit,
        metrics,
        export_module,
        model.count_params(),
        extra_plots,
        metadata_config,
    )


def _train_translator(module, variant, options, recipe):
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
    fit = fit_with_early_stopping(
        model,
        lambda callbacks: module.fit(
            model,
            dataset,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            seed=options.seed,
            learning_rate=recipe.learning_rate,
            verbose=2 if options.quick else "auto",
            callbacks=callbacks,
        ),
        recipe,
    )
    metrics = {k: float(v) for k, v in module.evaluate(model, dataset).items()}
    export_module = module.make_export_module(model, dataset)
    return (
        model,
        dataset,
        fit,
        metrics,
        export_module,
        model.count_params(),
        [],
        dataclasses.asdict(config),
    )
