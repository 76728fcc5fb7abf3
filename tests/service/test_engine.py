"""The in-process engine: real SavedModels loaded on their own threads, batched calls,
readiness and load failures; worker settings (workers, one GPU card per worker)."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from service.catalog import ModelInfo
from service.config import ServingSettings, cuda_device_for_worker
from service.engine import Engine, State, request_deadline
from service.errors import DeadlineExceeded, ModelNotFound, NotReady

SETTINGS = ServingSettings(buckets=(1, 4, 16), max_items=16, workers=1)


def _info(store, name: str) -> tuple[ModelInfo, str]:
    path = store.export_path(name)
    return ModelInfo.from_path(name, f"{name}:test", path), str(path)


@pytest.fixture(scope="module")
def engine(trained_store):
    engine = Engine({"imdb": _info(trained_store, "imdb")}, SETTINGS)
    assert engine.models["imdb"].state is State.START and not engine.ready
    for future in engine.start():
        future.result(timeout=300)
    return engine


def test_ready_once_every_model_is_warm(engine):
    model = engine.models["imdb"]
    assert engine.ready and model.state is State.AVAILABLE
    assert set(model.warm_up_seconds) == {"serving_default", "predict_text"}


def test_concurrent_requests_share_batches_and_match_the_savedmodel(engine, trained_store):
    import tensorflow as tf

    ids = np.random.default_rng(1).integers(3, 9999, size=(12, 500), dtype=np.int32)
    model = engine.model("imdb")

    async def main():
        return await asyncio.gather(
            *(model.run("serving_default", ids[i : i + 1]) for i in range(12))
        )

    results = asyncio.run(main())
    got = np.concatenate([r["probabilities"] for r in results])
    signature = tf.saved_model.load(model.path).signatures["serving_default"]
    expected = signature(token_ids=tf.constant(ids))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(isinstance(r["label"], np.ndarray) for r in results)  # numpy until encoded


def test_text_signature_runs_through_its_own_queue(engine):
    async def main():
        texts = np.array([b"a wonderful film", b"dull and long"], dtype=object)
        return await engine.model("imdb").run("predict_text", texts)

    out = asyncio.run(main())
    assert out["probabilities"].shape == (2, 2)


def test_unknown_model_version_and_signature(engine):
    with pytest.raises(ModelNotFound, match="not served"):
        engine.model("nope")
    with pytest.raises(ModelNotFound, match="version 99"):
        engine.model("imdb", 99)
    with pytest.raises(ModelNotFound, match="no signature 'nope'"):
        asyncio.run(engine.model("imdb").run("nope", np.zeros((1, 500), np.int32)))


def test_expired_request_deadline_never_runs(engine):
    async def main():
        request_deadline.set(0.0)  # long past
        return await engine.model("imdb").run("serving_default", np.zeros((1, 500), np.int32))

    with pytest.raises(DeadlineExceeded):
        asyncio.run(main())


def test_a_model_that_fails_to_load_is_reported_not_ready(trained_store, tmp_path):
    info, path = _info(trained_store, "cosine")
    broken = tmp_path / "cosine"
    shutil.copytree(path, broken)
    (broken / "saved_model.pb").write_bytes(b"truncated")
    engine = Engine({"cosine": (info, str(broken))}, SETTINGS)
    engine.start()[0].result(timeout=120)
    model = engine.models["cosine"]
    assert model.state is State.END and not engine.ready
    assert model.error
    with pytest.raises(NotReady, match="not available"):
        asyncio.run(model.run("serving_default", np.zeros((1, 10), np.float32)))


@pytest.mark.parametrize(
    ("worker", "gpus", "visible", "card"),
    [
        (1, 0, None, None),  # CPU: nothing assigned
        (1, 2, None, "0"),
        (2, 2, None, "1"),
        (3, 2, None, "0"),  # more workers than cards: round robin
        (2, 2, "3,5", "5"),  # BentoML gave every worker the same list: each takes one
        (1, 1, "", None),  # CUDA_VISIBLE_DEVICES="" hides every card
        (None, 2, None, None),  # not a worker (the arbiter process)
    ],
)
def test_one_gpu_card_per_worker(worker, gpus, visible, card):
    assert cuda_device_for_worker(worker, gpus, visible) == card


def test_workers_setting(monkeypatch):
    import os

    monkeypatch.setenv("SERVICE_WORKERS", "auto")
    assert ServingSettings.from_env().workers == (os.cpu_count() or 1)
    monkeypatch.setenv("SERVICE_GPUS", "3")
    assert ServingSettings.from_env().workers == 3  # one per card
    monkeypatch.setenv("SERVICE_WORKERS", "2")
    assert ServingSettings.from_env().workers == 2
    monkeypatch.setenv("SERVICE_WORKERS", "many")
    with pytest.raises(ValueError, match="SERVICE_WORKERS"):
        ServingSettings.from_env()
