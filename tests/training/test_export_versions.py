"""Version numbers read from directory names and store labels: ASCII digits only."""

from __future__ import annotations

from pathlib import Path

import pytest

from training import registry
from training.export import next_version


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ((), 1),
        (("1", "2", "10"), 11),
        # "²".isdigit() and "١".isdigit() are True; int("²") raises: such dirs are not versions.
        (("1", "\u00b2", "\u0661", "tmp", "3x"), 2),
    ],
)
def test_next_version_counts_ascii_numbered_directories(
    tmp_path: Path, names: tuple[str, ...], expected: int
) -> None:
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert next_version(tmp_path) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", True), ("12", True), ("\u00b2", False), ("\u0661", False), ("", False), ("-1", False)],
)
def test_store_version_labels_are_ascii_numbers(text: str, expected: bool) -> None:
    assert registry._is_ascii_number(text) is expected
