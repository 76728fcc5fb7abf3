"""Log lines as JSON objects (``SERVICE_LOG_FORMAT=json``), one per line, in every process.

BentoML configures its handlers (``bentoml``, ``uvicorn.error``, ``circus`` and the root
logger) before it imports the service; :func:`configure_logging` then gives every handler
already attached a :class:`JsonFormatter`. The service's loggers live under
``bentoml.keras_serving`` and so go through the same handlers. TensorFlow's native (C++)
start-up lines bypass Python's logging and stay plain text on stderr.

Typical usage::

    configure_logging(settings.log_format)    # "text": BentoML's lines, unchanged
    # {"time": "2026-11-30T03:25:40.123Z", "level": "INFO", "logger": "bentoml.keras_serving.engine",
    #  "message": "imdb v1 loaded in 0.3s ...", "worker": 1, "pid": 6234}
"""

from __future__ import annotations

import json
import logging
import os
import time

from bentoml import server_context


def _worker() -> int | None:
    """BentoML's 1-based worker index; None in the supervisor (``bentoml serve`` itself)."""
    return server_context.worker_index


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
    ``logger``, ``message``, ``worker`` (index, null in the supervisor), ``pid``, and
    ``exc_info`` / ``stack_info`` (the formatted traceback) when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": _worker(),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    unique: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            unique[id(handler)] = handler
    return list(unique.values())


def configure_logging(log_format: str) -> None:
    """Applies ``SERVICE_LOG_FORMAT``: ``json`` formats every handler attached so far (and
    gives the root logger one on stderr if it has none); ``text`` leaves BentoML's format.

    Raises:
        ValueError: neither ``text`` nor ``json``.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"SERVICE_LOG_FORMAT={log_format!r}: expected text or json")
    if log_format == "text":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    formatter = JsonFormatter()
    for handler in _handlers():
        handler.setFormatter(formatter)
