"""The predictor pads every call to a warmed-up bucket and answers like the SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

from service.catalog import ModelInfo
from service.predictor import Predictor, bucket_for, dummy_input

BUCKETS = (1, 4, 16)


def test_bucket_for():
    assert [bucket_for(n, BUCKETS) for n in (1, 2, 4, 5, 16)] == [1, 4, 4, 16, 16]
    with pytest.raises(ValueError, match="exceeds the largest bucket 16"):
        bucket_for(17, BUCKETS)


@pytest.fixture(scope="module")
def imdb(trained_store):
    path = trained_store.export_path("imdb")
    predictor = Predictor(str(path), ModelInfo.from_path("imdb", "imdb:test", path), BUCKETS)
    predictor.warm_up()
    return predictor


def test_calls_only_see_bucket_shapes_and_match_the_savedmodel(imdb):
    import tensorflow as tf

    seen: list[int] = []
    call = imdb._calls["serving_default"]

    def recording(x):
        seen.append(int(x.shape[0]))
        return call(x)

    imdb._calls["serving_default"] = recording
    try:
        ids = np.random.default_rng(0).integers(0, 9999, size=(37, 500), dtype=np.int32)
        for rows in (1, 3, 5, 16, 37):  # 37 rows: chunks of the largest bucket, then padding
            out = imdb.run("serving_default", ids[:rows])
            assert out["probabilities"].shape == (rows, 2) and out["label"].shape == (rows,)
    finally:
        imdb._calls["serving_default"] = call
    assert set(seen) <= set(BUCKETS), seen

    signature = tf.saved_model.load(imdb.path).signatures["serving_default"]
    expected = signature(token_ids=tf.constant(ids[:5]))["probabilities"].numpy()
    assert np.allclose(imdb.run("serving_default", ids[:5])["probabilities"], expected, atol=1e-5)
    assert "serving_default" in imdb.xla_signatures


def test_dummy_inputs_follow_the_signature(imdb):
    assert dummy_input(imdb.info.signature("serving_default"), 4).shape == (4, 500)
    text = dummy_input(imdb.info.signature("predict_text"), 2)
    assert text.dtype == object and len(text) == 2
    assert imdb.run("predict_text", text)["probabilities"].shape == (2, 2)
