"""Bounded fuzzing of the HTTP doors of a real ``bentoml serve``: schemathesis over the
OpenAPI spec (``/docs.json``, the friendly endpoints and probes), and TF Serving's REST
routes (not in the spec) with a table of malformed requests plus a property-based fuzz of
their bodies. Nothing a client sends may be answered 5xx; every 4xx is ``{"error": ...}``.

Every fuzz is derandomized (the same cases on every run) and bounded by example counts,
~40 s in all on 2 cores.
"""

from __future__ import annotations

import io
import json
import re
import typing as t
import urllib.parse

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.integration

# Every operation of /docs.json; a new one fails test_the_spec_lists_every_fuzzed_operation
# until it is listed here (and so fuzzed).
FRIENDLY = [
    "/reuters/classify",
    "/imdb/sentiment",
    "/cifar/classify",
    "/mnist/classify",
    "/cosine/forecast",
    "/translate",
]
PROBES = ["/healthz", "/livez", "/readyz", "/metrics"]
MODELS = ("reuters", "imdb", "cifar", "mnist", "cosine", "translator")


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,  # the same cases on every run: a CI failure reproduces locally
        database=None,
        deadline=None,  # a shared 2-core machine: latency is not what is tested here
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def log_start(server) -> int:
    """Where the server log stood before this module's first request."""
    return server.log.stat().st_size


@pytest.fixture(scope="module")
def http(server, log_start):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def api(server, log_start):
    return schemathesis.openapi.from_url(f"{server.url}/docs.json")


@pytest.fixture(scope="module")
def session():
    with requests.Session() as session:
        yield session


def assert_client_error_shape(status: int, body: bytes, what: str) -> None:
    """A 4xx is ``{"error": "<message>"}``; nothing is 5xx."""
    assert status < 500, f"{what}: {status} {body[:500]!r}"
    if status >= 400:
        payload = json.loads(body)
        assert isinstance(payload, dict) and set(payload) == {"error"}, (what, payload)
        assert isinstance(payload["error"], str) and payload["error"], (what, payload)


# ---------------------------------------------------------------- the OpenAPI spec


def test_the_spec_lists_every_fuzzed_operation(api):
    operations = {
        (result.ok().method.upper(), result.ok().path) for result in api.get_all_operations()
    }
    assert operations == {("POST", p) for p in FRIENDLY} | {("GET", p) for p in PROBES}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("path", FRIENDLY)
def test_friendly_endpoint_never_answers_5xx(api, server, session, path, mode):
    operation = api[path]["POST"]

    @fuzz_settings(examples=300)
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.url, session=session, timeout=60)
        case.validate_response(response, checks=[not_a_server_error])
        assert_client_error_shape(response.status_code, response.content, f"POST {path}")

    fuzz()


@pytest.mark.parametrize("path", PROBES)
def test_probe_never_answers_5xx(api, server, session, path):
    operation = api[path]["GET"]

    @fuzz_settings(examples=5)
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=server.url, session=session, checks=[not_a_server_error])

    fuzz()


# ---------------------------------------------------------------- what the spec leaves out: a table

IDS = [[1] * 500]
WINDOW = [float(i) for i in range(10)]
NOT_SERVED = "no such TF Serving endpoint"


def body(payload: t.Any) -> dict[str, bytes]:
    """``payload`` as JSON, NaN and Infinity written as JavaScript does (TF Serving reads them)."""
    return {"content": json.dumps(payload, allow_nan=True).encode()}


# (id, method, path, httpx request kwargs, expected status or statuses, fragment of "error")
REST_ROWS = [
    # ---- text the error message quotes back: lone surrogates (valid JSON escapes), huge ints
    ("lone surrogate in signature_name", "POST", "/v1/models/imdb:predict",
     {"content": b'{"signature_name": "\\ud800", "instances": [[1]]}'}, 404,
     "no signature '\\ud800'"),
    ("lone surrogate in a field name", "POST", "/v1/models/imdb:predict",
     {"content": b'{"\\udc80": 1}'}, 400, "\\udc80: unknown field"),
    ("integer of 5000 digits", "POST", "/v1/models/imdb:predict",
     {"content": b'{"instances": [' + b"1" * 5000 + b"]}"}, 400, "request body: not valid JSON"),
    # ---- not JSON, or not an object
    ("truncated json", "POST", "/v1/models/imdb:predict", {"content": b'{"instances": [[1'},
     400, "request body: not valid JSON"),
    ("utf-16 garbage", "POST", "/v1/models/imdb:predict", {"content": b"\xff\xfe{"}, 400,
     "request body: not valid JSON"),
    ("bytes not utf-8", "POST", "/v1/models/imdb:predict",
     {"content": b'{"signature_name": "\xff"}'}, 400, "request body: not valid JSON"),
    ("empty body", "POST", "/v1/models/imdb:predict", {"content": b""}, 400,
     "expected a JSON object with 'instances' or 'inputs'"),
    ("array body", "POST", "/v1/models/imdb:predict", body(IDS), 400,
     "expected a JSON object"),
    ("string body", "POST", "/v1/models/imdb:predict", body("instances"), 400,
     "expected a JSON object"),
    ("multipart body", "POST", "/v1/models/imdb:predict",
     {"files": [("instances", ("a.json", b"[[1]]", "application/json"))]}, 400,
     "request body: not valid JSON"),
    ("nested past the parser", "POST", "/v1/models/cosine:predict",
     {"content": b'{"instances": ' + b"[" * 100_000}, 400, "request body:"),
    ("nested past numpy's dimensions", "POST", "/v1/models/cosine:predict",
     body({"instances": json.loads("[" * 80 + "1" + "]" * 80)}), 400, "instances:"),
    # ---- wrong types
    ("instances not a list", "POST", "/v1/models/imdb:predict", body({"instances": 5}), 400,
     "instances: expected a list of rows"),
    ("inputs null", "POST", "/v1/models/imdb:predict", body({"inputs": None}), 400,
     "inputs: expected a list of rows"),
    ("signature_name a number", "POST", "/v1/models/imdb:predict",
     body({"signature_name": 3, "instances": IDS}), 400, "signature_name: expected a string"),
    ("strings for numbers", "POST", "/v1/models/cosine:predict",
     body({"instances": [[str(v) for v in WINDOW]]}), 400, "instances: expected numbers only"),
    ("numbers for strings", "POST", "/v1/models/imdb:predict",
     body({"signature_name": "predict_text", "instances": [3]}), 400,
     "instances[0]: expected a string"),
    ("booleans for numbers", "POST", "/v1/models/cosine:predict",
     body({"instances": [[True] * 10]}), 400, "instances: expected numbers only"),
    ("nulls for numbers", "POST", "/v1/models/imdb:predict",
     body({"instances": [[None] * 500]}), 400, "instances: expected numbers only"),
    ("floats for token ids", "POST", "/v1/models/imdb:predict",
     body({"instances": [[0.5] * 500]}), 400, "expected integers (int32), got floats"),
    ("floats for uint8 images", "POST", "/v1/models/cifar:predict",
     body({"signature_name": "predict_images", "instances": [[[[0.5] * 3] * 32] * 32]}), 400,
     "expected integers (uint8), got floats"),
    ("integer beyond int64", "POST", "/v1/models/cosine:predict",
     body({"instances": [[2**64] * 10]}), 400, "instances: expected numbers only"),
    ("integer beyond int32", "POST", "/v1/models/imdb:predict",
     body({"instances": [[2**40] * 500]}), 400, "values must fit int32"),
    ("b64 object for numbers", "POST", "/v1/models/cifar:predict",
     body({"signature_name": "predict_images", "instances": [{"b64": "aGk="}]}), 400,
     "instances[0].b64: unknown input (the signature takes 'images')"),
    ("b64 not a string", "POST", "/v1/models/translator:predict",
     body({"signature_name": "translate", "instances": [{"b64": 3}]}), 400,
     'instances[0]: an object must be {"b64": "<base64 UTF-8 text>"}'),
    ("b64 not base64", "POST", "/v1/models/translator:predict",
     body({"signature_name": "translate", "instances": [{"b64": "%%%"}]}), 400,
     "instances[0].b64: not valid base64"),
    ("b64 not utf-8 text", "POST", "/v1/models/imdb:predict",
     body({"signature_name": "predict_text", "inputs": [{"b64": "/w=="}]}), 400,
     "inputs[0]: not valid UTF-8 text"),
    # ---- instances / inputs mix-ups
    ("instances and inputs", "POST", "/v1/models/imdb:predict",
     body({"instances": IDS, "inputs": IDS}), 400, "exactly one of 'instances'"),
    ("neither instances nor inputs", "POST", "/v1/models/imdb:predict",
     body({"signature_name": "serving_default"}), 400, "exactly one of 'instances'"),
    ("unknown top-level field", "POST", "/v1/models/imdb:predict",
     body({"instances": IDS, "examples": []}), 400, "examples: unknown field"),
    ("columnar object under instances", "POST", "/v1/models/imdb:predict",
     body({"instances": {"token_ids": IDS}}), 400, "instances: expected a list of rows"),
    ("row object with the wrong input", "POST", "/v1/models/cosine:predict",
     body({"instances": [{"values": WINDOW}]}), 400, "instances[0].values: unknown input"),
    ("row object without the input", "POST", "/v1/models/imdb:predict",
     body({"instances": [{}]}), 400, "instances[0].token_ids: required input is missing"),
    ("columnar object without the input", "POST", "/v1/models/imdb:predict",
     body({"inputs": {}}), 400, "inputs.token_ids: required input is missing"),
    ("one row not wrapped in a list", "POST", "/v1/models/imdb:predict",
     body({"instances": IDS[0]}), 400, "instances: expected shape [n, 500] (int32), got [500]"),
    ("rows wrapped once too often", "POST", "/v1/models/imdb:predict",
     body({"inputs": [IDS]}), 400, "inputs: expected shape [n, 500] (int32), got [1, 1, 500]"),
    ("ids to the text signature", "POST", "/v1/models/imdb:predict",
     body({"signature_name": "predict_text", "instances": IDS}), 400,
     "instances[0]: expected a string"),
    # ---- shapes and sizes
    ("ragged rows", "POST", "/v1/models/cosine:predict",
     body({"instances": [WINDOW, WINDOW[:3]]}), 400, "nested lists must be rectangular"),
    ("ragged deeper", "POST", "/v1/models/mnist:predict",
     body({"instances": [[[[0.5]] * 28] * 27 + [[[0.5]] * 3]]}), 400,
     "nested lists must be rectangular"),
    ("row far wider than the signature", "POST", "/v1/models/cosine:predict",
     body({"instances": [[0] * 100_000]}), 400,
     "instances: expected shape [n, 10] (float32), got [1, 100000]"),
    ("too many rows", "POST", "/v1/models/cosine:predict", body({"instances": [WINDOW] * 65}),
     413, "instances: 65 rows exceed the cap of 64"),
    ("body over the cap", "POST", "/v1/models/cosine:predict",
     {"content": b'{"instances": [' + b"0," * (4 * 1024 * 1024 + 1) + b"0]}"}, 413,
     "request body: exceeds the cap"),
    ("no rows", "POST", "/v1/models/cosine:predict", body({"instances": []}), 400,
     "instances: must not be empty"),
    ("empty rows", "POST", "/v1/models/cosine:predict", body({"inputs": [[]]}), 400,
     "inputs:"),
    ("text over the cap", "POST", "/v1/models/reuters:predict",
     body({"signature_name": "predict_text", "instances": ["a" * 20_001]}), 413,
     "instances[0]: 20001 characters exceed the cap of 20000"),
    ("blank text", "POST", "/v1/models/translator:predict",
     body({"signature_name": "translate", "inputs": [" \t\n"]}), 400,
     "inputs[0]: must not be empty"),
    # ---- values
    ("nan", "POST", "/v1/models/cosine:predict", body({"instances": [[float("nan")] * 10]}),
     400, "instances: must not contain NaN or infinity"),
    ("infinity", "POST", "/v1/models/cosine:predict",
     body({"inputs": [[float("-inf")] * 10]}), 400, "inputs: must not contain NaN or infinity"),
    ("float beyond float64", "POST", "/v1/models/cosine:predict",
     {"content": b'{"instances": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 1e400]]}'}, 400,
     "must not contain NaN or infinity"),
    ("token ids outside the vocabulary", "POST", "/v1/models/imdb:predict",
     body({"instances": [[10_000] * 500]}), 400, "token ids must be in 0..9999"),
    ("negative token ids", "POST", "/v1/models/reuters:predict",
     body({"instances": [[-1] * 200]}), 400, "token ids must be in 0.."),
    ("uint8 over 255", "POST", "/v1/models/mnist:predict",
     body({"signature_name": "predict_images", "instances": [[[[256]] * 28] * 28]}), 400,
     "values must fit uint8 (0..255)"),
    ("pixels above 1", "POST", "/v1/models/cifar:predict",
     body({"instances": [[[[2.0] * 3] * 32] * 32]}), 400, "pixels must be in [0, 1]"),
    # ---- names, versions, routes
    ("unknown model", "POST", "/v1/models/nope:predict", body({"instances": IDS}), 404,
     "model 'nope' is not served"),
    ("model name not utf-8", "POST", "/v1/models/%FF:predict", body({"instances": IDS}), 404,
     "is not served"),
    ("model name with a NUL", "GET", "/v1/models/%00/metadata", {}, 404, "is not served"),
    ("very long model name", "GET", "/v1/models/" + "m" * 10_000, {}, 404, "is not served"),
    ("unknown signature_name", "POST", "/v1/models/imdb:predict",
     body({"signature_name": "nope", "instances": IDS}), 404,
     "signature_name: model 'imdb' has no signature 'nope'"),
    ("unknown version", "POST", "/v1/models/imdb/versions/99:predict", body({"instances": IDS}),
     404, "99"),
    # 400 (not a version number) or 404 (no such version): both are a client's error.
    ("version not a number", "GET", "/v1/models/imdb/versions/abc", {}, (400, 404), "abc"),
    ("negative version", "GET", "/v1/models/imdb/versions/-1/metadata", {}, (400, 404), "-1"),
    ("classify (not served over REST)", "POST", "/v1/models/imdb:classify",
     body({"examples": [{"text": "a"}]}), 404, NOT_SERVED),
    ("regress (not served over REST)", "POST", "/v1/models/cosine:regress",
     body({"examples": [{"window": WINDOW}]}), 404, NOT_SERVED),
    ("classify on a version", "POST", "/v1/models/imdb/versions/1:classify", body({}), 404,
     NOT_SERVED),
    ("unknown verb", "POST", "/v1/models/imdb:explain", body({"instances": IDS}), 404,
     NOT_SERVED),
    ("predict by GET", "GET", "/v1/models/imdb:predict", {}, 404, "is not served"),
    ("predict by PUT", "PUT", "/v1/models/imdb:predict", body({"instances": IDS}), 404,
     NOT_SERVED),
    ("status by POST", "POST", "/v1/models/imdb", body({}), 404, NOT_SERVED),
    ("status by PATCH", "PATCH", "/v1/models/imdb", body({}), 405, "Method Not Allowed"),
    ("metadata with a suffix", "GET", "/v1/models/imdb/metadata/extra", {}, 404, NOT_SERVED),
    ("model list", "GET", "/v1/models", {}, 404, NOT_SERVED),
    ("empty model name", "GET", "/v1/models//metadata", {}, 404, NOT_SERVED),
]  # fmt: skip


def image(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format=fmt)
    return buffer.getvalue()


def form(*files: tuple[str, bytes], **fields: str) -> dict[str, t.Any]:
    """A multipart body: ``files`` as (field, content) uploads, ``fields`` as plain fields."""
    uploads = [(name, ("a.png", content, "image/png")) for name, content in files]
    return {"files": uploads or [("images", ("a.png", image((3, 3)), "image/png"))], "data": fields}


def raw_form(part: bytes, boundary: str = "xyz") -> dict[str, t.Any]:
    content = b"--xyz\r\n" + part + b"\r\n--xyz--\r\n"
    return {
        "content": content,
        "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
    }


# Friendly endpoints' multipart uploads: /docs.json describes their JSON body only.
FORM_ROWS = [
    ("form top_k of 5000 digits", "POST", "/mnist/classify", form(top_k="1" * 5000), 400,
     "top_k: Unable to parse input string as an integer"),
    ("form top_k nested too deeply", "POST", "/mnist/classify", form(top_k="[" * 100_000), 400,
     "top_k: Input should be a valid integer"),
    ("form top_k as a file", "POST", "/cifar/classify",
     form(("images", image((3, 3))), ("top_k", b"2")), 400, "top_k: Input should be a valid integer"),
    ("form images as a plain field", "POST", "/mnist/classify",
     raw_form(b'Content-Disposition: form-data; name="images"\r\n\r\nabc'), 400,
     "images[0]: expected numbers only"),
    ("form unknown field", "POST", "/mnist/classify", form(colour="red"), 400,
     "colour: unknown field"),
    ("form too many files", "POST", "/mnist/classify", form(*[("images", image((3, 3)))] * 65),
     413, "Too many files"),
    ("form too many fields", "POST", "/mnist/classify", form(**{f"f{i}": "1" for i in range(17)}),
     400, "Too many fields"),
    ("form field over 1 MB", "POST", "/mnist/classify", form(top_k="1" * (1024 * 1024 + 1)), 400,
     "exceeded maximum size of 1024KB"),
    ("form part without a name", "POST", "/mnist/classify",
     raw_form(b'Content-Disposition: form-data\r\n\r\n1'), 400, "not a valid multipart form"),
    ("form boundary missing", "POST", "/mnist/classify", raw_form(b"", boundary=""), 400,
     "not a valid multipart form"),
    ("form of garbage", "POST", "/cifar/classify", raw_form(b"\xff" * 64), 400,
     "not a valid multipart form"),
    ("form TIFF upload", "POST", "/cifar/classify", form(("images", image((3, 3), "TIFF"))), 400,
     "images[0]: TIFF images are not accepted"),
    ("form truncated PNG", "POST", "/cifar/classify", form(("images", image((3, 3))[:30])), 400,
     "images[0]: not a decodable PNG or JPEG image"),
    ("form image side over the cap", "POST", "/mnist/classify",
     form(("images", image((5000, 1)))), 413, "images[0]: 5000x1 pixels exceed the cap of 4096"),
    ("form to a JSON endpoint", "POST", "/translate", form(sentences="a"), 415,
     "takes a JSON body"),
]  # fmt: skip
ROWS = REST_ROWS + FORM_ROWS


@pytest.mark.parametrize(
    ("case", "method", "path", "kwargs", "status", "fragment"),
    ROWS,
    ids=[row[0] for row in ROWS],
)
def test_malformed_request_is_a_4xx(http, case, method, path, kwargs, status, fragment):
    response = http.request(method, path, **kwargs)
    assert_client_error_shape(response.status_code, response.content, case)
    assert response.status_code in (status if isinstance(status, tuple) else (status,)), (
        response.text
    )
    assert fragment in response.json()["error"], response.json()["error"]


# ---------------------------------------------------------------- TF Serving REST, fuzzed

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included: TF Serving's JSON accepts them
    st.text(max_size=8),  # no lone surrogates: see test_known_rest_bugs_answer_a_4xx
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
# Rows close to a real signature's shape, so the fuzz also reaches the value checks.
_ROWS = st.sampled_from([10, 11, 200, 500]).flatmap(
    lambda width: st.lists(
        st.lists(st.one_of(st.integers(-5, 20_000), st.floats(-2, 300)), min_size=width,
                 max_size=width),
        min_size=1,
        max_size=3,
    )
)  # fmt: skip
_IMAGES = st.sampled_from([(28, 28, 1), (32, 32, 3)]).flatmap(
    lambda shape: st.lists(
        st.one_of(st.integers(-1, 256), st.floats(-0.5, 1.5)), min_size=1, max_size=3
    ).map(lambda pixels: [[[[pixels[0]] * shape[2]] * shape[1]] * shape[0]] * len(pixels))
)
_TENSOR = st.one_of(_JSON, _ROWS, _IMAGES, st.lists(st.text(min_size=0, max_size=30), max_size=3))
_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "signature_name": st.one_of(
                st.sampled_from(["serving_default", "predict_text", "predict_images", "forecast",
                                 "translate", ""]),
                _JSON,
            ),
            "instances": _TENSOR,
            "inputs": st.one_of(_TENSOR, st.dictionaries(st.text(max_size=12), _TENSOR,
                                                         max_size=2)),
        },
    ).map(lambda payload: json.dumps(payload, allow_nan=True).encode()),
    _JSON.map(lambda payload: json.dumps(payload, allow_nan=True).encode()),
    st.binary(max_size=64),
)  # fmt: skip
_NAMES = st.one_of(st.sampled_from(MODELS), st.text(min_size=1, max_size=12))
_VERSIONS = st.one_of(st.none(), st.sampled_from(["1", "2", "0", "-1", "x"]))
_SUFFIXES = st.sampled_from([":predict", ":classify", ":regress", "", "/metadata", ":", "/"])


def _path(name: str, version: str | None, suffix: str) -> str:
    versioned = f"/versions/{version}" if version else ""
    return f"/v1/models/{urllib.parse.quote(name, safe='')}{versioned}{suffix}"


def test_random_tfserving_requests_are_answered_or_a_4xx(http):
    @fuzz_settings(examples=400)
    @given(
        method=st.sampled_from(["POST", "GET"]),
        name=_NAMES,
        version=_VERSIONS,
        suffix=_SUFFIXES,
        content=_BODIES,
    )
    def fuzz(method: str, name: str, version: str | None, suffix: str, content: bytes) -> None:
        path = _path(name, version, suffix)
        response = http.request(method, path, content=content if method == "POST" else None)
        assert_client_error_shape(response.status_code, response.content, f"{method} {path}")

    fuzz()


# ---------------------------------------------------------------- afterwards


def test_no_traceback_and_no_5xx_from_these_requests(server, http, log_start):
    with server.log.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]
    errors = [line for line in text.splitlines() if "[ERROR]" in line]
    assert not errors, errors[:10]
    metrics = http.get("/metrics").text
    failed = re.findall(
        r'keras_serving_requests_total\{code="5\d\d",door="(?:rest|tfserving)"[^}]*\} (\S+)',
        metrics,
    )
    assert all(float(count) == 0 for count in failed), failed
    assert http.get("/readyz").status_code == 200
