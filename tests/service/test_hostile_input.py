"""Hostile input against the real session server (issue 15): every probe is one row, with
the status it must get and a fragment of its message; none is a 5xx, none leaves a traceback.
"""

from __future__ import annotations

import base64
import functools
import io
import re

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

LONG = "x" * 1_000_000  # a client string far past what any message should echo


@functools.cache
def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096)).save(buffer, format="PNG")
    return buffer.getvalue()


def big_pngs(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.png", big_png(), "image/png")) for i in range(count)]

# (case, method, path, request kwargs for httpx, expected status, fragment of "error")
PROBES = [
    # ---- versions: ASCII digits only ("²".isdigit() is True, int("²") raises: was a 500)
    ("version superscript", "GET", "/v1/models/imdb/versions/%C2%B2", {}, 400,
     "version: '²' is not a version number"),
    ("version arabic-indic", "GET", "/v1/models/imdb/versions/%D9%A1", {}, 400,
     "version: '١' is not a version number"),
    ("version superscript metadata", "GET", "/v1/models/imdb/versions/%C2%B2/metadata", {}, 400,
     "version: '²' is not a version number"),
    ("version arabic-indic predict", "POST", "/v1/models/cosine/versions/%D9%A1:predict",
     {"json": {"instances": [[0.0] * 10]}}, 400, "version: '١' is not a version number"),
    ("version of twenty digits", "GET", "/v1/models/imdb/versions/" + "1" * 20, {}, 400,
     "is not a version number"),
    ("version unknown", "GET", "/v1/models/imdb/versions/999", {}, 404,
     "model 'imdb' has no version 999"),
    ("friendly version arabic-indic in a form", "POST", "/mnist/classify",
     {"data": {"version": "١"}, "files": {"images": ("a.png", b"\x89PNG", "image/png")}}, 400,
     "version: '١' is not a version number"),
    ("friendly version underscore in a form", "POST", "/mnist/classify",
     {"data": {"version": "3_0"}, "files": {"images": ("a.png", b"\x89PNG", "image/png")}}, 400,
     "version: '3_0' is not a version number"),
    # ---- images: a pixel budget per request, from the headers, before any decoding
    ("64 PNGs of 4096x4096 (took 11.6 s on the event loop)", "POST", "/cifar/classify",
     {"files": big_pngs(64)}, 413,
     "images[4]: the images up to this one hold 83886080 pixels, over the cap of 67108864"),
    ("64 PNGs of 4096x4096 as base64", "POST", "/mnist/classify",
     {"json": {"images": [{"b64": base64.b64encode(big_png()).decode()}] * 64}},
     413, "(SERVICE_MAX_PIXELS)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def log_start(server) -> int:
    return server.log.stat().st_size


@pytest.mark.parametrize(
    "case, method, path, kwargs, status, fragment", PROBES, ids=[p[0] for p in PROBES]
)
def test_hostile_request_gets_its_status(
    http, log_start, case, method, path, kwargs, status, fragment
):
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, response.text[:2000]
    body = response.json()
    assert set(body) == {"error"}, body
    assert fragment in body["error"], body["error"][:2000]
    assert len(response.content) < 2_000, "the answer echoes too much of the request"


def test_no_traceback_and_no_500_from_these_probes(http, server, log_start):
    with server.log.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-4000:]
    metrics = http.get("/metrics").text
    assert not [
        line for line in metrics.splitlines()
        if re.search(r'code="500"', line) and float(line.split()[-1]) > 0
    ]  # fmt: skip
