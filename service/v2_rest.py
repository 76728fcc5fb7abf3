"""The Open Inference Protocol's HTTP/REST API (``/v2/...``), so Triton's and KServe's
clients work unchanged.

* ``GET  /v2``: server name, version and extensions (``binary_tensor_data``,
  ``model_repository``);
* ``GET  /v2/health/live``, ``/v2/health/ready`` (200, or 503 until every model of every
  worker is warm);
* ``GET  /v2/models/{m}[/versions/{v}|/labels/{label}]``: metadata of the default signature;
* ``GET  /v2/models/{m}[/versions/{v}|/labels/{label}]/ready``;
* ``POST /v2/repository/index``, ``/v2/repository/models/{m}/load`` and ``/unload``: the
  model repository extension, admin calls (:mod:`service.v2_repository`);
* ``POST /v2/models/{m}[/versions/{v}|/labels/{label}]/infer``: JSON ``data`` or the binary
  tensor data extension (the body split at ``Inference-Header-Content-Length``;
  ``binary_data_size`` per input, ``binary_data`` / ``binary_data_output`` for outputs),
  ``outputs`` honoured (with Triton's ``classification`` parameter: the best classes as
  BYTES), ``id`` echoed, the ``signature_name`` parameter, other parameters ignored. A version that is not a number names a version label (``/versions/stable``).

Errors are ``{"error": "..."}`` with the statuses of the other doors (``service/errors.py``);
requests are counted with door ``v2`` and go through the same
:class:`~service.served_model.ServedModel` and batch queues as every other door.
"""

from __future__ import annotations

import functools
import json
import logging
import typing as t

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import v2_codec as v2
from service import v2_repository as repository
from service.auth import require_admin_header
from service.client_text import clip
from service.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    NotReady,
    ServingError,
    error_response,
    internal_error_response,
    log_refusal,
)
from service.grpc_codec import Limits
from service.metrics import track
from tfserving_api.open_inference import to_json, to_raw

logger = logging.getLogger("bentoml.keras_serving.v2")

DOOR = "v2"
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = (
    v2.BINARY_EXTENSION, v2.CLASSIFICATION_EXTENSION, repository.REPOSITORY_EXTENSION
)
REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
INPUT_FIELDS = ("name", "datatype", "shape", "parameters", "data")
OUTPUT_FIELDS = ("name", "parameters")


# ---------------------------------------------------------------- codec


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tensor data after it (empty without the header).

    Raises:
        InvalidInput: the header is not a byte count within the body.
    """
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidInput(
            f"Inference-Header-Content-Length: expected a byte count, got {v2.quote(text)}"
        )
    size = int(text)
    if size > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length: {size} exceeds the body's {len(body)} bytes"
        )
    view = memoryview(body)
    return bytes(view[:size]), view[size:]


def _object(value: t.Any, where: str, allowed: t.Sequence[str]) -> dict[str, t.Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object")
    for key in value:
        if key not in allowed:
            raise InvalidInput(
                f"{where}.{clip(key)}: "
                f"unknown field (accepted: {', '.join(allowed)})"
            )
    return value


def _parameters(owner: dict[str, t.Any], where: str) -> dict[str, t.Any]:
    parameters = owner.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}.parameters: expected a JSON object")
    return parameters


def _flag(parameters: dict[str, t.Any], key: str, where: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}.parameters.{key}: expected true or false")
    return value


def parse_infer_request(
    body: bytes, header_length: str | None
) -> tuple[v2.InferRequest, dict[str, bool], bool]:
    """An ``/infer`` body -> the request, each requested output's ``binary_data`` and the
    default for the others (``binary_data_output``). Binary contents are sliced (not copied
    or decoded) here, their sizes checked against the body.

    Raises:
        InvalidInput: malformed JSON, fields, parameters or binary sizes.
    """
    header, binary = split_body(body, header_length)
    try:
        payload = json.loads(header or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body: not valid JSON ({str(exc)[:200]})") from None
    except RecursionError:
        raise InvalidInput("request body: JSON nested too deeply") from None
    if not isinstance(payload, dict):
        raise InvalidInput("request body: expected a JSON object with 'inputs'")
    _object(payload, "request body", REQUEST_FIELDS)
    request_id = payload.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput("id: expected a string")
    parameters = _parameters(payload, "request body")
    binary_default = _flag(parameters, "binary_data_output", "request body", False)
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInput("inputs: required, a list of input tensors")
    inputs, offset = [], 0
    for index, item in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        _object(item, where, INPUT_FIELDS)
        tensor = v2.InputTensor(
            field=where, name=item.get("name"), datatype=item.get("datatype"),
            shape=item.get("shape"),
        )  # fmt: skip
        size = _parameters(item, where).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"{where}.parameters.binary_data_size: expected a byte count")
            if "data" in item:
                raise InvalidInput(f"{where}: both 'data' and parameters.binary_data_size")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{where}.parameters.binary_data_size: {size} bytes claimed, "
                    f"{len(binary) - offset} left after the JSON header"
                )
            tensor.raw = binary[offset : offset + size]
            offset += size
        elif "data" in item:
            tensor.data = item["data"]
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"request body: {len(binary) - offset} bytes after the JSON header belong to no "
            "input (parameters.binary_data_size)"
        )
    raw_outputs = payload.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidInput("outputs: expected a list of requested outputs")
    names: list[tuple[str, t.Any]] = []
    binary_outputs: dict[str, bool] = {}
    classification: dict[str, tuple[str, t.Any]] = {}
    for index, item in enumerate(raw_outputs):
        where = f"outputs[{index}]"
        _object(item, where, OUTPUT_FIELDS)
        names.append((where, item.get("name")))
        output_parameters = _parameters(item, where)
        flag = _flag(output_parameters, "binary_data", where, binary_default)
        if isinstance(item.get("name"), str):
            binary_outputs[item["name"]] = flag
            if "classification" in output_parameters:
                classification[item["name"]] = (where, output_parameters["classification"])
    signature = parameters.get(v2.SIGNATURE_PARAMETER)
    request = v2.InferRequest(
        inputs=inputs, outputs=names, id=request_id, signature_name=signature,
        classification=classification,
    )  # fmt: skip
    return request, binary_outputs, binary_default


def infer_response(
    model: t.Any,
    signature: t.Any,
    outputs: t.Mapping[str, t.Any],
    names: t.Sequence[str],
    binary: t.Mapping[str, bool],
    binary_default: bool,
    request_id: str,
    classes: t.Mapping[str, int] | None = None,
) -> Response:
    """The ``/infer`` answer: JSON ``data``, or the JSON header followed by the binary
    outputs, with ``Inference-Header-Content-Length`` giving the header's size."""
    tensors, parts = [], []
    classes = classes or {}
    for name in names:
        row, array = v2.output_tensor(
            outputs, signature, name, classes.get(name), model.info.labels
        )
        tensor: dict[str, t.Any] = {
            "name": name, "datatype": row.name, "shape": list(array.shape)
        }  # fmt: skip
        if binary.get(name, binary_default):
            data = to_raw(array, row)
            tensor["parameters"] = {"binary_data_size": len(data)}
            parts.append(data)
        else:
            tensor["data"] = to_json(array, row)
        tensors.append(tensor)
    answer: dict[str, t.Any] = {
        "model_name": model.info.name,
        "model_version": str(model.info.version),
    }
    if request_id:
        answer["id"] = request_id
    answer["parameters"] = {v2.SIGNATURE_PARAMETER: signature.name}
    answer["outputs"] = tensors
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not parts:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *parts]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# ---------------------------------------------------------------- routes


def _json_errors(handler: t.Callable[[Request], t.Awaitable[Response]]):
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ServingError as exc:
            log_refusal(exc, DOOR, f"{request.method} {request.url.path}")
            return error_response(exc)
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            return internal_error_response()

    return wrapper


def _server() -> t.Any:
    return bentoml.get_current_service()


def resolve(server: t.Any, name: str, version: str | None, label: str | None) -> t.Any:
    """The version answering ``name`` at ``version`` (a V2 version is a string: one that is
    not a number names a version label) or ``label``."""
    if version is not None and not (version.isascii() and version.isdigit()):
        version, label = None, version
    return server.model(name, version, label)


def _model(request: Request) -> t.Any:
    params = request.path_params
    return resolve(_server(), params["name"], params.get("version"), params.get("label"))


def limits(server: t.Any) -> Limits:
    settings = server.settings
    return Limits(settings.max_items, settings.max_body_bytes, settings.max_text_chars)


@_json_errors
async def server_metadata_view(request: Request) -> Response:
    return JSONResponse(v2.server_metadata(EXTENSIONS))


@_json_errors
async def live_view(request: Request) -> Response:
    return JSONResponse({"live": True})


@_json_errors
async def ready_view(request: Request) -> Response:
    if _server().ready():
        return JSONResponse({"ready": True})
    message = "not every model of every worker is loaded and warmed up yet"
    return JSONResponse({"ready": False, "error": message}, status_code=503)


@_json_errors
async def model_ready_view(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        model = _model(request)
    except NotReady as exc:
        return JSONResponse({"name": name, "ready": False, "error": exc.message}, 503)
    if not model.ready:  # resolved just as it started unloading
        return JSONResponse({"name": name, "ready": False}, 503)
    return JSONResponse({"name": name, "ready": True})


@_json_errors
async def model_metadata_view(request: Request) -> Response:
    model = _model(request)
    versions = _server().models[model.info.name]
    served = [v for v, state, _ in versions.status() if state == "AVAILABLE"]
    return JSONResponse(v2.model_metadata(model.info, served))


@_json_errors
async def infer_view(request: Request) -> Response:
    server = _server()
    name = request.path_params["name"]
    with track(name if name in server.models else "unknown", DOOR):
        body = await request.body()
        model = _model(request)  # after the body: no wait between choosing and queueing
        parsed, binary, binary_default = parse_infer_request(
            body, request.headers.get(HEADER_LENGTH)
        )
        signature = v2.choose_signature(model.info, parsed.signature_name, parsed.input_names)
        names = v2.select_outputs(signature, parsed.outputs)
        classes = v2.class_counts(signature, parsed.classification)
        batch = v2.decode_inputs(parsed.inputs, signature, limits(server), model.info.vocab_size)
        outputs = await model.run(signature.name, batch)
    return infer_response(
        model, signature, outputs, names, binary, binary_default, parsed.id, classes
    )


def _optional_object(body: bytes, allowed: t.Sequence[str]) -> dict[str, t.Any]:
    """An optional JSON object body (empty: ``{}``) with only ``allowed`` fields."""
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"request body: not valid JSON ({clip(exc)})") from None
    return _object(payload, "request body", allowed)


@_json_errors
async def repository_index_view(request: Request) -> Response:
    require_admin_header(request.headers.get("authorization"), "RepositoryIndex")
    payload = _optional_object(await request.body(), ("repository_name", "ready"))
    ready = payload.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput("ready: expected true or false")
    return JSONResponse(repository.repository_index(_server().models, ready))


@_json_errors
async def repository_load_view(request: Request) -> Response:
    require_admin_header(request.headers.get("authorization"), "RepositoryModelLoad")
    server = _server()
    payload = _optional_object(await request.body(), ("parameters",))
    parameters = _parameters(payload, "request body")
    config = repository.load_config(
        server.engine.config,
        request.path_params["name"],
        server.models,
        repository.config_parameter(parameters),
    )
    try:
        await server.engine.reload(config)
    except TimeoutError as exc:
        raise DeadlineExceeded(f"config: {exc}") from None
    return JSONResponse({})


@_json_errors
async def repository_unload_view(request: Request) -> Response:
    require_admin_header(request.headers.get("authorization"), "RepositoryModelUnload")
    repository.refuse_unload(request.path_params["name"], _server().models)


@_json_errors
async def not_found_view(request: Request) -> Response:
    raise ModelNotFound(
        f"{request.method} {request.url.path}: no such Open Inference Protocol endpoint "
        "(GET /v2, /v2/health/live, /v2/health/ready, "
        "/v2/models/{name}[/versions/{v}|/labels/{label}][/ready], "
        "POST /v2/models/{name}[/versions/{v}|/labels/{label}]/infer, "
        "POST /v2/repository/index, /v2/repository/models/{name}/load|unload)"
    )


_PREFIXES = (
    "/v2/models/{name}",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/labels/{label}",
)
# Served by service/http_router.py ahead of BentoML's own routes.
routes = [
    Route("/v2", server_metadata_view, methods=["GET"]),
    Route("/v2/health/live", live_view, methods=["GET"]),
    Route("/v2/health/ready", ready_view, methods=["GET"]),
    Route("/v2/repository/index", repository_index_view, methods=["POST"]),
    Route("/v2/repository/models/{name}/load", repository_load_view, methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", repository_unload_view, methods=["POST"]),
    *(Route(f"{p}/infer", infer_view, methods=["POST"]) for p in _PREFIXES),
    *(Route(f"{p}/ready", model_ready_view, methods=["GET"]) for p in _PREFIXES),
    *(Route(p, model_metadata_view, methods=["GET"]) for p in _PREFIXES),
    Route("/v2/{path:path}", not_found_view, methods=["GET", "POST", "PUT", "DELETE"]),
]
