"""TensorFlow Serving's REST API (``/v1/models/...``), so stock TF Serving clients work.

Implements, with TF Serving's JSON shapes and its ``{"error": "..."}`` error body:

* ``GET  /v1/models/{name}[/versions/{n}|/labels/{label}]``: every version's state;
* ``GET  /v1/models/{name}[/versions/{n}|/labels/{label}]/metadata``: signature defs;
* ``POST /v1/models/{name}[/versions/{n}|/labels/{label}]:predict``: row (``instances``) or columnar
  (``inputs``) requests, optional ``signature_name``; strings as JSON strings or
  ``{"b64": "..."}``.

The codec functions are pure (JSON <-> numpy); the Starlette routes at the bottom reach the
service through ``bentoml.get_current_service()`` and the same
:class:`~service.served_model.ServedModel` (and so the same batch queues) as every other door.
"""

from __future__ import annotations

import functools
import json
import logging
import typing as t

import bentoml
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.catalog import TENSOR_SIGNATURE, ModelInfo, SignatureSpec, TensorSpec
from service.client_text import clip, parse_version
from service.errors import (
    InvalidInput,
    ModelNotFound,
    ServingError,
    error_response,
    internal_error_response,
    log_refusal,
)
from service.inputs import check_batch, tensor_from_json
from service.metrics import track
from tfserving_api.tensors import DT_NAMES

logger = logging.getLogger("bentoml.keras_serving.tfserving")

PREDICT_FIELDS = ("signature_name", "instances", "inputs")
# Every prediction response names the version that answered (TF Serving's JSON has no field).
VERSION_HEADER = "X-Model-Version"
_DT = DT_NAMES  # "float32" -> "DT_FLOAT"


# ---------------------------------------------------------------- codec


def parse_predict_request(
    body: bytes, info: ModelInfo, max_rows: int, max_text_chars: int = 20_000
) -> tuple[SignatureSpec, np.ndarray, str]:
    """A ``:predict`` body -> (signature, validated batch, ``"row"`` or ``"columnar"``).

    Raises:
        InvalidInput: malformed JSON, fields, types, shapes or values.
        PayloadTooLarge: more rows than ``max_rows``.
        ModelNotFound: unknown ``signature_name``.
    """
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or a 5000-digit int
        raise InvalidInput(f"request body: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidInput("request body: JSON nested too deeply") from None
    if not isinstance(payload, dict):
        raise InvalidInput("request body: expected a JSON object with 'instances' or 'inputs'")
    for key in payload:
        if key not in PREDICT_FIELDS:
            raise InvalidInput(
                f"{clip(key)}: unknown field (accepted: {', '.join(PREDICT_FIELDS)})"
            )
    name = payload.get("signature_name", TENSOR_SIGNATURE)
    if not isinstance(name, str):
        raise InvalidInput("signature_name: expected a string")
    signature = info.signature(name)
    tensor = signature.input
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInput(
            "request body: exactly one of 'instances' (row format) or 'inputs' (columnar format) is required"
        )
    vocab = info.vocab_size if name == TENSOR_SIGNATURE and tensor.dtype.startswith("int") else None
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list):
            raise InvalidInput("instances: expected a list of rows")
        values = [_row_value(row, tensor, f"instances[{i}]") for i, row in enumerate(rows)]
        array = tensor_from_json(values, tensor, "instances", max_rows)
        return (
            signature,
            check_batch(array, tensor, "instances", max_rows, vocab, max_text_chars),
            "row",
        )
    value = _named_value(payload["inputs"], tensor, "inputs")
    array = tensor_from_json(value, tensor, "inputs", max_rows)
    return (
        signature,
        check_batch(array, tensor, "inputs", max_rows, vocab, max_text_chars),
        "columnar",
    )


def _row_value(row: t.Any, tensor: TensorSpec, field: str) -> t.Any:
    if isinstance(row, dict) and not (tensor.dtype == "string" and set(row) == {"b64"}):
        return _named_value(row, tensor, field)
    return row


def _named_value(value: t.Any, tensor: TensorSpec, field: str) -> t.Any:
    """``{"token_ids": x}`` -> ``x``; a bare value is the only input's value."""
    if not isinstance(value, dict) or (tensor.dtype == "string" and set(value) == {"b64"}):
        return value
    unknown = [k for k in value if k != tensor.name]
    if unknown:
        raise InvalidInput(
            f"{field}.{clip(unknown[0])}: unknown input (the signature takes '{tensor.name}')"
        )
    if tensor.name not in value:
        raise InvalidInput(f"{field}.{tensor.name}: required input is missing")
    return value[tensor.name]


def _plain(column: np.ndarray) -> list[t.Any]:
    if column.dtype == object:  # tf.string -> bytes; every string output here is UTF-8 text
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(
            column
        ).tolist()
    return column.tolist()


def format_predict_response(
    outputs: t.Mapping[str, np.ndarray], signature: SignatureSpec, fmt: str
) -> dict[str, t.Any]:
    """Model outputs (numpy columns) -> ``{"predictions": ...}`` (row) or ``{"outputs": ...}``
    (columnar), collapsing to bare values when the signature has a single output, as TF
    Serving does."""
    keys = [k for k in signature.outputs if k in outputs]
    columns = {k: _plain(outputs[k]) for k in keys}
    if fmt == "row":
        if len(keys) == 1:
            return {"predictions": columns[keys[0]]}
        rows = len(columns[keys[0]]) if keys else 0
        return {"predictions": [{k: columns[k][i] for k in keys} for i in range(rows)]}
    if len(keys) == 1:
        return {"outputs": columns[keys[0]]}
    return {"outputs": columns}


def model_status(rows: t.Iterable[tuple[int, str, str | None]]) -> dict[str, t.Any]:
    """``GET /v1/models/{name}``: every version's state, with the error of a failed load
    (TF Serving reports those as ``UNKNOWN``)."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": state,
                "status": {
                    "error_code": "UNKNOWN" if error else "OK",
                    "error_message": error or "",
                },
            }
            for version, state, error in rows
        ]
    }


def _tensor_info(spec: TensorSpec, signature: str) -> dict[str, t.Any]:
    return {
        "dtype": _DT.get(spec.dtype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": f"{signature}_{spec.name}:0",
    }


def model_metadata(info: ModelInfo) -> dict[str, t.Any]:
    """``GET /v1/models/{name}/metadata``: TF Serving's GetModelMetadata as JSON."""
    signature_def = {
        name: {
            "inputs": {k: _tensor_info(v, name) for k, v in spec.inputs.items()},
            "outputs": {k: _tensor_info(v, name) for k, v in spec.outputs.items()},
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
        for name, spec in info.signatures.items()
    }
    metadata: dict[str, t.Any] = {"signature_def": {"signature_def": signature_def}}
    if info.labels:  # class names in index order, like the gRPC door's metadata["labels"]
        metadata["labels"] = list(info.labels)
    return {
        "model_spec": {"name": info.name, "signature_name": "", "version": str(info.version)},
        "metadata": metadata,
    }


# ---------------------------------------------------------------- routes


def _json_errors(handler: t.Callable[[Request], t.Awaitable[JSONResponse]]):
    @functools.wraps(handler)
    async def wrapper(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except ServingError as exc:
            log_refusal(exc, "tfserving", f"{request.method} {clip(request.url.path)}")
            return error_response(exc)
        except Exception:
            logger.exception("%s %s failed", request.method, clip(request.url.path))
            return internal_error_response()

    return wrapper


def _server() -> t.Any:
    return bentoml.get_current_service()


def _selector(request: Request) -> tuple[int | None, str | None]:
    """The ``/versions/{n}`` (ASCII digits only) or ``/labels/{label}`` of the path, if any.

    Raises:
        InvalidInput: a version that is not a number (``"²"`` is a digit to ``str.isdigit``).
    """
    version = request.path_params.get("version")
    number = None if version is None else parse_version(version)
    return number, request.path_params.get("label")


def _model(request: Request) -> t.Any:
    version, label = _selector(request)
    return _server().model(request.path_params["name"], version, label)


@_json_errors
async def status_view(request: Request) -> JSONResponse:
    server = _server()
    name = request.path_params["name"]
    versions = server.models.get(name)
    if versions is None:
        server.model(name)  # ModelNotFound naming the served models
    rows = versions.status()
    version, label = _selector(request)
    if version is not None or label is not None:
        # A version's status, whatever its state (a failed one reports its error).
        wanted = versions.config.labels.get(label) if label is not None else None
        if label is not None and wanted is None:
            versions.get(label=label)  # ModelNotFound naming the labels
        if version is not None:
            wanted = version
        rows = [row for row in rows if row[0] == wanted]
        if not rows:
            versions.get(version=wanted)  # ModelNotFound naming the versions
    return JSONResponse(model_status(rows))


@_json_errors
async def metadata_view(request: Request) -> JSONResponse:
    return JSONResponse(model_metadata(_model(request).info))


@_json_errors
async def predict_view(request: Request) -> JSONResponse:
    server = _server()
    name = request.path_params["name"]
    with track(name if name in server.models else "unknown", "tfserving"):
        body = await request.body()
        client = _model(request)  # after the body: no wait between choosing and queueing
        signature, batch, fmt = parse_predict_request(
            body, client.info, server.settings.max_items, server.settings.max_text_chars
        )
        outputs = await client.run(signature.name, batch)
    response = JSONResponse(format_predict_response(outputs, signature, fmt))
    response.headers[VERSION_HEADER] = str(client.info.version)
    return response


@_json_errors
async def not_found_view(request: Request) -> JSONResponse:
    raise ModelNotFound(
        f"{request.method} {clip(request.url.path)}: no such TF Serving endpoint "
        "(GET /v1/models/{name}[/versions/{n}|/labels/{label}][/metadata], "
        "POST /v1/models/{name}[/versions/{n}|/labels/{label}]:predict)"
    )


# Served by service/http_router.py ahead of BentoML's own routes: every route with no
# version, /versions/{n} and /labels/{label}, as TF Serving.
_PREFIXES = (
    "/v1/models/{name}",
    "/v1/models/{name}/versions/{version}",
    "/v1/models/{name}/labels/{label}",
)
routes = [
    *(Route(f"{p}:predict", predict_view, methods=["POST"]) for p in _PREFIXES),
    *(Route(f"{p}/metadata", metadata_view, methods=["GET"]) for p in _PREFIXES),
    *(Route(p, status_view, methods=["GET"]) for p in _PREFIXES[::-1]),
    Route("/v1/{path:path}", not_found_view, methods=["GET", "POST", "PUT", "DELETE"]),
]
