"""The documented configuration is the one the code reads.

Every ``SERVICE_*`` / ``GRPC_*`` environment variable the product reads (a string literal
naming it in ``service/``, ``clients/`` or ``training/``) has a row in README.md's
Configuration table, and the table names none the code does not read. The tools in
``loadtest/`` only pass variables the product reads, and ``service/ARCHITECTURE.md``'s
tables name none that it does not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"(?:SERVICE|GRPC)_[A-Z0-9_]+")
# A table row whose first cell is only `NAME`, `NAME`, ... (other tables mention names in prose).
ROW = re.compile(r"^\|\s*(`[A-Z0-9_]+`(?:\s*,\s*`[A-Z0-9_]+`)*)\s*\|", re.M)


def _names_in(source: str) -> set[str]:
    """The variables a string literal or a keyword argument names (not prose mentions)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)  # env(SERVICE_WORKERS="2")
    return {name for name in names if VARIABLE.fullmatch(name)}


def _named_in_code(*folders: str) -> dict[str, set[str]]:
    """Variable -> the files that name it."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _names_in(path.read_text(encoding="utf-8")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _documented(markdown: str) -> set[str]:
    names = set()
    for cell in ROW.findall(markdown):
        names |= {n for n in re.findall(r"`([A-Z0-9_]+)`", cell) if VARIABLE.fullmatch(n)}
    return names


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def test_readme_configuration_table_is_what_the_code_reads() -> None:
    read = _named_in_code("service", "clients", "training")
    readme = _documented(_section((ROOT / "README.md").read_text(), "Configuration"))
    missing = {name: sorted(read[name]) for name in sorted(set(read) - readme)}
    assert not missing, f"read by the code but not in README.md's Configuration table: {missing}"
    stale = sorted(readme - set(read))
    assert not stale, f"in README.md's Configuration table but read nowhere: {stale}"


def test_loadtest_passes_only_variables_the_product_reads() -> None:
    read = set(_named_in_code("service", "clients", "training"))
    passed = _named_in_code("loadtest")
    unknown = {name: sorted(files) for name, files in passed.items() if name not in read}
    assert not unknown, f"set by loadtest/ but read by no product code: {unknown}"


def test_architecture_tables_name_only_variables_the_code_reads() -> None:
    read = set(_named_in_code("service", "clients", "training"))
    documented = _documented((ROOT / "service" / "ARCHITECTURE.md").read_text())
    assert documented, "no configuration table found in service/ARCHITECTURE.md"
    assert not sorted(documented - read), sorted(documented - read)


def test_the_scan_sees_reads_and_ignores_prose() -> None:
    source = 'os.environ.get("SERVICE_X")\nenv(GRPC_Y="1")\n"""SERVICE_Z in prose."""\nSERVICE_W = 1\n'
    assert _names_in(source) == {"SERVICE_X", "GRPC_Y"}
    table = "| `SERVICE_A`, `GRPC_B` | 1 | x |\n| `PayloadTooLarge` (`SERVICE_C`) | 413 | y |\n"
    assert _documented(table) == {"SERVICE_A", "GRPC_B"}
