"""The in-process engine: real SavedModels loaded on their own threads, batched calls,
readiness and load failures, versions side by side, labels and hot reload; worker settings (workers, one GPU card per worker)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from service.catalog import ModelInfo, StoredVersion
from service.config import ServingSettings, cuda_device_for_worker
from service.engine import Engine
from service.errors import DeadlineExceeded, InvalidInput, ModelNotFound, NotReady
from service.served_model import State, request_deadline
from service.versions import ConfigError, parse_config

SETTINGS = ServingSettings(buckets=(1, 4, 16), max_items=16, workers=1, poll_s=0)
# The version, label and reload tests load cosine over and over, one row at a time: one
# bucket keeps each load's XLA warm-up short (the buckets are the predictor's tests).
VERSIONS = replace(SETTINGS, buckets=(1,))


def _sample(name: str, **labels: str) -> float:
    """A Prometheus sample of this process (0 before the series exists)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _stored(store, name: str, version: int | None = None, path=None) -> StoredVersion:
    path = path or store.export_path(name)
    info = ModelInfo.from_path(name, f"{name}:test", path)
    if version is not None:
        info = replace(info, version=version)
    return StoredVersion(info, str(path))


@pytest.fixture(scope="module")
def run() -> Iterator[Callable[..., t.Any]]:
    """Runs coroutines on one event loop that lives in a thread (the engine keeps its loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def runner(coroutine, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    yield runner
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


async def _started(engine: Engine) -> Engine:
    engine.start()
    while not engine.settled():
        await asyncio.sleep(0.05)
    return engine


async def _until(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def engine(trained_store, run):
    stored = {"imdb": {1: _stored(trained_store, "imdb", 1)}}
    engine = Engine(SETTINGS, lambda: stored, ["imdb"])
    assert not engine.ready
    return run(_started(engine))


def test_ready_once_every_model_is_warm(engine):
    model = engine.model("imdb")
    assert engine.ready and model.state is State.AVAILABLE
    assert set(model.warm_up_seconds) == {"serving_default", "predict_text"}


def test_concurrent_requests_share_batches_and_match_the_savedmodel(engine, trained_store, run):
    import tensorflow as tf

    ids = np.random.default_rng(1).integers(3, 9999, size=(12, 500), dtype=np.int32)
    model = engine.model("imdb")
    series = {"model": "imdb", "signature": "serving_default"}
    calls = _sample("keras_serving_batch_size_count", **series)
    rows = _sample("keras_serving_batch_size_sum", **series)

    async def main():
        return await asyncio.gather(
            *(model.run("serving_default", ids[i : i + 1]) for i in range(12))
        )

    results = run(main())
    got = np.concatenate([r["probabilities"] for r in results])
    signature = tf.saved_model.load(model.path).signatures["serving_default"]
    expected = signature(token_ids=tf.constant(ids))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(isinstance(r["label"], np.ndarray) for r in results)  # numpy until encoded
    # Twelve requests of one row each, all queued before the model was free: fewer calls.
    assert _sample("keras_serving_batch_size_sum", **series) - rows == 12
    assert _sample("keras_serving_batch_size_count", **series) - calls < 12


def test_text_signature_runs_through_its_own_queue(engine, run):
    texts = np.array([b"a wonderful film", b"dull and long"], dtype=object)
    out = run(engine.model("imdb").run("predict_text", texts))
    assert out["probabilities"].shape == (2, 2)


def test_unknown_model_version_label_and_signature(engine, run):
    with pytest.raises(ModelNotFound, match="not served"):
        engine.model("nope")
    with pytest.raises(ModelNotFound, match="version: model 'imdb' has no version 99"):
        engine.model("imdb", 99)
    with pytest.raises(ModelNotFound, match="label: model 'imdb' has no version label 'x'"):
        engine.model("imdb", label="x")
    with pytest.raises(InvalidInput, match="not both"):
        engine.model("imdb", 1, "stable")
    with pytest.raises(ModelNotFound, match="no signature 'nope'"):
        run(engine.model("imdb").run("nope", np.zeros((1, 500), np.int32)))


def test_expired_request_deadline_never_runs(engine, run):
    async def main():
        request_deadline.set(0.0)  # long past
        return await engine.model("imdb").run("serving_default", np.zeros((1, 500), np.int32))

    with pytest.raises(DeadlineExceeded):
        run(main())


def _broken_copy(store, name: str, tmp_path) -> str:
    broken = tmp_path / f"{name}-broken"
    shutil.copytree(store.export_path(name), broken)
    (broken / "saved_model.pb").write_bytes(b"truncated")
    return str(broken)


def test_a_model_that_fails_to_load_is_reported_not_ready(trained_store, tmp_path, run):
    stored = {
        "cosine": {
            1: _stored(
                trained_store, "cosine", path=_broken_copy(trained_store, "cosine", tmp_path)
            )
        }
    }
    engine = run(_started(Engine(VERSIONS, lambda: stored, ["cosine"])))
    [(_, state, error)] = engine.models["cosine"].status()
    assert state == "END" and error and not engine.ready
    # What clients see (status, 503 bodies): one line, the error class, no path of ours.
    assert "\n" not in error and str(tmp_path) not in error and "/" not in error, error
    assert error.split(":")[0].isidentifier() and len(error) <= 300, error
    with pytest.raises(NotReady, match="not available") as caught:
        engine.model("cosine")
    assert str(tmp_path) not in caught.value.message


def test_a_new_version_replaces_the_old_once_warm_and_the_old_unloads(trained_store, run):
    stored = {"cosine": {1: _stored(trained_store, "cosine", 1)}}
    engine = run(_started(Engine(VERSIONS, lambda: stored, ["cosine"])))
    old = engine.model("cosine")
    assert old.info.version == 1
    stored["cosine"][2] = _stored(trained_store, "cosine", 2)

    async def roll() -> list[int]:
        await engine.poll()
        answered = []
        window = np.zeros((1, 10), np.float32)
        while engine.models["cosine"].versions.get(1) is not None:  # until v1 is unloaded
            model = engine.model("cosine")
            await model.run("serving_default", window)  # never fails during the switch
            answered.append(model.info.version)
            await asyncio.sleep(0.01)
        return answered

    answered = run(roll())
    assert answered[-1] == 2 and sorted(answered) == answered  # 1...1, 2...2: switched once
    assert old.state is State.END
    assert [row[:2] for row in engine.models["cosine"].status()] == [(2, "AVAILABLE")]


def test_a_broken_new_version_never_replaces_a_working_one(trained_store, tmp_path, run):
    stored = {"cosine": {1: _stored(trained_store, "cosine", 1)}}
    engine = run(_started(Engine(VERSIONS, lambda: stored, ["cosine"])))
    broken = _broken_copy(trained_store, "cosine", tmp_path)
    stored["cosine"][2] = _stored(trained_store, "cosine", 2, path=broken)
    run(engine.poll())
    run(_until(engine.settled))
    assert engine.model("cosine").info.version == 1
    status = engine.models["cosine"].status()
    assert [row[:2] for row in status] == [(1, "AVAILABLE"), (2, "END")]
    # Clients see the error class and reason; the path stays in the log (issue 15 item 5).
    assert status[1][2].startswith("OSError: Cannot parse file b'<path>'")
    assert "Wire format was corrupt" in status[1][2] and broken not in status[1][2]
    with pytest.raises(NotReady, match="version 2 of model 'cosine' is END"):
        engine.model("cosine", 2)


def test_all_versions_with_labels_and_a_reload_moving_a_label(trained_store, run):
    stored = {"cosine": {v: _stored(trained_store, "cosine", v) for v in (1, 2)}}
    config = parse_config(
        {"models": {"cosine": {"versions": "all", "labels": {"stable": 1, "canary": 2}}}}
    )
    engine = run(_started(Engine(VERSIONS, lambda: stored, ["cosine"], config)))
    assert engine.model("cosine").info.version == 2  # the default is the latest
    assert engine.model("cosine", 1).info.version == 1
    assert engine.model("cosine", label="stable").info.version == 1
    assert engine.model("cosine", label="canary").info.version == 2
    moved = parse_config({"models": {"cosine": {"versions": "all", "labels": {"stable": 2}}}})
    run(engine.reload(moved))
    assert engine.model("cosine", label="stable").info.version == 2
    with pytest.raises(ModelNotFound, match="label 'canary'"):
        engine.model("cosine", label="canary")
    with pytest.raises(InvalidInput, match="labels.stable: model 'cosine' has no version 7"):
        run(engine.reload(parse_config({"models": {"cosine": {"labels": {"stable": 7}}}})))
    with pytest.raises(InvalidInput, match="models.nope: not a served model"):
        run(engine.reload(parse_config({"models": {"nope": {}}})))
    assert engine.model("cosine", label="stable").info.version == 2  # unchanged


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
    from service.cpus import usable_cpus

    monkeypatch.setenv("SERVICE_WORKERS", "auto")
    auto = ServingSettings.from_env()
    assert (auto.workers, auto.workers_source) == (usable_cpus().count, usable_cpus().source)
    monkeypatch.setenv("SERVICE_GPUS", "3")
    assert ServingSettings.from_env().workers == 3  # one per card
    monkeypatch.setenv("SERVICE_WORKERS", "2")
    assert ServingSettings.from_env().workers == 2
    monkeypatch.setenv("SERVICE_WORKERS", "many")
    with pytest.raises(ValueError, match="SERVICE_WORKERS"):
        ServingSettings.from_env()


def test_model_source_setting(monkeypatch):
    assert ServingSettings.from_env().model_source == "auto"
    monkeypatch.setenv("SERVICE_MODEL_SOURCE", "Store")
    assert ServingSettings.from_env().model_source == "store"
    monkeypatch.setenv("SERVICE_MODEL_SOURCE", "volume")
    with pytest.raises(ValueError, match="SERVICE_MODEL_SOURCE"):
        ServingSettings.from_env()


def test_a_poll_that_read_the_store_before_a_reload_does_not_undo_it(trained_store, run):
    """The watcher's poll and HandleReloadConfigRequest both read the store off the loop; a
    poll that started first must not re-apply, after the reload, the config it replaced."""
    stored = {"cosine": {v: _stored(trained_store, "cosine", v) for v in (1, 2)}}
    in_source, release = threading.Event(), threading.Event()
    calls = {"n": 0}

    def source():
        calls["n"] += 1
        if calls["n"] == 2:  # the poll's look at the store (the first is the start's)
            in_source.set()
            release.wait(30)
        return stored

    config = parse_config({"models": {"cosine": {"versions": "all", "labels": {"stable": 1}}}})
    engine = run(_started(Engine(VERSIONS, source, ["cosine"], config)))

    async def race() -> None:
        poll = asyncio.create_task(engine.poll())
        await asyncio.to_thread(in_source.wait, 30)
        moved = {"models": {"cosine": {"versions": "all", "labels": {"stable": 2}}}}
        reload = asyncio.create_task(engine.reload(parse_config(moved)))
        await asyncio.sleep(0.3)  # the reload reads the store and applies, unless it waits
        release.set()
        await asyncio.gather(poll, reload)

    run(race())
    assert engine.model("cosine", label="stable").info.version == 2
    run(engine.close())


def test_a_reload_reaches_the_other_workers_and_the_config_file_is_watched(
    trained_store, tmp_path, run
):
    """Two engines stand for two workers: HandleReloadConfigRequest reaches one of them."""
    stored = {"cosine": {v: _stored(trained_store, "cosine", v) for v in (1, 2)}}
    config_file = tmp_path / "models.yaml"
    config_file.write_text("models:\n  cosine:\n    versions: all\n    labels: {stable: 1}\n")
    shared = tmp_path / "shared.json"
    settings = replace(VERSIONS, model_config=str(config_file), poll_s=0.2)
    first, second = (
        run(_started(Engine(settings, lambda: stored, ["cosine"], shared_config=shared)))
        for _ in range(2)
    )
    assert first.model("cosine", label="stable").info.version == 1
    run(
        first.reload(
            parse_config({"models": {"cosine": {"versions": "all", "labels": {"stable": 2}}}})
        )
    )
    assert first.model("cosine", label="stable").info.version == 2
    run(_until(lambda: second.models["cosine"].routing.labels.get("stable") == 2, timeout=10))
    # An edited config file wins over the last reload, in every worker.
    config_file.write_text(
        "models:\n  cosine:\n    versions: all\n    labels: {stable: 1, canary: 2}\n"
    )
    for engine in (first, second):
        run(
            _until(lambda e=engine: e.models["cosine"].routing.labels == {"stable": 1, "canary": 2})
        )
    # A broken edit is refused and counted (once by each worker); the config in force stays.
    refused = _sample("keras_serving_model_config_errors_total")
    config_file.write_text("models:\n  cosine:\n    versions: newest\n")
    run(_until(lambda: _sample("keras_serving_model_config_errors_total") == refused + 2))
    for engine in (first, second):
        assert engine.models["cosine"].routing.labels == {"stable": 1, "canary": 2}
        assert engine.model("cosine", label="canary").info.version == 2
    for engine in (first, second):
        run(engine.close())
    assert not shared.exists()


def test_a_version_removed_from_the_store_is_unloaded(trained_store, run):
    stored = {"cosine": {v: _stored(trained_store, "cosine", v) for v in (1, 2)}}
    config = parse_config({"models": {"cosine": {"versions": "all"}}})
    engine = run(_started(Engine(VERSIONS, lambda: stored, ["cosine"], config)))
    retired = engine.models["cosine"].versions[2]
    del stored["cosine"][2]
    run(engine.poll())
    run(_until(lambda: 2 not in engine.models["cosine"].versions))
    assert retired.state is State.END
    assert engine.model("cosine").info.version == 1


def test_a_missing_config_file_stops_the_start(tmp_path, run):
    settings = replace(VERSIONS, model_config=str(tmp_path / "missing.yaml"))
    engine = Engine(settings, dict, ["cosine"])

    async def start():
        engine.start()

    with pytest.raises(ConfigError, match="SERVICE_MODEL_CONFIG=.*missing.yaml: no such file"):
        run(start())


class _Loading:
    """A ServedModel stand-in whose load finishes when the test says so."""

    def __init__(self, stored: StoredVersion) -> None:
        from concurrent.futures import Future

        self.info, self.path, self.error = stored.info, stored.path, None
        self.state = State.START
        self.done: Future[None] = Future()

    @property
    def ready(self) -> bool:
        return self.state is State.AVAILABLE

    def start(self):
        self.state = State.LOADING
        return self.done

    def finish(self, state: State = State.AVAILABLE) -> None:
        self.state = state
        self.done.set_result(None)

    async def close(self) -> None:
        self.state = State.END


def test_not_ready_at_start_until_every_wanted_version_has_loaded_or_failed(trained_store, run):
    """/readyz must not turn true with v1 while v2, which a client may ask for, still loads;
    once ready, later loads (a rollout) keep it ready."""
    from service.model_versions import ModelVersions

    stored = {v: _stored(trained_store, "cosine", v) for v in (1, 2, 3)}
    engine = Engine(SETTINGS, dict, [])
    versions = ModelVersions("cosine", _Loading)
    engine.models = {"cosine": versions}

    async def update(config) -> None:
        versions.update({v: stored[v] for v in config}, parse_config(
            {"models": {"cosine": {"versions": "all"}}}).for_model("cosine"))  # fmt: skip

    run(update((1, 2)))
    versions.versions[1].finish()
    run(asyncio.sleep(0.05))
    assert versions.ready and not engine.ready  # v1 answers, v2 still loading
    versions.versions[2].finish(State.END)  # failed: settled all the same
    run(asyncio.sleep(0.05))
    assert engine.ready
    run(update((1, 2, 3)))  # a new version while serving: still ready
    assert versions.versions[3].state is State.LOADING and engine.ready


def test_a_latest_version_that_fails_to_load_gives_way_to_the_newest_that_loads(
    trained_store, run
):
    """At start (and so in a replacement worker): v3 fails, v2 loads and answers, and the
    status keeps v3 as END with its error. TF Serving would serve nothing."""
    from service.model_versions import ModelVersions

    stored = {v: _stored(trained_store, "cosine", v) for v in (1, 2, 3)}
    engine = Engine(SETTINGS, dict, [])
    versions = ModelVersions("cosine", _Loading)
    engine.models = {"cosine": versions}

    async def update() -> None:
        versions.update(stored, parse_config({}).for_model("cosine"))

    run(update())
    assert sorted(versions.versions) == [3]
    versions.versions[3].error = "OSError: saved_model.pb is truncated"
    versions.versions[3].finish(State.END)
    run(asyncio.sleep(0.05))
    assert sorted(versions.versions) == [2, 3] and not engine.ready  # v2 loading now
    versions.versions[2].finish()
    run(asyncio.sleep(0.05))
    assert engine.ready and versions.default.info.version == 2
    assert versions.status() == [
        (2, "AVAILABLE", None),
        (3, "END", "OSError: saved_model.pb is truncated"),
    ]
    # Re-registered under the same number (a new path): tried again, and it replaces v2.
    fixed = StoredVersion(stored[3].info, stored[3].path + "-fixed")
    run(_update_with(versions, {**stored, 3: fixed}))
    assert versions.versions[3].path.endswith("-fixed")
    run(versions.close())  # the failed v3 it replaced retires


async def _update_with(versions, stored) -> None:
    versions.update(stored, parse_config({}).for_model("cosine"))
