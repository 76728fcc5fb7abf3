"""Client strings: versions parsed as ASCII digits only, echoes clipped, errors without paths."""

from __future__ import annotations

import pytest

from service.client_text import (
    MAX_ECHO_CHARS,
    clip,
    parse_version,
    public_error,
    strip_paths,
)
from service.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "number"), [("0", 0), ("3", 3), ("0042", 42), ("9" * 19, 10**19 - 1)]
)
def test_versions_are_ascii_digits(text: str, number: int) -> None:
    assert parse_version(text) == number


# One row per probe: text that str.isdigit() or int() would take, or worse.
BAD_VERSIONS = [
    ("superscript two", "²"),  # isdigit() is True, int() raises: was a 500
    ("arabic-indic one", "١"),  # int() reads it as 1
    ("fullwidth three", "３"),
    ("sign", "+3"),
    ("minus", "-1"),
    ("spaces", " 3 "),
    ("underscore", "3_0"),
    ("hex", "0x3"),
    ("empty", ""),
    ("twenty digits", "1" * 20),
    ("huge", "9" * 100_000),
]


@pytest.mark.parametrize(
    "text", [row[1] for row in BAD_VERSIONS], ids=[row[0] for row in BAD_VERSIONS]
)
def test_other_versions_are_invalid_input_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidInput, match="^model_spec.version: '.*' is not a version number"):
        parse_version(text, "model_spec.version")


def test_a_huge_version_is_echoed_clipped() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_version("9" * 100_000)
    assert len(caught.value.message) < MAX_ECHO_CHARS + 100


def test_clip() -> None:
    assert clip("short") == "short"
    assert clip("x" * MAX_ECHO_CHARS) == "x" * MAX_ECHO_CHARS
    long = clip("x" * 5_000_000)
    assert len(long) == MAX_ECHO_CHARS and long.endswith("…")
    assert clip(12345, limit=3) == "12…"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Op type not registered in /home/u/bentoml/models/imdb/v3/saved_model.pb.",
         "Op type not registered in <path>."),
        ("file:///tmp/x/y.pb missing", "<path> missing"),
        ("'/srv/store/a b' and /etc/passwd", "'<path> b' and <path>"),
        ("ratio 3/4 and a/b stay", "ratio 3/4 and a/b stay"),
    ],
)  # fmt: skip
def test_paths_are_stripped(text: str, expected: str) -> None:
    assert strip_paths(text) == expected


def test_public_error_is_one_line_without_paths() -> None:
    error = OSError(
        "SavedModel file does not exist at: /home/u/bentoml/models/imdb/abc/saved_model\n"
        "Traceback (most recent call last):\n  File \"/usr/lib/python3.11/x.py\", line 3"
    )
    text = public_error(error)
    assert text == "OSError: SavedModel file does not exist at: <path>"
    assert "\n" not in text and "/" not in text
    assert public_error(ValueError()) == "ValueError"
    assert len(public_error(RuntimeError("x" * 10_000))) <= 300
