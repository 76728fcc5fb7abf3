"""The ``hostile`` chaos family (issue 15): every probe of the issue's table, replayed
against a real ``bentoml serve`` with one worker (imdb and cifar), one row per probe.

Probes, in order (verdicts in :mod:`loadtest.hostile_verdicts`):

* a gRPC ``Predict`` whose ``DT_STRING`` ``tensor_content`` is 256,000 x ``0xff`` then
  ``0x01`` (a varint that never ends), and the same at 8 MB (refused within 0.5 s);
* 64 PNGs of 4096 x 4096 in one multipart POST to ``/cifar/classify`` (413 / 400);
* 1,000 GETs to distinct unknown 4 KB paths: all 404, ``/metrics`` under 100 KB larger;
* ``GET /v1/models/imdb/versions/%C2%B2``: 400, not a 500;
* the Open Inference Protocol's doors: an imdb ``/v2/.../infer`` whose BYTES input of 64
  elements is followed by 8 MB of length prefixes (400 within 0.5 s), a ``ModelInfer``
  claiming 2^62 rows in 40 bytes (RESOURCE_EXHAUSTED), and
  ``GET /v2/models/imdb/versions/%C2%B2`` (404: a version that is not a number is a label);
* 300 connections that send one header line a second and never finish their headers: all
  closed by the server after ``SERVICE_HEADER_TIMEOUT_S`` (the issue's 3,000 scaled to what
  the 2-core development machine takes next to the server);
* ``HandleReloadConfigRequest`` without the admin token (PERMISSION_DENIED), then with it
  (applied);
* 32 clients at once, 64 reviews each (0 refusals).

While each probe runs, a thread asks ``/livez`` on a new connection every 20 ms; the worst
answer is the row's ``/livez`` column (target 100 ms). New tracebacks in the server log
count against the probe. Called by ``python -m loadtest.chaos --scenarios hostile``.

Typical usage::

    rows = run(args)        # args: loadtest.chaos's (models, buckets, out)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import secrets
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import aiohttp

from loadtest import payloads
from loadtest.chaos_verdicts import Outcome, Row, classify
from loadtest.hostile_verdicts import (
    STRING_REFUSED_S,
    ProbeRow,
    judge_burst,
    judge_metrics,
    judge_probe,
    judge_reload,
    judge_trickle,
    render_probes,
)
from loadtest.generator import answered, timed
from loadtest.live_server import (
    CpuMeter,
    Server,
    grpc_raw,
    poll,
    post,
    serve,
    status_of,
    wait_serving,
)

TRICKLE_CONNECTIONS = 300
HEADER_TIMEOUT_S = 10.0  # the service's default SERVICE_HEADER_TIMEOUT_S
UNKNOWN_PATHS = 1000
BURST_CLIENTS, BURST_REVIEWS = 32, 64
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


class LivezProbe:
    """``GET /livez`` on a new connection every ``every_s`` seconds
    (:func:`loadtest.live_server.poll`), in a thread of its own so that the probes' own
    asyncio loop being busy is not counted as the server's."""

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        self.url, self.every_s = url, every_s
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        running = lambda: not self._stop.is_set()  # noqa: E731
        self.outcomes = asyncio.run(poll(self.url, running, "/livez", self.every_s))

    def __enter__(self) -> LivezProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


class LogWatch:
    """New tracebacks in the server's log since the last look."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0

    def tracebacks(self) -> int:
        with self.log.open("rb") as source:
            source.seek(self.offset)
            new = source.read()
        self.offset += len(new)
        return new.count(b"Traceback (most recent call last)")


# ------------------------------------------------------------------ requests


def string_tensor_request(size: int) -> bytes:
    """An imdb ``Predict`` whose one DT_STRING element's length is a varint of ``size - 1``
    bytes of ``0xff`` then ``0x01``: a decoder that reads varints of any length does
    quadratic work before finding out."""
    from tfserving_api._proto.tensorflow.core.framework import tensor_pb2, types_pb2
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_content=b"\xff" * (size - 1) + b"\x01"
    )
    tensor.tensor_shape.dim.add(size=1)
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "imdb", "predict_text"
    request.inputs["text"].CopyFrom(tensor)
    return request.SerializeToString()


def v2_bytes_flood(size: int = 8_000_000) -> tuple[bytes, int]:
    """An imdb V2 ``/infer`` body in the binary extension: a BYTES input of 64 elements whose
    raw contents are ``size`` bytes of zero lengths (2 million elements' worth): a decoder that
    believed the buffer instead of the shape would build them all. Returns ``(body, JSON
    header length)``."""
    import json

    header = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [64],
                     "parameters": {"binary_data_size": size}}]}
    ).encode()  # fmt: skip
    return header + b"\x00" * size, len(header)


def v2_huge_shape_request() -> bytes:
    """A ``ModelInfer`` for imdb claiming ``[2^62]`` texts in 40 bytes of raw contents."""
    from tfserving_api._proto.inference import grpc_predict_v2_pb2

    request = grpc_predict_v2_pb2.ModelInferRequest(model_name="imdb")
    request.inputs.add(name="text", datatype="BYTES", shape=[2**62])
    request.raw_input_contents.append(b"\x00" * 40)
    return request.SerializeToString()


def big_png(side: int = 4096) -> bytes:
    """One ``side`` x ``side`` RGB PNG (a gradient: small on the wire, 48 MB decoded)."""
    import numpy as np
    from PIL import Image

    row = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.broadcast_to(row[None, :, None], (side, side, 3))
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG")
    return out.getvalue()


async def _post_form(http: aiohttp.ClientSession, path: str, image: bytes, count: int) -> Outcome:
    form = aiohttp.FormData()
    for i in range(count):
        form.add_field("images", image, filename=f"big{i}.png", content_type="image/png")
    return await answered("http", status_of(http.post(path, data=form)))


async def _get(http: aiohttp.ClientSession, path: str) -> Outcome:
    from yarl import URL

    return await answered("http", status_of(http.get(URL(path, encoded=True))))


async def _metrics_bytes(http: aiohttp.ClientSession) -> int:
    async with http.get("/metrics") as response:
        return len(await response.read())


async def _trickle(host: str, port: int, give_up_s: float) -> tuple[Outcome, float | None]:
    """One connection sending a header line a second, never the blank line: when did the
    server close it (None: not within ``give_up_s``)?"""
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return Outcome("http", opened, time.monotonic(), *classify(exc)), None
    closed_after: float | None = None
    try:
        writer.write(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
        line = 0
        while time.monotonic() - opened < give_up_s:
            try:
                data = await asyncio.wait_for(reader.read(1024), 1.0)
                if data == b"":
                    closed_after = time.monotonic() - opened
                    break
            except TimeoutError:
                pass
            writer.write(f"x-trickle-{line}: y\r\n".encode())
            line += 1
            await writer.drain()
    except (ConnectionError, OSError):
        closed_after = time.monotonic() - opened
    finally:
        writer.close()
    status = "closed" if closed_after is not None else "still open"
    return Outcome("http", opened, time.monotonic(), status, ""), closed_after


async def _reload(target: str, token: str | None) -> Outcome:
    import grpc

    from clients.model_config import model_server_config
    from tfserving_api._proto.tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest(config=model_server_config({"imdb": {}}))
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            RELOAD,
            request_serializer=model_management_pb2.ReloadConfigRequest.SerializeToString,
            response_deserializer=model_management_pb2.ReloadConfigResponse.FromString,
        )
        return await timed("grpc", call(request, timeout=300, metadata=metadata))


# ------------------------------------------------------------------ the probes


async def _all(*calls: Awaitable[Outcome]) -> list[Outcome]:
    return list(await asyncio.gather(*calls))


async def run_probes(
    server: Server, log: Path, admin_token: str, models: tuple[str, ...]
) -> tuple[list[ProbeRow], float | None]:
    """Every probe, in the module docstring's order, each under a :class:`LivezProbe`; the
    rows and the other CPU meanwhile."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    target, watch, rows = server.grpc_target, LogWatch(log), []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(server.url, timeout=timeout) as http:
        limit, metrics, closed = asyncio.Semaphore(16), [], []

        async def unknown_paths() -> list[Outcome]:
            async def one(i: int) -> Outcome:
                async with limit:
                    return await _get(http, f"/x{i}" + "a" * 4000)

            metrics.append(await _metrics_bytes(http))
            outcomes = await _all(*(one(i) for i in range(UNKNOWN_PATHS)))
            metrics.append(await _metrics_bytes(http))
            return outcomes

        async def trickle() -> list[Outcome]:
            give_up = HEADER_TIMEOUT_S + 30
            connections = (_trickle(host, int(port), give_up) for _ in range(TRICKLE_CONNECTIONS))
            closed.extend(await asyncio.gather(*connections))
            return [outcome for outcome, _ in closed]

        def trickled(row: ProbeRow, _: list[Outcome]) -> None:
            opened = [after for outcome, after in closed if outcome.status != "connection"]
            judge_trickle(row, len(opened), opened, HEADER_TIMEOUT_S)

        async def reload() -> list[Outcome]:
            return [await _reload(target, None), await _reload(target, admin_token)]

        refused = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
        small, large = string_tensor_request(256_001), string_tensor_request(8_000_000)
        image = await asyncio.to_thread(big_png) if "cifar" in models else b""
        flood, header = v2_bytes_flood()
        flood_headers = {"Inference-Header-Content-Length": str(header)}
        burst = payloads.json_bodies("imdb", BURST_REVIEWS)[0]
        probes = [  # name, its requests, the answers expected, its own time bound, more checks
            ("string tensor: 256,000 x 0xff varint", lambda: _all(grpc_raw(target, small)),
             refused, None, None),
            ("string tensor: 8 MB varint", lambda: _all(grpc_raw(target, large)),
             refused, STRING_REFUSED_S, None),
            (f"64 PNGs of 4096x4096 ({64 * len(image) / 1e6:.1f} MB multipart)",
             (lambda: _all(_post_form(http, "/cifar/classify", image, 64))) if image else None,
             {"413", "400"}, None, None),
            (f"{UNKNOWN_PATHS:,} unknown 4 KB paths", unknown_paths, {"404"}, None,
             lambda row, _: judge_metrics(row, *metrics)),
            ("GET /v1/models/imdb/versions/%C2%B2",
             lambda: _all(_get(http, "/v1/models/imdb/versions/%C2%B2")), {"400"}, None, None),
            ("V2 HTTP: BYTES [64] then 8 MB of length prefixes",
             lambda: _all(post(http, "/v2/models/imdb/infer", flood, flood_headers)),
             {"400"}, STRING_REFUSED_S, None),
            ("V2 gRPC: ModelInfer claiming 2^62 rows in 40 bytes",
             lambda: _all(grpc_raw(target, v2_huge_shape_request(), method=MODEL_INFER)),
             {"RESOURCE_EXHAUSTED"}, None, None),
            ("GET /v2/models/imdb/versions/%C2%B2",
             lambda: _all(_get(http, "/v2/models/imdb/versions/%C2%B2")), {"404"}, None, None),
            (f"{TRICKLE_CONNECTIONS} trickling connections", trickle, {"closed"}, None, trickled),
            ("reload without/with token", reload, set(), None, None),
            (f"{BURST_CLIENTS} clients x {BURST_REVIEWS} reviews at once",
             lambda: _all(*(post(http, "/imdb/sentiment", burst) for _ in range(BURST_CLIENTS))),
             {"200"}, None, judge_burst),
        ]  # fmt: skip
        with CpuMeter(server.pid) as meter:
            for name, run, expected, max_s, then in probes:
                if run is None:  # a probe of a model not served
                    continue
                with LivezProbe(server.url) as livez:
                    outcomes = await run()
                if run is reload:
                    row = judge_reload(*outcomes, livez.outcomes, watch.tracebacks())
                else:
                    row = judge_probe(
                        name, outcomes, expected, livez.outcomes, watch.tracebacks(), max_s
                    )
                if then is not None:
                    then(row, outcomes)
                print(f"[hostile] {name}: {row.answer} in {row.seconds or 0:.2f} s", flush=True)
                rows.append(row)
    return rows, meter.other_cores


def run(args: argparse.Namespace) -> list[Row]:
    """The hostile probes on a server of their own (one worker: imdb, and cifar if served);
    prints their table and returns them as chaos rows."""
    models = tuple(m for m in ("imdb", "cifar") if m in args.models)
    token = secrets.token_urlsafe(16)
    log = args.out.parent / "chaos-hostile.log"
    with serve(models, 1, log, args.buckets, SERVICE_ADMIN_TOKEN=token) as server:
        asyncio.run(wait_serving(server.grpc_target))
        rows, other_cpu = asyncio.run(run_probes(server, log, token, models))
    print()
    print(render_probes(rows))
    return [row.as_row(other_cpu) for row in rows]
