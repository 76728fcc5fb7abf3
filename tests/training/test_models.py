"""Model modules: the registry interface, parameter counts, I/O conventions, cuDNN eligibility.

Builds every variant of every model (no training), so the whole file runs in seconds.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

import keras
import numpy as np
import pytest

from training.models import MODEL_NAMES, get_model_module
from training.models.layers import cudnn_ineligible_reasons, recurrent_layers

# translator has its own, richer interface.
SIMPLE_MODELS = tuple(name for name in MODEL_NAMES if name != "translator")
CASES = [(name, variant) for name in SIMPLE_MODELS for variant in get_model_module(name).VARIANTS]
RAW_TEXT_VARIANTS = {
    ("reuters", "lstm_raw"),
    ("reuters", "stacked_lstm_raw"),
    ("reuters", "stacked_simple_rnn_raw"),
    ("imdb", "stacked_lstm_raw"),
    ("imdb", "stacked_gru_raw"),
}
# Keras' own count is the reference where the seed publishes none; pinned so that a
# silent layout change (e.g. GRU reset_after=False) shows up. Per GRU(reset_after=True):
# 3 * (units * (inputs + units) + 2 * units).
KERAS_PARAMS = {
    ("imdb", "stacked_gru_raw"): 3 * (50 * (1 + 50) + 2 * 50) + 3 * (1 * (50 + 1) + 2 * 1),
    ("cosine", "gru"): 3 * (30 * (1 + 30) + 2 * 30) + 3 * (30 * (30 + 30) + 2 * 30) + 31,
}


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str], keras.Model]:
    return {(name, variant): get_model_module(name).build_model(variant) for name, variant in CASES}


def _expected_input(module: ModuleType, variant: str) -> tuple[str, tuple[int | None, ...]]:
    config = module.Config()
    if module.INPUT == "text":
        raw = (module.NAME, variant) in RAW_TEXT_VARIANTS
        return "int32", (None, config.raw_maxlen if raw else config.maxlen)
    if module.INPUT == "image":
        return "float32", (None, *config.image_shape)
    assert module.INPUT == "window"
    return "float32", (None, config.window)


def _output_width(module: ModuleType) -> int:
    return module.Config().num_classes if module.TASK == "multiclass" else 1


def _example_batch(module: ModuleType, shape: tuple[int | None, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if module.INPUT == "text":
        ids = rng.integers(1, module.Config().vocab_size, size=(2, shape[1]), dtype=np.int32)
        ids[1, shape[1] // 2 :] = 0  # right padding, as training.data produces it
        return ids
    if module.INPUT == "image":
        return rng.random((2, *shape[1:]), dtype=np.float32)
    return np.cos(np.linspace(0.0, 3.0, 2 * shape[1], dtype=np.float32)).reshape(2, shape[1])


@pytest.mark.parametrize("name", SIMPLE_MODELS)
def test_module_exposes_the_registry_interface(name: str) -> None:
    module = get_model_module(name)
    assert module.NAME == name
    assert module.TASK in {"binary", "multiclass", "regression"}
    assert module.INPUT in {"text", "image", "window"}
    assert dataclasses.is_dataclass(module.Config)
    assert module.Config.__dataclass_params__.frozen
    assert module.DEFAULT_VARIANT in module.VARIANTS
    assert set(module.PUBLISHED_PARAMS) == set(module.VARIANTS)


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_param_count_matches_the_seed(
    built: dict[tuple[str, str], keras.Model], name: str, variant: str
) -> None:
    published = get_model_module(name).PUBLISHED_PARAMS[variant]
    count = built[name, variant].count_params()
    if published is None:
        assert count == KERAS_PARAMS[name, variant]
        assert get_model_module(name).build_model(variant).count_params() == count
    else:
        assert count == published


@pytest.mark.parametrize(
    ("name", "variant", "layers", "params"),
    [
        # The seed's layer stacks and model.summary() totals, layer by layer.
        ("reuters", "stacked_simple_rnn_raw", ["SimpleRNN", "SimpleRNN", "Dense"], 9_996),
        ("reuters", "lstm_raw", ["LSTM", "Dense"], 12_746),
        ("imdb", "stacked_simple_rnn", ["Embedding"] + ["SimpleRNN"] * 4 + ["Dense"], 328_353),
    ],
)
def test_new_seed_variants_have_the_seed_layers_and_params(
    built: dict[tuple[str, str], keras.Model], name: str, variant: str, layers, params: int
) -> None:
    model = built[name, variant]
    weighted = [layer for layer in model.layers if layer.count_params()]
    assert [type(layer).__name__ for layer in weighted] == layers
    assert model.count_params() == params
    if variant == "lstm_raw" or variant.endswith("simple_rnn_raw"):
        assert tuple(model.inputs[0].shape) == (None, 49)


def test_imdb_stacked_simple_rnn_without_its_head_matches_the_seed_summary(
    built: dict[tuple[str, str], keras.Model],
) -> None:
    model = built["imdb", "stacked_simple_rnn"]
    head = model.get_layer("probabilities")
    assert model.count_params() - head.count_params() == 328_320


def test_published_results_cover_every_variant() -> None:
    for name in SIMPLE_MODELS:
        module = get_model_module(name)
        assert set(module.PUBLISHED_RESULTS) == set(module.VARIANTS), name
    imdb = get_model_module("imdb")
    # No real-data measurement of our own: the best published figure picks the default.
    published = {v: r for v, r in imdb.PUBLISHED_RESULTS.items() if r is not None}
    assert imdb.DEFAULT_VARIANT == max(published, key=published.get) == "conv1d"


@pytest.mark.parametrize("name", SIMPLE_MODELS)
def test_default_variant_is_built_without_arguments(name: str) -> None:
    module = get_model_module(name)
    model = module.build_model()
    assert model.count_params() == module.build_model(module.DEFAULT_VARIANT).count_params()


@pytest.mark.parametrize("name", SIMPLE_MODELS)
def test_unknown_variant_is_rejected_with_the_valid_names(name: str) -> None:
    module = get_model_module(name)
    with pytest.raises(ValueError, match="no_such_variant") as error:
        module.build_model("no_such_variant", module.Config())
    for variant in module.VARIANTS:
        assert variant in str(error.value)


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_single_input_and_output_follow_the_conventions(
    built: dict[tuple[str, str], keras.Model], name: str, variant: str
) -> None:
    module, model = get_model_module(name), built[name, variant]
    dtype, shape = _expected_input(module, variant)
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    assert model.inputs[0].dtype == dtype
    assert tuple(model.inputs[0].shape) == shape
    assert tuple(model.outputs[0].shape) == (None, _output_width(module))


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_forward_pass_is_finite_and_classifiers_return_probabilities(
    built: dict[tuple[str, str], keras.Model], name: str, variant: str
) -> None:
    module, model = get_model_module(name), built[name, variant]
    batch = _example_batch(module, _expected_input(module, variant)[1])

    output = keras.ops.convert_to_numpy(model(batch, training=False))

    assert output.shape == (2, _output_width(module))
    assert np.all(np.isfinite(output))
    if module.TASK == "multiclass":
        assert np.all(output >= 0)
        np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
    elif module.TASK == "binary":
        assert np.all((output >= 0) & (output <= 1))


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_embeddings_mask_padding_unless_a_conv_follows(
    built: dict[tuple[str, str], keras.Model], name: str, variant: str
) -> None:
    model = built[name, variant]
    embeddings = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    has_conv = any(isinstance(layer, keras.layers.Conv1D) for layer in model.layers)
    for embedding in embeddings:
        # Conv1D cannot carry a mask: Keras would drop it with a warning.
        assert embedding.mask_zero is not has_conv


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_every_recurrent_layer_is_cudnn_eligible(
    built: dict[tuple[str, str], keras.Model], name: str, variant: str
) -> None:
    for layer in recurrent_layers(built[name, variant]):
        assert cudnn_ineligible_reasons(layer) == []


def test_recurrent_layers_are_found() -> None:
    model = get_model_module("cosine").build_model("lstm")
    assert [type(layer) for layer in recurrent_layers(model)] == [keras.layers.LSTM] * 2


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (keras.layers.LSTM(4, recurrent_dropout=0.1), "recurrent_dropout is 0.1"),
        (keras.layers.LSTM(4, activation="relu"), "activation is relu"),
        (keras.layers.LSTM(4, recurrent_activation="hard_sigmoid"), "recurrent_activation"),
        (keras.layers.LSTM(4, unroll=True), "unroll is True"),
        (keras.layers.LSTM(4, use_bias=False), "use_bias is False"),
        (keras.layers.LSTM(4, use_cudnn=False), "use_cudnn is False"),
        (keras.layers.GRU(4, reset_after=False), "reset_after is False"),
        (keras.layers.Bidirectional(keras.layers.GRU(4, unroll=True)), "backward: "),
    ],
)
def test_cudnn_check_names_the_violation(layer: keras.layers.Layer, reason: str) -> None:
    reasons = cudnn_ineligible_reasons(layer)
    assert any(reason in r for r in reasons), reasons


@pytest.mark.parametrize(
    "layer",
    [
        keras.layers.LSTM(4),
        keras.layers.GRU(4),
        keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
        keras.layers.LSTM(4, dropout=0.2),  # input dropout is applied outside the kernel
    ],
)
def test_cudnn_check_accepts_eligible_layers(layer: keras.layers.Layer) -> None:
    assert cudnn_ineligible_reasons(layer) == []


def test_cudnn_check_rejects_layers_without_a_cudnn_kernel() -> None:
    with pytest.raises(TypeError, match="SimpleRNN"):
        cudnn_ineligible_reasons(keras.layers.SimpleRNN(4))
