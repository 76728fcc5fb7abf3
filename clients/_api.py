"""The public method set, written once for both transports and both I/O styles.

Each transport has a *protocol* object (`clients._rest.RestProtocol`,
`clients._tfs.TFServingProtocol`) whose methods are generators: they validate input, yield
the requests to send, receive the decoded responses and return the result types. They do
no I/O, so the same logic drives the blocking and the asyncio clients. `SyncAPI` below
declares each operation once (its signature and documentation, under `@operation`); the
body, and all of `AsyncAPI`, are derived from that declaration: call the protocol's
method of the same name with the arguments but `timeout`, then run the generator with the
client's `_run`, which sends what it yields. Errors from a request are thrown back into
the generator, which may handle them (health probes, optional label lookups) or let them
propagate. The shared tensor codec's `TensorError` (a dtype or shape a `TensorProto`
cannot carry) leaves both loops as `InvalidInput`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from clients.errors import ClientError, InvalidInput
from clients.types import (
    Forecast,
    ImageClassification,
    ModelInfo,
    ModelStatus,
    SentimentResult,
    TopicPrediction,
    Translation,
)
from tfserving_api.tensors import TensorError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Op = Generator[Any, Any, T]  # yields requests, is sent responses, returns a result
# `reload_config`'s argument: model name -> {"versions": ..., "labels": ...}, or a
# ready-made ModelServerConfig message (see `clients.model_config`).
ModelConfigs = Mapping[str, Mapping[str, Any]] | Any

# Name -> the declaration in SyncAPI, in declaration order: the whole public method set.
OPERATIONS: dict[str, Callable[..., Any]] = {}


def run(op: Op[T], send: Callable[[Any], Any]) -> T:
    """Drive `op` to completion, sending each request it yields with `send`."""
    try:
        request = next(op)
        while True:
            try:
                response = send(request)
            except ClientError as error:
                request = op.throw(error)
            else:
                request = op.send(response)
    except StopIteration as done:
        return done.value
    except TensorError as error:
        raise InvalidInput(str(error)) from None


async def run_async(op: Op[T], send: Callable[[Any], Awaitable[Any]]) -> T:
    """Async twin of `run`."""
    try:
        request = next(op)
        while True:
            try:
                response = await send(request)
            except ClientError as error:
                request = op.throw(error)
            else:
                request = op.send(response)
    except StopIteration as done:
        return done.value
    except TensorError as error:
        raise InvalidInput(str(error)) from None


def _protocol_call(declaration: Callable[..., Any]) -> Callable[..., tuple[Op[Any], Any]]:
    """``(self, *args, **kwargs) -> (protocol generator, timeout)`` for one declaration."""
    signature = inspect.signature(declaration)
    name = declaration.__name__
    forwarded = [p for p in signature.parameters if p not in ("self", "timeout")]

    def call(self: Any, *args: Any, **kwargs: Any) -> tuple[Op[Any], Any]:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        return getattr(self._ops, name)(*(values[p] for p in forwarded)), values["timeout"]

    return call


def operation(declaration: F) -> F:
    """Makes a `SyncAPI` declaration (signature + docstring, no body) a working method,
    and records it in `OPERATIONS` for its `AsyncAPI` twin."""
    call = _protocol_call(declaration)

    @functools.wraps(declaration)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        op, timeout = call(self, *args, **kwargs)
        return self._run(op, timeout)

    OPERATIONS[declaration.__name__] = declaration
    return method  # type: ignore[return-value]


def _async_twin(declaration: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    call = _protocol_call(declaration)

    @functools.wraps(declaration)
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        op, timeout = call(self, *args, **kwargs)
        return await self._run(op, timeout)

    method.__qualname__ = f"AsyncAPI.{declaration.__name__}"
    return method


class SyncAPI:
    """The blocking client methods. Every method takes a keyword-only `timeout` in
    seconds (default: the client's) that bounds each request it sends, and raises a
    `clients.errors.ClientError` subclass on failure.

    Every method that addresses a model also takes keyword-only `version` (an int) or
    `label` (a name such as ``"stable"``, mapped to a version by the server's model
    config); neither means the latest version, both raise `InvalidInput` (a
    `ValueError`) before anything is sent. Results name the version that answered in
    their `model.version`.
    """

    # The transport's protocol (clients._rest, clients._tfs): a generator method per name in
    # OPERATIONS, taking that method's arguments but `timeout`, in order, positionally.
    _ops: Any

    def _run(self, op: Op[T], timeout: float | None) -> T:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @operation
    def classify_topic(
        self,
        texts: Sequence[str],
        top_k: int = 3,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> list[TopicPrediction]:
        """Reuters topics of each text.

        Args:
            texts: Raw texts (the model tokenizes them).
            top_k: How many topics to return per text, best first.
            version: Model version to ask; default the latest.
            label: Version label to ask (``"stable"``...), instead of `version`.
            timeout: Seconds per request; default: the client's.

        Returns:
            One `TopicPrediction` per text, in order.

        Raises:
            InvalidInput: `texts` is empty or not a list of str, `top_k` < 1, or both
                `version` and `label` are given.
            ModelNotFound: no such version or label on the server.
        """

    @operation
    def sentiment(
        self,
        texts: Sequence[str],
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> list[SentimentResult]:
        """IMDB sentiment ("positive" / "negative") of each text.

        Args:
            texts: Raw review texts.
            version: Model version to ask; default the latest.
            label: Version label to ask, instead of `version`.
            timeout: Seconds per request; default: the client's.

        Returns:
            One `SentimentResult` per text, in order.
        """

    @operation
    def classify_image(
        self,
        images: Any,
        model: str = "cifar",
        top_k: int = 1,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> list[ImageClassification]:
        """Class of each image.

        Args:
            images: A batch: an array `[N, H, W]` or `[N, H, W, C]`, or a list of `[H, W]`
                / `[H, W, C]` arrays. uint8 (or other integers in 0..255) are raw pixels;
                floats are pixels scaled to [0, 1].
            model: ``"cifar"`` (32x32x3) or ``"mnist"`` (28x28x1).
            top_k: How many classes to list in each result's `top`.
            version: Model version to ask; default the latest.
            label: Version label to ask, instead of `version`.
            timeout: Seconds per request; default: the client's.

        Returns:
            One `ImageClassification` per image, in order.
        """

    @operation
    def forecast(
        self,
        window: Sequence[float],
        horizon: int = 1,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> Forecast:
        """The next `horizon` values of the cosine series after `window`.

        Args:
            window: The last values of the series (10 for the seed model).
            horizon: How many steps to predict; each step feeds the previous prediction
                back in.
            version: Model version to ask; default the latest.
            label: Version label to ask, instead of `version`.
            timeout: Seconds per request; default: the client's.
        """

    @operation
    def translate(
        self,
        sentences: Sequence[str],
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> list[Translation]:
        """Translate each sentence with the seed translator model.

        Args:
            sentences: Source sentences.
            version: Model version to ask; default the latest.
            label: Version label to ask, instead of `version`.
            timeout: Seconds per request; default: the client's.

        Returns:
            One `Translation` per sentence, in order.
        """

    @operation
    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        signature: str | None = None,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run any signature of any model, TF Serving style.

        Args:
            model: Model name (``"imdb"``, ``"cifar"``...).
            inputs: Input name to array. dtypes must match the signature (see
                `metadata`), e.g. ``{"window": np.zeros((1, 10), np.float32)}``;
                lists of str become string tensors.
            signature: Signature name; default ``serving_default``.
            version: Model version; default the latest.
            label: Version label, instead of `version`.
            timeout: Seconds per request; default: the client's.

        Returns:
            Output name to array, with the signature's dtypes (strings as bytes).

        Raises:
            InvalidInput: wrong input names, dtypes or shapes.
            ModelNotFound: no such model, version, label or signature.
        """

    @operation
    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelInfo:
        """Signatures (and label names, when the server provides them) of a model
        version; `ModelInfo.version` is the version that answered."""

    @operation
    def status(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> ModelStatus:
        """Load state of every version of a model the server knows (loading, serving,
        unloading, or failed with its error), or of one version or label only."""

    @operation
    def reload_config(self, models: ModelConfigs, *, timeout: float | None = None) -> None:
        """Apply a new model config on the server: TF Serving's
        ``ModelService/HandleReloadConfigRequest``. gRPC only.

        The config replaces the previous one as a whole: a model left out falls back to
        the server's default (this service: the latest version, no labels; stock TF
        Serving unloads it), so list every model whose versions or labels should stay.

        Args:
            models: Model name to its config, e.g. ``{"imdb": {"versions": [1, 2],
                "labels": {"stable": 1, "canary": 2}}}``. ``"versions"`` is ``"all"``, a
                list of versions, ``{"latest": n}`` or None / absent (the latest one);
                ``"labels"`` maps names to versions; ``"base_path"`` is optional. A
                ready-made `ModelServerConfig` message is sent as it is. See
                `clients.model_config.model_server_config`.
            timeout: Seconds for the call; default: the client's.

        Raises:
            InvalidInput: the mapping is malformed, or the server refused the config.
            Unsupported: over HTTP (TF Serving has no REST API for this), or the server
                does not implement it.
        """

    @operation
    def health(self, *, timeout: float | None = None) -> bool:
        """Whether the server is up (liveness). False, not an error, if unreachable."""

    @operation
    def ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server is ready to serve predictions. False if unreachable."""


class AsyncAPI:
    """The asyncio client methods: the names, arguments, results and documentation of
    `SyncAPI`'s, as coroutines (derived from its declarations below the class)."""

    _ops: Any  # as SyncAPI._ops

    async def _run(self, op: Op[T], timeout: float | None) -> T:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


for _name, _declaration in OPERATIONS.items():
    setattr(AsyncAPI, _name, _async_twin(_declaration))
del _name, _declaration
