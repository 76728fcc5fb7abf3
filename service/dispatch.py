"""The gateway's side of a model runner: one :class:`ModelClient` per served model.

Every door (friendly JSON, TF Serving REST, gRPC) calls :meth:`ModelClient.run` with a
validated numpy batch; it sends the batch to the runner's batchable API, turns transport
and runner failures into :mod:`service.errors`, and records the queue-wait metric.
:func:`track` counts requests and errors per model and door.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import typing as t
from collections.abc import Iterator

import aiohttp
import numpy as np
from bentoml.exceptions import BentoMLException

from service.catalog import TENSOR_SIGNATURE, ModelInfo
from service.errors import ModelFailure, NotReady, ServingError
from service.metrics import ERRORS, QUEUE_WAIT, REQUESTS

logger = logging.getLogger("bentoml.keras_serving.gateway")

CONNECTION_ATTEMPTS = 3


class ModelClient:
    """Calls one model's runner; ``runner`` is BentoML's dependency proxy (or, in
    ``bentoml serve --development``, the runner instance itself)."""

    def __init__(self, info: ModelInfo, runner: t.Any) -> None:
        self.info = info
        self._runner = runner

    def method_for(self, signature: str) -> str:
        """The runner API serving ``signature``.

        Raises:
            ModelNotFound: the model has no such signature.
        """
        self.info.signature(signature)
        return "predict" if signature == TENSOR_SIGNATURE else "predict_raw"

    async def run(self, signature: str, inputs: np.ndarray) -> list[dict[str, t.Any]]:
        """One row of outputs per input row, through the runner's batch queue.

        Raises:
            ModelNotFound: unknown signature.
            NotReady: the runner is loading, unreachable or shed the request (503).
            ModelFailure: the model call failed.
        """
        method = self.method_for(signature)
        sent = time.time()
        try:
            rows = await self._call(method, inputs)
        except ServingError:
            raise
        except BentoMLException as exc:
            status = int(getattr(exc, "error_code", 500))
            if status in (429, 503):
                raise NotReady(
                    f"model '{self.info.name}' is busy or not ready, retry later"
                ) from None
            logger.error("%s/%s: runner answered %s: %s", self.info.name, signature, status, exc)
            raise ModelFailure(f"model '{self.info.name}' failed to answer") from None
        if len(rows) != len(inputs):
            raise ModelFailure(
                f"model '{self.info.name}' returned {len(rows)} rows for {len(inputs)}"
            )
        for row in rows:
            if "__error__" in row:
                logger.error("%s/%s: row failed: %s", self.info.name, signature, row["__error__"])
                raise ModelFailure(f"model '{self.info.name}' failed on this input")
        QUEUE_WAIT.labels(model=self.info.name, signature=signature).observe(
            max(0.0, rows[0]["started"] - sent)
        )
        return [row["outputs"] for row in rows]

    async def _call(self, method: str, inputs: np.ndarray) -> list[dict[str, t.Any]]:
        client = getattr(self._runner, "to_async", None)
        if client is None:  # bentoml serve --development: the runner lives in this process
            import anyio.to_thread

            return await anyio.to_thread.run_sync(getattr(self._runner, method), inputs)
        # A RemoteProxy: HTTP (pickle) to the runner's batch queue. BentoML 1.4.38's client
        # closes its aiohttp session every 100 requests even with requests in flight, and
        # reuses keep-alive connections the server may have closed (bentoml/BentoML#5540,
        # #5698): such connection-level failures are retried (predictions are idempotent).
        for attempt in range(1, CONNECTION_ATTEMPTS + 1):
            try:
                return await getattr(client, method)(inputs)
            except (TimeoutError, aiohttp.ClientConnectionError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and "closed" not in str(exc).lower():
                    raise
                if isinstance(exc, asyncio.TimeoutError) or attempt == CONNECTION_ATTEMPTS:
                    logger.warning(
                        "%s.%s: %s after %d attempts", self.info.name, method, exc, attempt
                    )
                    raise NotReady(
                        f"model '{self.info.name}' is not reachable, retry later"
                    ) from None
        raise AssertionError("unreachable")

    async def is_ready(self) -> bool:
        checker = getattr(self._runner, "is_ready", None)
        if checker is not None:
            try:
                return bool(await checker(5))
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
        return bool(self._runner.__is_ready__())


@contextlib.contextmanager
def track(model: str, door: str) -> Iterator[None]:
    """Counts one request of ``door`` (rest, tfserving, grpc) to ``model``, by outcome."""
    try:
        yield
    except ServingError as exc:
        REQUESTS.labels(model=model, door=door, code=str(int(exc.error_code))).inc()
        ERRORS.labels(model=model, door=door, reason=type(exc).__name__).inc()
        raise
    except Exception as exc:
        REQUESTS.labels(model=model, door=door, code="500").inc()
        ERRORS.labels(model=model, door=door, reason=type(exc).__name__).inc()
        raise
    else:
        REQUESTS.labels(model=model, door=door, code="200").inc()
