"""A real ``bentoml serve`` (imdb and mnist, one worker, default settings but three batch
buckets: 1, 4 for the images, 64 for the bursts): ``/metrics``
stays bounded whatever the paths, a burst the model finishes in well under a second is
admitted whole (issue 15: 1 to 15 of 32 such clients were refused by the row cap), and
the worker's event loop keeps answering while large uploads decode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.integration

REVIEW = "a long and winding film, with actors who mostly stand around " * 8


@pytest.fixture(scope="module")
def imdb_server(trained_store, tmp_path_factory, server_factory) -> Iterator[str]:
    # A home of its own (the same models): the Prometheus multiprocess files live in
    # $BENTOML_HOME, and /metrics must show this server's series only.
    home = tmp_path_factory.mktemp("bounded_home")
    (home / "models").symlink_to(trained_store.home / "models")
    store = dataclasses.replace(trained_store, home=home)
    log = tmp_path_factory.mktemp("bounded") / "serve.log"
    # The default buckets but 2, 8, 16 and 32, which no request here fills: a shorter warm-up.
    settings = {"SERVICE_MODELS": "imdb,mnist", "SERVICE_WORKERS": "1",
                "SERVICE_BATCH_BUCKETS": "1,4,64"}  # fmt: skip
    with server_factory(store, log, **settings) as (running, _):
        yield running.url


def test_unknown_paths_do_not_grow_metrics(imdb_server):
    with httpx.Client(base_url=imdb_server, timeout=30) as http:
        assert http.get("/nowhere").status_code == 404  # the 'unmatched' series exists now
        before = len(http.get("/metrics").content)
        for i in range(1_000):
            path = f"/x{i}" + "a" * 200 if i % 2 else f"/v1/models/m{i}/versions/{i}/{'b' * 100}"
            assert http.get(path).status_code == 404
        text = http.get("/metrics").text
    grown = len(text.encode()) - before
    assert grown < 100_000, f"/metrics grew by {grown} bytes"
    endpoints = set(re.findall(r'bentoml_service_request_total\{endpoint="([^"]*)"', text))
    assert "unmatched" in endpoints and "/v1/{path:path}" in endpoints, endpoints
    assert all(len(e) < 60 for e in endpoints), endpoints


def test_known_routes_are_labelled_by_template(imdb_server):
    with httpx.Client(base_url=imdb_server, timeout=30) as http:
        assert http.post("/imdb/sentiment", json={"texts": ["fine"]}).status_code == 200
        assert http.get("/v1/models/imdb/versions/1").status_code in (200, 404)
        text = http.get("/metrics").text
    for endpoint in ("/imdb/sentiment", "/v1/models/{name}/versions/{version}"):
        assert f'bentoml_service_request_total{{endpoint="{endpoint}"' in text, endpoint


def _model_seconds(url: str) -> float:
    """imdb's total model time so far (every batch of its text signature), from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(
        r'^keras_serving_execution_seconds_sum\{model="imdb",signature="predict_text"\} (\S+)$',
        text,
        re.M,
    )
    return float(found[1]) if found else 0.0


def test_a_burst_the_model_finishes_quickly_is_admitted_whole(imdb_server):
    """32 clients x 64 reviews at once: about 0.2 s of model time at batch 64 on a quiet
    machine, far under the 1 s wait budget; the old 1024-row cap refused some of them."""

    async def burst() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=imdb_server, timeout=120, limits=limits) as http:

            async def one() -> tuple[int, str]:
                response = await http.post("/imdb/sentiment", json={"texts": [REVIEW] * 64})
                return response.status_code, response.text[:300]

            return await asyncio.gather(*(one() for _ in range(32)))

    # Twice: first with the model's throughput not yet measured at batch 64 (optimistic),
    # then with the rate the first burst measured.
    for _ in range(2):
        before = _model_seconds(imdb_server)
        answers = asyncio.run(burst())
        took = _model_seconds(imdb_server) - before
        refused = [text for status, text in answers if status != 200]
        assert {status for status, _ in answers} <= {200, 503}, answers
        assert all("estimated wait" in text for text in refused), refused  # never the row cap
        # What the model spent on the admitted part of the burst: on a machine where the whole
        # burst is well within the budget (a quiet one: ~0.2 s), nothing may be refused. On a
        # machine shared so much that the model is several times slower, refusing the part
        # beyond one second of its work is the rule working, not a failure.
        whole = took * 32 / max(1, 32 - len(refused))
        if whole < 0.5:
            assert not refused, (whole, refused)


def test_livez_answers_while_large_images_decode(imdb_server):
    """Three 4096 x 4096 PNGs (within the pixel budget) take the worker seconds of CPU to
    decode and resize; /livez on the same (only) worker must not wait for them."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096), (90, 160, 30)).save(buffer, format="PNG")  # ~50 KB
    files = [("images", (f"{i}.png", buffer.getvalue(), "image/png")) for i in range(3)]
    livez: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=imdb_server, timeout=60) as http:
            while not done.is_set():
                started = time.perf_counter()
                assert http.get("/livez").status_code == 200
                livez.append(time.perf_counter() - started)
                time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    with httpx.Client(base_url=imdb_server, timeout=120) as http:
        poller.start()
        started = time.perf_counter()
        response = http.post("/mnist/classify", files=files)
        upload = time.perf_counter() - started
    done.set()
    poller.join(60)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["results"]) == 3
    # Relative, not absolute: with the decode on the event loop the worst /livez waits about
    # as long as the whole upload takes; off the loop, a small part of it.
    assert livez and max(livez) < 0.5 * upload, (max(livez), upload)
