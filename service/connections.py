"""Slow and idle HTTP connections cannot pile up in a worker.

uvicorn (under ``bentoml serve``) has no header timeout: a client that sends one header line
every few seconds keeps its connection, and its slot, for as long as it likes (a slowloris).
:class:`GuardedHttpToolsProtocol` is uvicorn's own httptools protocol plus two guards:

* **Header timeout** (``SERVICE_HEADER_TIMEOUT_S``, default 10; nginx's
  ``client_header_timeout``): a connection that has not sent a complete request head within
  that time of opening (or of the first byte of its next request) is closed. Keep-alive idle
  time is uvicorn's own ``timeout_keep_alive``.
* **Connection cap** (``SERVICE_MAX_CONNECTIONS`` per worker, default 1024): past it, a request
  is answered 503 at once and its connection closed (uvicorn's ``limit_concurrency``, which
  counts connections and requests in flight).

BentoML builds uvicorn's ``Config`` itself, after importing the service and with no way to
pass either option, but looks the protocol class up by name when the server starts:
:func:`install` (called when the service module is imported, in every worker) points the
``auto`` and ``httptools`` names at the guarded class.

Typical usage::

    install(ConnectionSettings.from_env())     # before uvicorn starts (service import)
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing as t
from dataclasses import dataclass

from service.config import _float, _int

logger = logging.getLogger("bentoml.keras_serving.connections")

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 1024


@dataclass(frozen=True)
class ConnectionSettings:
    """``SERVICE_HEADER_TIMEOUT_S`` (0 = none) and ``SERVICE_MAX_CONNECTIONS`` (0 = no cap)."""

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_env(cls) -> ConnectionSettings:
        """Raises ValueError naming a variable set to something unusable."""
        return cls(
            header_timeout_s=_float("SERVICE_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S),
            max_connections=_int("SERVICE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
        )


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn falls back to h11, left unguarded (logged)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol with a header timeout and a connection cap."""

        settings: t.ClassVar[ConnectionSettings] = ConnectionSettings()

        def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
            super().__init__(*args, **kwargs)
            cap = self.settings.max_connections
            if cap > 0:
                # uvicorn refuses when len(connections) >= limit, this one included.
                self.limit_concurrency = cap + 1
            self._header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # the next request on a kept-alive connection
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._disarm_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            if self.settings.header_timeout_s > 0:
                self._header_timer = self.loop.call_later(
                    self.settings.header_timeout_s, self._headers_too_slow
                )

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                logger.debug(
                    "closing %s: no complete request head in %.1f s (SERVICE_HEADER_TIMEOUT_S)",
                    self.client,
                    self.settings.header_timeout_s,
                )
                self.transport.close()


PROTOCOL = "service.connections:GuardedHttpToolsProtocol"
CAP_MESSAGE = "Exceeded concurrency limit."  # uvicorn's warning, once per refused request


class OncePer(logging.Filter):
    """Lets uvicorn's per-request "Exceeded concurrency limit." warning through once every
    ``seconds``, with how many were held back: a flood past the cap must not flood the log."""

    def __init__(self, seconds: float = 10.0, clock: t.Callable[[], float] = time.monotonic):
        super().__init__()
        self.seconds, self.clock = seconds, clock
        self.last: float | None = None
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != CAP_MESSAGE:
            return True
        now = self.clock()
        if self.last is not None and now - self.last < self.seconds:
            self.held += 1
            return False
        if self.held:
            record.msg = f"{CAP_MESSAGE} ({self.held} more in the last {self.seconds:.0f} s)"
            record.args = ()
        self.last, self.held = now, 0
        return True


def install(settings: ConnectionSettings) -> bool:
    """Makes uvicorn's ``auto`` / ``httptools`` HTTP protocol the guarded one.

    Returns:
        False when httptools is missing (uvicorn then uses h11, without the guards).
    """
    if HttpToolsProtocol is None:
        logger.warning(
            "httptools is not installed: SERVICE_HEADER_TIMEOUT_S and SERVICE_MAX_CONNECTIONS "
            "do not apply (uvicorn uses h11)"
        )
        return False
    import uvicorn.config

    GuardedHttpToolsProtocol.settings = settings
    cap_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OncePer) for f in cap_log.filters):
        cap_log.addFilter(OncePer())
    uvicorn.config.HTTP_PROTOCOLS["auto"] = PROTOCOL
    uvicorn.config.HTTP_PROTOCOLS["httptools"] = PROTOCOL
    return True
