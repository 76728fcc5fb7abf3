"""The bench's peers without their venvs (``make bench-peers-smoke`` starts them): the
modes, the pins, the peers' model code on the trained imdb, and their rows in the report."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from loadtest import bench, checks, peers, procs, report
from loadtest.peers import peer_model
from tfserving_api.contract import PREDICT_TEXT_SIGNATURE

ROOT = Path(__file__).resolve().parents[2]


def test_peers_are_modes_only_when_named():
    assert not set(peers.NAMES) & set(bench.parse_args([]).modes)
    args = bench.parse_args(["--modes", "naive,http,bentoml,litserve,rayserve"])
    assert args.modes == ("naive", "http", "bentoml", "litserve", "rayserve")
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "torchserve"])


def test_every_peer_pins_exact_versions_and_the_projects_tensorflow():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, peer in peers.PEERS.items():
        for requirement in peer.requirements:
            assert re.fullmatch(r"[a-z-]+(\[[a-z]+\])?==[0-9.]+", requirement), (name, requirement)
        assert set(peers.COMMON) <= set(peer.requirements)
    assert set(peers.COMMON) <= set(project)  # the same TensorFlow and NumPy as the service
    assert "bentoml==1.4.38" in project and "bentoml==1.4.38" in peers.PEERS["bentoml"].requirements
    assert "litserve==0.2.19" in peers.PEERS["litserve"].requirements
    assert "ray[serve]==2.60.0" in peers.PEERS["rayserve"].requirements


def test_a_venv_with_the_same_pins_is_reused(tmp_path):
    stamp = tmp_path / "litserve" / ".installed"
    stamp.parent.mkdir()
    stamp.write_text("\n".join(peers.PEERS["litserve"].requirements) + "\n")
    assert peers.ensure_venv("litserve", tmp_path) == tmp_path / "litserve"  # nothing installed
    assert sorted(p.name for p in stamp.parent.iterdir()) == [".installed"]


def test_peer_model_answers_as_the_friendly_door(trained_store, reference):
    assert peer_model.SIGNATURE == PREDICT_TEXT_SIGNATURE
    predict = peer_model.load(str(trained_store.export_path("imdb")), warm_up=3)
    texts = ["a fine film", "dull and far too long", "the cast is brilliant"]
    results = predict(texts)
    checks.check("imdb", checks.from_json("imdb", {"results": results}), items=3)
    expected = reference("imdb", PREDICT_TEXT_SIGNATURE, texts)["probabilities"][:, 1]
    positive = [r["positive_probability"] for r in results]
    np.testing.assert_allclose(positive, expected, rtol=1e-5)
    batch = [texts[:1], texts[1:]]
    assert peer_model.split(results, batch) == [results[:1], results[1:]]


def test_peer_records_get_ratios_targets_and_a_table():
    def load(mode, concurrency, throughput):
        return {"model": "imdb", "mode": mode, "concurrency": concurrency, "batch_size": None,
                "items": 1, "throughput": throughput, "requests_per_s": throughput,
                "p50_ms": 10.0, "p99_ms": 40.0, "errors": 0, "generator_cpu": 0.3,
                "generator_ms_per_request": 0.3, "server_ms_per_request": 0.5}  # fmt: skip

    records = [load("naive", 64, 1000.0), load("bentoml", 64, 800.0), load("litserve", 64, 500.0)]
    records += [load("rayserve", 64, 100.0), load("http", 64, 2000.0), load("http", 1, 300.0)]
    summary = report.summarize(records, ("imdb",))
    at_64 = summary["ratios"]["imdb"]["by_concurrency"]["64"]
    assert at_64["bentoml_over_naive"] == pytest.approx(0.8)
    assert at_64["http_over_litserve"] == pytest.approx(4.0)
    assert "http_over_bentoml" not in summary["ratios"]["imdb"]["by_concurrency"]["1"]
    targets = {t["target"]: t for t in summary["targets"]}
    bentoml = targets["imdb http c=64: throughput / bentoml"]
    assert bentoml["met"] is False and bentoml["gap"] == pytest.approx(2.5 - 3.0)
    assert targets["imdb http c=64: throughput / rayserve"]["met"] is True
    rendered = report.render(
        {"machine": report.describe_machine(), "records": records, "summary": summary}
    )
    assert "| imdb | 64 | bentoml | 800.0 | 10.00 | 40.00 | 0 | 0.50 | 0.80 | 2.50 |" in rendered
    assert "| imdb | 64 | naive | 1,000.0 |" in rendered
    assert "| imdb | 1 | http |" not in rendered.split("Peers (")[1]  # no peer at c=1


def test_a_ray_worker_keeps_one_name_whatever_task_it_runs():
    # Ray retitles its workers per task: one name, so a window's CPU delta is the worker's.
    idle = procs._process_name(["ray::ServeReplica:default:ImdbPeer"], is_root=False)
    busy = procs._process_name(["ray::ServeReplica:default:ImdbPeer.handle_request"], False)
    assert idle == busy == "ray::ServeReplica:default:ImdbPeer"
    assert procs._process_name(["/usr/bin/python3.11", "x.py"], False) == "python3.11"


def test_a_peer_that_does_not_start_is_a_note_not_the_end_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(peers, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(peers, "saved_model", lambda model: tmp_path)
    broken = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    requirements = peers.PEERS["litserve"].requirements
    peer = peers.Peer(requirements, lambda venv, port, tmp: broken, "/health")
    monkeypatch.setitem(peers.PEERS, "litserve", peer)
    (tmp_path / "litserve").mkdir()
    (tmp_path / "litserve" / ".installed").write_text("\n".join(requirements) + "\n")
    out = str(tmp_path / "bench.json")
    args = bench.parse_args(["--modes", "litserve", "--concurrency", "1", "--out", out])
    notes: list[str] = []
    assert bench.run_peers("imdb", args, notes) == []
    (note,) = notes
    assert note.startswith("peer litserve skipped:") and "exited with 3" in note
    assert "no model here" in note  # the log's tail says why


def test_every_peer_batches_up_to_the_size_its_model_is_warmed_at():
    for server in ("bentoml_peer.py", "litserve_peer.py", "rayserve_peer.py"):
        source = (ROOT / "loadtest" / "peers" / server).read_text()
        sizes = set(re.findall(r"max_batch_size=(\d+)", source))
        assert sizes == {str(peer_model.MAX_BATCH_SIZE)}, server


def test_a_peer_is_ready_once_both_workers_say_so(tmp_path):
    # BentoML's /readyz answers for one worker: the other's log line is awaited too.
    script = "print('worker up', flush=True); print('worker up', flush=True)"
    server = procs.ServerProcess([sys.executable, "-c", script], "tcp://x:1", tmp_path / "log")
    server.start(wait=False)
    try:
        server.proc.wait(timeout=30)
        peers._wait_workers(server, "worker up", 2)  # returns: both logged
        with pytest.raises(RuntimeError, match="not 3 workers logging 'worker up'"):
            peers._wait_workers(server, "worker up", 3)  # exited with two
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ([{"label": "positive", "probability": 0.9, "positive_probability": 0.9}], None),  # BentoML
        ({"results": [{"label": "negative", "probability": 0.8, "positive_probability": 0.2}]},
         None),  # LitServe, Ray Serve
        ({"results": []}, "0 results for 1 items"),
        ([{"label": "positive", "probability": 0.2, "positive_probability": 0.2}], "probability"),
        ({"predictions": [[0.1, 0.9]]}, "malformed body"),
    ],
)
def test_peer_call_checks_each_peers_answer(answer, error):
    import asyncio

    import aiohttp
    from aiohttp import web

    async def run() -> None:
        async def predict(request: web.Request) -> web.Response:
            body = await request.json()
            assert len(body["texts"]) == 1  # one review per request
            return web.json_response(answer)

        app = web.Application()
        app.router.add_post(peers.PATH, predict)
        runner = web.AppRunner(app)
        await runner.setup()
        port = procs.free_port()
        await web.TCPSite(runner, procs.LOOPBACK, port).start()
        try:
            async with aiohttp.ClientSession(f"http://{procs.LOOPBACK}:{port}") as session:
                if error is None:
                    await peers.peer_call()(session, 0)
                else:
                    with pytest.raises(checks.BadResponse, match=error):
                        await peers.peer_call()(session, 0)
        finally:
            await runner.cleanup()

    asyncio.run(run())
