"""End-to-end training on SYNTHETIC data: every model learns, exports, and round-trips.

The data here is synthetic (learnable by construction), so these accuracies say the
pipeline works, not how good the models are on the real datasets.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tensorflow as tf

from training import data as data_lib
from training.models import MODEL_NAMES
from training.models.cosine import MAX_HORIZON
from training.pipeline import TrainOptions, UsageError, train_model

# What "beats chance by a clear margin" means on each model's synthetic data.
CHANCE_MARGINS = {
    "reuters": ("accuracy", 0.5),  # 46 classes: chance ~0.02
    "imdb": ("accuracy", 0.75),  # chance 0.5
    "cifar": ("accuracy", 0.4),  # chance 0.1
    "mnist": ("accuracy", 0.5),  # chance 0.1
    "translator": ("bleu", 10.0),  # chance ~0
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every model's default variant, trained once on synthetic data (quick profile)."""
    out = tmp_path_factory.mktemp("exports")
    options = TrainOptions(synthetic=True, quick=True, out=out, register=False)
    return {name: train_model(name, options) for name in MODEL_NAMES}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_lowers_loss(trained, name):
    loss = trained[name].history["loss"]
    assert loss[-1] < loss[0], f"{name}: loss went {loss[0]:.4f} -> {loss[-1]:.4f}"


@pytest.mark.parametrize("name", sorted(CHANCE_MARGINS))
def test_beats_chance(trained, name):
    metric, floor = CHANCE_MARGINS[name]
    value = trained[name].metrics[metric]
    assert value > floor, f"{name}: {metric}={value:.3f}, expected > {floor}"


def test_forecaster_beats_predicting_the_mean(trained):
    result = trained["cosine"]
    baseline = float(np.var(result.dataset.y_test))
    assert result.metrics["mse"] < 0.5 * baseline, (result.metrics, baseline)


def _model_inputs(result, n=5):
    x = result.dataset.x_test[:n]
    if x.dtype == np.uint8:
        x = x.astype("float32") / 255.0
        x = x[..., None] if x.ndim == 3 else x
    return x


@pytest.mark.parametrize("name", ["reuters", "imdb", "cifar", "cosine", "mnist"])
def test_savedmodel_reproduces_keras_outputs(trained, name):
    result = trained[name]
    loaded = tf.saved_model.load(str(result.export_path))
    x = _model_inputs(result)
    expected = result.keras_model.predict(x, verbose=0)
    spec_name = next(iter(loaded.signatures["serving_default"].structured_input_signature[1]))
    dtype = loaded.signatures["serving_default"].structured_input_signature[1][spec_name].dtype
    got = loaded.signatures["serving_default"](**{spec_name: tf.constant(x, dtype)})
    if name == "cosine":
        np.testing.assert_allclose(got["forecast"].numpy(), expected.reshape(-1), atol=1e-5)
    else:
        probs = got["probabilities"].numpy()
        if expected.shape[-1] == 1:
            probs = probs[:, 1:]
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        np.testing.assert_array_equal(got["label"].numpy(), np.argmax(got["probabilities"], -1))


@pytest.mark.parametrize("name", ["reuters", "imdb"])
def test_text_signature_equals_id_signature(trained, name):
    result = trained[name]
    loaded = tf.saved_model.load(str(result.export_path))
    words = list(result.dataset.word_index)[:50]
    texts = [
        " ".join(words[:12]),
        "An UNKNOWN-word review<br />with markup, punctuation!",
        " ".join(words[10:40]) + " zzzunknownzzz",
        "",
    ]
    maxlen = loaded.signatures["serving_default"].structured_input_signature[1]["token_ids"].shape[1]
    ids = data_lib.encode_texts(texts, result.dataset.word_index, 10000, maxlen)
    by_ids = loaded.signatures["serving_default"](token_ids=tf.constant(ids, tf.int32))
    by_text = loaded.signatures["predict_text"](text=tf.constant(texts))
    np.testing.assert_allclose(by_text["probabilities"], by_ids["probabilities"], atol=1e-6)


def test_image_signature_accepts_uint8(trained):
    result = trained["cifar"]
    loaded = tf.saved_model.load(str(result.export_path))
    images = result.dataset.x_test[:3]
    by_uint8 = loaded.signatures["predict_images"](images=tf.constant(images, tf.uint8))
    by_float = loaded.signatures["serving_default"](pixels=tf.constant(images / 255.0, tf.float32))
    np.testing.assert_allclose(by_uint8["probabilities"], by_float["probabilities"], atol=1e-6)


def test_forecast_steps_equals_recursive_one_step_calls(trained):
    """The in-graph 100-step forecast is the service's loop of one-step calls, in one call."""
    result = trained["cosine"]
    loaded = tf.saved_model.load(str(result.export_path))
    windows = result.dataset.x_test[:5]

    steps = loaded.signatures["forecast_steps"](window=tf.constant(windows))["forecast"].numpy()

    one_step = loaded.signatures["forecast"]
    window, expected = windows, []
    for _ in range(MAX_HORIZON):
        prediction = one_step(window=tf.constant(window))["forecast"].numpy()
        expected.append(prediction)
        window = np.concatenate([window[:, 1:], prediction[:, None]], axis=1)
    assert steps.shape == (5, MAX_HORIZON) == (5, 100)
    np.testing.assert_allclose(steps, np.stack(expected, axis=1), rtol=1e-4, atol=1e-4)
    metadata = json.loads((result.export_path / "metadata.json").read_text())
    assert metadata["max_horizon"] == MAX_HORIZON
    assert metadata["signatures"]["forecast_steps"] == {
        "inputs": {"window": {"dtype": "float32", "shape": [None, 10]}},
        "outputs": {"forecast": {"dtype": "float32", "shape": [None, MAX_HORIZON]}},
    }

    # Cost, reported rather than asserted (timings are machine-dependent).
    def best_of(call, repeat=5):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times)

    batch = tf.constant(windows[:1])
    loop_s = best_of(lambda: [one_step(window=batch) for _ in range(MAX_HORIZON)], repeat=2)
    steps_s = best_of(lambda: loaded.signatures["forecast_steps"](window=batch))
    single_s = best_of(lambda: loaded.signatures["serving_default"](window=batch))
    print(
        f"\ncosine, batch 1: forecast_steps {steps_s * 1e3:.2f} ms; one serving_default call "
        f"{single_s * 1e3:.2f} ms; {MAX_HORIZON} one-step forecast calls {loop_s * 1e3:.1f} ms"
    )


def test_translator_translates_in_one_call(trained):
    result = trained["translator"]
    loaded = tf.saved_model.load(str(result.export_path))
    sentences = [src for src, _ in result.dataset.test_pairs[:4]]
    out = loaded.signatures["translate"](sentences=tf.constant(sentences))["translation"]
    assert out.shape == (4,)
    assert all(isinstance(t, bytes) for t in out.numpy())
    assert any(t.strip() for t in out.numpy())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_metadata_is_complete(trained, name):
    result = trained[name]
    metadata = json.loads((result.export_path / "metadata.json").read_text())
    for key in (
        "model", "variant", "version", "params", "dataset", "metrics", "labels",
        "signatures", "training", "created_at", "git_revision", "export_path",
    ):
        assert key in metadata, key
    assert metadata["model"] == name
    assert metadata["dataset"]["synthetic"] is True
    assert metadata["version"] == result.version
    assert "serving_default" in metadata["signatures"]
    assert metadata["params"] == result.keras_model.count_params()
    training = metadata["training"]
    assert 1 <= training["best_epoch"] <= training["stopped_epoch"] <= training["epochs"]
    assert (result.export_path / "learning_curves.png").stat().st_size > 1000
    if name == "cosine":
        assert (result.export_path / "forecast.png").stat().st_size > 1000


def test_translator_metadata_records_the_real_vocabulary(trained):
    result = trained["translator"]
    config = json.loads((result.export_path / "metadata.json").read_text())["training"]["config"]
    assert config["source_vocab_size"] == len(result.dataset.source_vocab)
    assert config["target_vocab_size"] == len(result.dataset.target_vocab)


def test_export_versions_increase(trained):
    result = trained["cosine"]
    again = train_model(
        "cosine",
        TrainOptions(synthetic=True, quick=True, epochs=1, out=result.export_path.parents[1],
                     register=False),
    )
    assert again.version == result.version + 1
    assert sorted(int(p.name) for p in again.export_path.parent.iterdir()) == [1, 2]


def test_unknown_variant_is_a_usage_error():
    with pytest.raises(UsageError, match="valid:"):
        train_model("imdb", TrainOptions(variant="transformer", register=False))
