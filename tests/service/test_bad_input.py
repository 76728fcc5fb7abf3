"""Every kind of bad input gets a 4xx ``{"error": ...}`` naming the field; nothing breaks."""

from __future__ import annotations

import io
import json
import re

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

WINDOW = [float(i) for i in range(10)]
IDS = [[1] * 500]


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


# (case, method, path, request kwargs for httpx, expected status, fragment of "error")
CASES = [
    (
        "missing field",
        "POST",
        "/imdb/sentiment",
        {"json": {}},
        400,
        "texts: required field is missing",
    ),
    (
        "extra field",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["a"], "foo": 1}},
        400,
        "foo: unknown field",
    ),
    (
        "wrong type",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": "a"}},
        400,
        "texts: Input should be a valid array",
    ),
    (
        "wrong item type",
        "POST",
        "/reuters/classify",
        {"json": {"texts": ["a", 3]}},
        400,
        "texts[1]: Input should be a valid string",
    ),
    (
        "empty list",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": []}},
        400,
        "texts: must not be empty",
    ),
    (
        "empty string",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["ok", "  "]}},
        400,
        "texts[1]: must not be empty",
    ),
    (
        "oversized batch",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["a"] * 65}},
        413,
        "texts: 65 items exceed the cap of 64",
    ),
    (
        "oversized text",
        "POST",
        "/translate",
        {"json": {"sentences": ["a" * 20_001]}},
        413,
        "sentences[0]: 20001 characters exceed",
    ),
    (
        "oversized payload",
        "POST",
        "/imdb/sentiment",
        {"content": b"x" * (8 * 1024 * 1024 + 1)},
        413,
        "request body: exceeds the cap",
    ),
    (
        "invalid json",
        "POST",
        "/imdb/sentiment",
        {"content": b'{"texts": ['},
        400,
        "request body: Invalid JSON",
    ),
    (
        "body not an object",
        "POST",
        "/imdb/sentiment",
        {"json": ["a"]},
        400,
        "request body: Input should be an object",
    ),
    (
        "top_k out of range",
        "POST",
        "/reuters/classify",
        {"json": {"texts": ["a"], "top_k": 0}},
        400,
        "top_k: must be between 1 and 46",
    ),
    (
        "top_k wrong type",
        "POST",
        "/cifar/classify",
        {"json": {"images": [[[[0, 0, 0]] * 32] * 32], "top_k": "2"}},
        400,
        "top_k: Input should be a valid integer",
    ),
    (
        "nan",
        "POST",
        "/cosine/forecast",
        {"content": b'{"window": [1, NaN, 3, 4, 5, 6, 7, 8, 9, 10]}'},
        400,
        "window[1]: Input should be a finite number",
    ),
    (
        "infinity",
        "POST",
        "/cosine/forecast",
        {"content": b'{"window": [1, Infinity, 3, 4, 5, 6, 7, 8, 9, 10]}'},
        400,
        "window[1]: Input should be a finite number",
    ),
    (
        "window too short",
        "POST",
        "/cosine/forecast",
        {"json": {"window": [1, 2, 3]}},
        400,
        "window: expected 10 numbers, got 3",
    ),
    (
        "horizon too large",
        "POST",
        "/cosine/forecast",
        {"json": {"window": WINDOW, "horizon": 1000}},
        400,
        "horizon: must be between 1 and 100",
    ),
    (
        "image wrong shape",
        "POST",
        "/mnist/classify",
        {"json": {"images": [[[0] * 5] * 5]}},
        400,
        "images[0]: expected 28x28x1 or 28x28 pixels, got 5x5",
    ),
    (
        "image out of range",
        "POST",
        "/mnist/classify",
        {"json": {"images": [[[300] * 28] * 28]}},
        400,
        "images[0]: integer pixels must be in 0-255",
    ),
    (
        "image floats above 1",
        "POST",
        "/mnist/classify",
        {"json": {"images": [[[1.5] * 28] * 28]}},
        400,
        "images[0]: float pixels must be in [0, 1]",
    ),
    (
        "image nan",
        "POST",
        "/mnist/classify",
        {
            "content": json.dumps({"images": [[[0.5] * 28] * 27 + [[0.5] * 27 + ["NaN"]]]})
            .replace('"NaN"', "NaN")
            .encode()
        },
        400,
        "images[0]: must not contain NaN",
    ),
    (
        "image ragged",
        "POST",
        "/mnist/classify",
        {"json": {"images": [[[0] * 28, [0] * 3]]}},
        400,
        "images[0]: nested lists must be rectangular",
    ),
    (
        "image not numbers",
        "POST",
        "/mnist/classify",
        {"json": {"images": ["abc"]}},
        400,
        "images[0]: expected numbers only",
    ),
    (
        "undecodable upload",
        "POST",
        "/cifar/classify",
        {"files": [("images", ("a.png", b"not a png", "image/png"))]},
        400,
        "images[0]: not a decodable PNG or JPEG image",
    ),
    (
        "gif upload",
        "POST",
        "/cifar/classify",
        {"files": [("images", ("a.gif", gif(), "image/gif"))]},
        400,
        "images[0]: GIF images are not accepted",
    ),
    (
        "bad base64",
        "POST",
        "/cifar/classify",
        {"json": {"images": [{"b64": "%%%"}]}},
        400,
        "images[0].b64: not valid base64",
    ),
    (
        "empty upload",
        "POST",
        "/mnist/classify",
        {"files": [("images", ("a.png", b"", "image/png"))]},
        400,
        "images[0]: empty file",
    ),
    (
        "multipart where json is expected",
        "POST",
        "/imdb/sentiment",
        {"files": [("texts", ("a.txt", b"hi", "text/plain"))]},
        415,
        "takes a JSON body",
    ),
    (
        "empty sentences",
        "POST",
        "/translate",
        {"json": {"sentences": []}},
        400,
        "sentences: must not be empty",
    ),
    (
        "unknown route",
        "POST",
        "/nope/classify",
        {"json": {}},
        404,
        "Not Found: POST /nope/classify",
    ),
    ("wrong method", "GET", "/imdb/sentiment", {}, 405, "Method Not Allowed"),
    (
        "tfs unknown model",
        "POST",
        "/v1/models/nope:predict",
        {"json": {"instances": IDS}},
        404,
        "model 'nope' is not served",
    ),
    (
        "tfs unknown version",
        "POST",
        "/v1/models/imdb/versions/99:predict",
        {"json": {"instances": IDS}},
        404,
        "version: model 'imdb' has no version 99",
    ),
    (
        "tfs unknown label",
        "POST",
        "/v1/models/imdb/labels/gold:predict",
        {"json": {"instances": IDS}},
        404,
        "label: model 'imdb' has no version label 'gold'",
    ),
    (
        "tfs version not a number",
        "GET",
        "/v1/models/imdb/versions/x1/metadata",
        {},
        400,
        "version: 'x1' is not a version number",
    ),
    (
        "friendly unknown version",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["a"], "version": 99}},
        404,
        "version: model 'imdb' has no version 99",
    ),
    (
        "friendly unknown label",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["a"], "label": "gold"}},
        404,
        "label: model 'imdb' has no version label 'gold'",
    ),
    (
        "friendly version and label",
        "POST",
        "/cosine/forecast",
        {"json": {"window": [0.0] * 10, "version": 1, "label": "stable"}},
        400,
        "version, label: give one or the other",
    ),
    (
        "friendly negative version",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["a"], "version": -1}},
        400,
        "version: Input should be greater than or equal to 0",
    ),
    (
        "friendly version as text",
        "POST",
        "/imdb/sentiment",
        {"json": {"texts": ["a"], "version": "2"}},
        400,
        "version: Input should be a valid integer",
    ),
    (
        "tfs unknown version status",
        "GET",
        "/v1/models/imdb/versions/99",
        {},
        404,
        "version: model 'imdb' has no version 99",
    ),
    (
        "tfs unknown model metadata",
        "GET",
        "/v1/models/nope/metadata",
        {},
        404,
        "model 'nope' is not served",
    ),
    (
        "tfs unknown signature",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"signature_name": "nope", "instances": IDS}},
        404,
        "signature_name: model 'imdb' has no signature 'nope'",
    ),
    ("tfs unknown endpoint", "GET", "/v1/nothing", {}, 404, "no such TF Serving endpoint"),
    (
        "tfs both formats",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"instances": IDS, "inputs": IDS}},
        400,
        "exactly one of 'instances'",
    ),
    (
        "tfs neither format",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"signature_name": "serving_default"}},
        400,
        "exactly one of 'instances'",
    ),
    (
        "tfs text over the cap",
        "POST",
        "/v1/models/translator:predict",
        {"json": {"signature_name": "translate", "instances": ["word " * 5000]}},
        413,
        "instances[0]: 25000 characters exceed the cap of 20000",
    ),
    (
        "tfs pixels above 1",
        "POST",
        "/v1/models/mnist:predict",
        {"json": {"instances": [[[[255.0]] * 28] * 28]}},
        400,
        "pixels must be in [0, 1]",
    ),
    (
        "tfs extra field",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"instances": IDS, "foo": 1}},
        400,
        "foo: unknown field",
    ),
    (
        "tfs invalid json",
        "POST",
        "/v1/models/imdb:predict",
        {"content": b"{"},
        400,
        "request body: not valid JSON",
    ),
    (
        "tfs wrong shape",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"instances": [[1, 2, 3]]}},
        400,
        "instances: expected shape [n, 500] (int32), got [1, 3]",
    ),
    (
        "tfs floats for ints",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"instances": [[0.5] * 500]}},
        400,
        "instances: expected integers (int32), got floats",
    ),
    (
        "tfs token id out of range",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"inputs": [[10_000] * 500]}},
        400,
        "inputs: token ids must be in 0..9999",
    ),
    (
        # The translator's id range is its real vocabulary (tens of words on synthetic data).
        "tfs translator source id outside its vocabulary",
        "POST",
        "/v1/models/translator:predict",
        {"json": {"inputs": [[5000] * 11]}},
        400,
        "inputs: token ids must be in 0..",
    ),
    (
        "tfs nan",
        "POST",
        "/v1/models/cosine:predict",
        {"content": b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8, 9, NaN]]}'},
        400,
        "instances: must not contain NaN or infinity",
    ),
    (
        "tfs empty instances",
        "POST",
        "/v1/models/cosine:predict",
        {"json": {"instances": []}},
        400,
        "instances: must not be empty",
    ),
    (
        "tfs oversized batch",
        "POST",
        "/v1/models/cosine:predict",
        {"json": {"instances": [WINDOW] * 65}},
        413,
        "instances: 65 rows exceed the cap of 64",
    ),
    (
        "tfs unknown input name",
        "POST",
        "/v1/models/cosine:predict",
        {"json": {"inputs": {"values": [WINDOW]}}},
        400,
        "inputs.values: unknown input (the signature takes 'window')",
    ),
    (
        "tfs wrong string type",
        "POST",
        "/v1/models/translator:predict",
        {"json": {"signature_name": "translate", "instances": [3]}},
        400,
        "instances[0]: expected a string",
    ),
    (
        "tfs uint8 out of range",
        "POST",
        "/v1/models/mnist:predict",
        {"json": {"signature_name": "predict_images", "instances": [[[[256]] * 28] * 28]}},
        400,
        "instances: values must fit uint8 (0..255)",
    ),
    (
        "malformed multipart",
        "POST",
        "/cifar/classify",
        {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
        400,
        "request body: not a valid multipart form",
    ),
    (
        "tfs text not utf-8",
        "POST",
        "/v1/models/imdb:predict",
        {"json": {"signature_name": "predict_text", "instances": [{"b64": "/w=="}]}},
        400,
        "instances[0]: not valid UTF-8 text",
    ),
    (
        "tfs empty string",
        "POST",
        "/v1/models/translator:predict",
        {"json": {"signature_name": "translate", "inputs": ["ok", ""]}},
        400,
        "inputs[1]: must not be empty",
    ),
    (
        "tfs nested too deeply",
        "POST",
        "/v1/models/cosine:predict",
        {"content": b"[" * 100_000},
        400,
        "request body:",
    ),
]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize(
    "case, method, path, kwargs, status, fragment", CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_4xx_naming_the_field(http, case, method, path, kwargs, status, fragment):
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert fragment in body["error"], body["error"]


def test_server_still_answers_after_bad_input(http):
    for _, method, path, kwargs, *_ in CASES[:12]:
        http.request(method, path, **kwargs)
    assert http.get("/readyz").status_code == 200
    good = http.post("/imdb/sentiment", json={"texts": ["a fine film"]})
    assert good.status_code == 200, good.text
    tfs = http.post("/v1/models/cosine:predict", json={"instances": [WINDOW]})
    assert tfs.status_code == 200, tfs.text
    metrics = http.get("/metrics").text
    server_errors = [
        line
        for line in metrics.splitlines()
        if re.search(r'code="500"', line) and float(line.split()[-1]) > 0
    ]
    assert not server_errors, server_errors
