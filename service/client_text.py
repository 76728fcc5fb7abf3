"""Strings a client sent: parsed strictly, echoed short, never a path of ours.

Every door quotes what the client sent in its error messages (a model name, a label, a
field or signature name, a path) and in the log. :func:`clip` is the one place that bounds
those echoes, so a 5 MB label name costs a 200-character message, not a 5 MB body and log
line. :func:`parse_version` reads a version number from text the way a client means it:
ASCII digits only (``str.isdigit`` accepts ``"²"`` and ``int`` accepts ``"١"`` or ``"1_0"``).
:func:`public_error` turns an exception into the one line a client may see (a load failure's
TensorFlow message carries store paths; the full text goes to the log).

Typical usage::

    raise ModelNotFound(f"model '{clip(name)}' is not served")
    version = parse_version(request.path_params["version"])      # InvalidInput if not 0-9
    model.error = public_error(exc)                              # "OSError: ... <path> ..."
"""

from __future__ import annotations

import re

# How much of a client string is echoed in a message or a log line.
MAX_ECHO_CHARS = 200
# TF Serving versions are int64: at most 19 decimal digits.
MAX_VERSION_DIGITS = 19
# How long one public error line may be (a load failure's reason, after its paths are cut).
MAX_ERROR_CHARS = 300

_ASCII_DIGITS = re.compile(r"[0-9]+")
# An absolute POSIX path (or a file: URL's path), up to the next quote, space or bracket.
_PATH = re.compile(r"(?:file://)?(?<![\w.])/(?:[^\s'\"()\[\]{},;:]*[^\s'\"()\[\]{},;:.])")


def clip(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters, ending in ``…`` when cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def parse_version(text: str, field: str = "version") -> int:
    """A version number from client text: ASCII digits only, at most 19 of them.

    Raises:
        InvalidInput: anything else (``"²"``, ``"١"``, ``"+3"``, ``" 3"``, ``"3_0"``), naming
            ``field``.
    """
    from service.errors import InvalidInput  # errors.py itself clips with this module

    if (
        not isinstance(text, str)
        or len(text) > MAX_VERSION_DIGITS
        or not _ASCII_DIGITS.fullmatch(text)
    ):
        raise InvalidInput(
            f"{field}: '{clip(text)}' is not a version number (ASCII digits 0-9, at most "
            f"{MAX_VERSION_DIGITS})"
        )
    return int(text)


def strip_paths(text: str) -> str:
    """``text`` with every absolute file-system path replaced by ``<path>``."""
    return _PATH.sub("<path>", text)


def public_error(exc: BaseException) -> str:
    """What a client may see of a server-side failure: one line, the error class and the
    first line of its message, paths removed, at most ``MAX_ERROR_CHARS`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = strip_paths(lines[0]) if lines else ""
    text = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return clip(text, MAX_ERROR_CHARS)
