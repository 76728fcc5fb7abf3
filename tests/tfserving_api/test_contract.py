"""The shared names: what docs/contracts.md says, and the one copy everybody uses."""

from __future__ import annotations

import pytest

from tfserving_api import contract


def test_signature_names_are_the_exported_ones() -> None:
    assert contract.TENSOR_SIGNATURE == "serving_default"
    assert dict(contract.USER_SIGNATURES) == {
        "predict_text": "text",
        "predict_images": "image",
        "forecast": "window",
        "translate": "sentences",
    }
    assert contract.FORECAST_STEPS_SIGNATURE == "forecast_steps"
    assert contract.FORECAST_STEPS_SIGNATURE not in contract.USER_SIGNATURES  # not served yet


def test_user_signatures_cannot_be_changed_by_an_importer() -> None:
    with pytest.raises(TypeError):
        contract.USER_SIGNATURES["predict_audio"] = "audio"  # type: ignore[index]


def test_sentiment_labels_follow_imdb_output_order() -> None:
    assert contract.SENTIMENT_LABELS == ("negative", "positive")


def test_every_copy_is_the_contract_itself() -> None:
    from clients import _rest, _tfs, types
    from loadtest import checks
    from service import catalog, endpoints, grpc_codec, tfserving_rest
    from tfserving_api.tensors import DT_NAMES

    assert catalog.USER_SIGNATURES is contract.USER_SIGNATURES
    assert catalog.TENSOR_SIGNATURE is _rest.DEFAULT_SIGNATURE is contract.TENSOR_SIGNATURE
    assert endpoints.SENTIMENT_LABELS is types.SENTIMENT_LABELS is checks.SENTIMENT_LABELS
    assert types.SENTIMENT_LABELS is contract.SENTIMENT_LABELS
    assert grpc_codec.LABELS_FIELD is _tfs.LABELS_FIELD is contract.LABELS_FIELD
    assert tfserving_rest._DT is DT_NAMES
