"""``GrpcUser``: a Locust user that calls the service over gRPC through ``clients.grpc``.

Every call made inside :meth:`GrpcUser.request` is reported to Locust's
``environment.events.request`` (request type ``grpc``), so gRPC rows appear in Locust's
statistics, CSV and HTML report next to the HTTP ones. A call fails when the client raises
(`clients.errors.ClientError`: a gRPC status other than OK, a deadline) or when the body
check inside the block raises :class:`loadtest.checks.BadResponse`, like
``catch_response=True`` does for HTTP.

Why time client calls rather than intercept RPCs (as Locust's ``examples/grpc`` does): one
client call is what a user waits for and what the checks judge; the typed client may make
more than one RPC for it (a label lookup on first use, one RPC per forecast step).

The target is ``--grpc-host`` (added to Locust's command line by the locustfile); without
it, the host of ``--host`` on port 8500.

Typical usage::

    class SentimentUser(GrpcUser):
        @task
        def sentiment(self):
            texts = payloads.reviews(2)
            with self.request("imdb:predict_text") as call:
                answer = call(self.client.sentiment, texts)
                checks.check("imdb", checks.from_results("imdb", answer), len(texts))
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.env import Environment

from clients.errors import ClientError
from clients.grpc import Client
from loadtest.checks import BadResponse

# grpcio's default poller blocks the whole process; under Locust every user is a greenlet.
grpc_gevent.init_gevent()

DEFAULT_GRPC_PORT = 8500
T = TypeVar("T")


def grpc_target(environment: Environment) -> str:
    """``--grpc-host``, else the host of ``--host`` (or of the user's ``host``) on 8500."""
    options = environment.parsed_options
    explicit = getattr(options, "grpc_host", None) if options is not None else None
    if explicit:
        return explicit
    host = urlsplit(environment.host or "http://127.0.0.1").hostname or "127.0.0.1"
    return f"{host}:{DEFAULT_GRPC_PORT}"


class _Call:
    """Times the client call it runs; the block around it decides success."""

    def __init__(self) -> None:
        self.elapsed: float | None = None

    def __call__(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            self.elapsed = time.perf_counter() - start


class GrpcUser(User):
    """Abstract: subclasses add tasks that use ``self.client`` inside ``self.request``."""

    abstract = True
    timeout = 30.0  # seconds per RPC
    client: Client

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        # No retries: a load test must see every UNAVAILABLE, not hide it behind backoff.
        self.client = Client(grpc_target(environment), timeout=self.timeout, retry=1)

    def on_stop(self) -> None:
        self.client.close()

    @contextlib.contextmanager
    def request(self, name: str) -> Iterator[_Call]:
        """One Locust request named ``name``: run the client call with the yielded handle.

        The response time is the call's; checks after it in the block do not count towards
        it. A `ClientError` or `BadResponse` raised in the block fails the request and is
        swallowed (Locust records it); anything else is a bug and propagates.
        """
        call = _Call()
        start_time = time.time()
        start = time.perf_counter()
        exception: Exception | None = None
        try:
            yield call
        except (ClientError, BadResponse) as exc:
            exception = exc
        except Exception as exc:  # a bug in the task: count it, and let Locust show it
            exception = exc
            raise
        finally:
            elapsed = call.elapsed if call.elapsed is not None else time.perf_counter() - start
            self.environment.events.request.fire(
                request_type="grpc",
                name=name,
                response_time=elapsed * 1000.0,
                response_length=0,  # the typed client does not expose message sizes
                response=None,
                context=self.context(),
                exception=exception,
                start_time=start_time,
                url=self.client.target,
            )
