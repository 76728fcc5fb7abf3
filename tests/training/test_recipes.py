"""Training recipes: what a full run compiles and fits with, early stopping, reproducibility.

The recipe checks stop ``model.fit`` before the first step, so they train nothing. The data
is synthetic throughout: these tests check the mechanics, not real-data accuracy.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from training import recipes
from training.pipeline import TrainOptions, UsageError, resolve_recipe, train_model
from training.recipes import fit_with_early_stopping


class _FitCalled(Exception):
    """Raised by the patched ``fit``: the run is inspected, not trained."""


@pytest.fixture
def captured_fit(monkeypatch):
    """Replaces ``keras.Model.fit``; records the model and the arguments of the first call."""
    calls = []

    def fake_fit(self, x=None, y=None, **kwargs):
        calls.append({"model": self, "x": x, **kwargs})
        raise _FitCalled

    monkeypatch.setattr(keras.Model, "fit", fake_fit)
    return calls


# The table (issue 11): (model, variant) -> optimizer, learning rate, epochs,
# batch size, validation split. "—" in the seed's validation column still holds out 10 %.
FULL_RECIPES = [
    ("imdb", "lstm", keras.optimizers.RMSprop, 1e-3, 10, 128, 0.2),
    ("imdb", "simple_rnn", keras.optimizers.RMSprop, 1e-3, 10, 128, 0.2),
    ("imdb", "conv1d", keras.optimizers.RMSprop, 1e-3, 30, 128, 0.2),
    ("reuters", "lstm", keras.optimizers.Adam, 1e-3, 20, 32, 0.2),
    ("reuters", "stacked_lstm_raw", keras.optimizers.Adam, 1e-3, 200, 50, 0.1),
    ("reuters", "lstm_raw", keras.optimizers.Adam, 1e-3, 200, 50, 0.1),
    ("reuters", "stacked_simple_rnn_raw", keras.optimizers.Adam, 1e-3, 200, 50, 0.1),
    ("cifar", "cnn_rnn", keras.optimizers.Adam, 1e-3, 100, 100, 0.1),
    ("mnist", "deep_cnn", keras.optimizers.Adam, 1e-3, 100, 50, 0.2),
    ("cosine", "lstm", keras.optimizers.Adam, 1e-3, 100, 12, 0.1),
]


@pytest.mark.parametrize(
    ("name", "variant", "optimizer", "learning_rate", "epochs", "batch_size", "split"),
    FULL_RECIPES,
)
def test_a_full_run_compiles_and_fits_with_the_seed_recipe(
    captured_fit, tmp_path, name, variant, optimizer, learning_rate, epochs, batch_size, split
):
    options = TrainOptions(variant=variant, synthetic=True, out=tmp_path, register=False)
    with pytest.raises(_FitCalled):
        train_model(name, options)

    (call,) = captured_fit
    compiled = call["model"].optimizer
    assert type(compiled) is optimizer
    assert float(keras.ops.convert_to_numpy(compiled.learning_rate)) == pytest.approx(learning_rate)
    assert (call["epochs"], call["batch_size"], call["validation_split"]) == (
        epochs,
        batch_size,
        split,
    )
    (stopper,) = call["callbacks"]
    assert isinstance(stopper, keras.callbacks.EarlyStopping)
    assert stopper.monitor == "val_loss" and stopper.restore_best_weights
    if variant.endswith("_raw") and name == "reuters":
        # The seed's data setup: (49,) ids from a 30,000-word vocabulary.
        assert call["x"].shape[1] == 49
        assert call["model"].get_layer("scale_ids").scale == pytest.approx(1 / 30_000)


def test_command_line_overrides_replace_the_recipe(captured_fit, tmp_path):
    options = TrainOptions(
        variant="conv1d",
        synthetic=True,
        out=tmp_path,
        register=False,
        epochs=7,
        batch_size=16,
        optimizer="adam",
        learning_rate=0.01,
        patience=1,
        validation_split=0.3,
    )
    with pytest.raises(_FitCalled):
        train_model("imdb", options)
    (call,) = captured_fit
    assert type(call["model"].optimizer) is keras.optimizers.Adam
    assert float(
        keras.ops.convert_to_numpy(call["model"].optimizer.learning_rate)
    ) == pytest.approx(0.01)
    assert (call["epochs"], call["batch_size"], call["validation_split"]) == (7, 16, 0.3)
    assert call["callbacks"][0].patience == 1


def test_quick_keeps_the_short_schedules():
    for name, (epochs, batch_size) in recipes._QUICK_EPOCHS_BATCH.items():
        recipe = resolve_recipe(name, "any", TrainOptions(quick=True))
        assert (recipe.epochs, recipe.batch_size) == (epochs, batch_size)
        assert recipe.epochs <= 30 and recipe.optimizer == "adam"


@pytest.mark.parametrize(
    "overrides", [{"validation_split": 0.0}, {"learning_rate": -1.0}, {"optimizer": "sgd"}]
)
def test_bad_overrides_are_usage_errors(overrides):
    with pytest.raises(UsageError):
        resolve_recipe("imdb", "conv1d", TrainOptions(**overrides))


def test_early_stopping_restores_the_best_epoch():
    """A schedule built to overfit: random labels, a wide layer, a high learning rate."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 32)).astype("float32")
    y = rng.integers(0, 2, 96).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    recipe = recipes.Recipe("adam", 1e-2, 80, 8, 0.25, 3)
    model.compile(optimizer=recipe.make_optimizer(), loss="binary_crossentropy")
    fit = fit_with_early_stopping(
        model,
        lambda callbacks: model.fit(
            x,
            y,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            validation_split=recipe.validation_split,
            callbacks=callbacks,
            verbose=0,
        ),
        recipe,
    )

    val_loss = fit.history["val_loss"]
    assert fit.stopped_epoch == len(val_loss) < recipe.epochs  # stopped early
    assert fit.best_epoch == int(np.argmin(val_loss)) + 1 < fit.stopped_epoch
    assert fit.history["loss"][-1] < fit.history["loss"][fit.best_epoch - 1]  # it overfit
    # The model holds the best epoch's weights, not the last epoch's.
    x_val, y_val = x[72:], y[72:]  # validation_split takes the last 25 %
    restored = model.evaluate(x_val, y_val, verbose=0)
    assert restored == pytest.approx(val_loss[fit.best_epoch - 1], rel=1e-4)
    assert restored < val_loss[-1]


def test_the_same_seed_gives_the_same_metrics(tmp_path):
    def run(out):
        options = TrainOptions(
            synthetic=True, quick=True, epochs=3, out=out, register=False, seed=7
        )
        return train_model("cosine", options)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first.metrics == second.metrics
    assert first.history == second.history


def test_metadata_records_the_best_and_stopped_epoch(tmp_path):
    result = train_model(
        "cosine", TrainOptions(synthetic=True, quick=True, epochs=4, out=tmp_path, register=False)
    )
    training = json.loads((result.export_path / "metadata.json").read_text())["training"]
    assert 1 <= training["best_epoch"] <= training["stopped_epoch"] <= training["epochs"] == 4
    assert training["best_epoch"] == result.best_epoch
    val_loss = result.history["val_loss"]
    assert training["best_epoch"] == int(np.argmin(val_loss)) + 1
    assert training["recipe"]["optimizer"] == "adam"
