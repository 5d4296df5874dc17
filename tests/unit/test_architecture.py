"""docs/architecture.md matches the code: every package and module it names exists, and each
package imports only the first-party packages its table allows (direct imports, from the
import graph; import-linter's contracts in pyproject.toml add the indirect ones)."""

from __future__ import annotations

import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGES = ("ca", "ocsp", "hsm", "cli", "agent", "gateway", "wire", "migrations")


def _allowed() -> dict[str, set[str]]:
    """The package table: ``| `pkg` | holds | may import |``."""
    section = DOC.split("## Packages and the direction of dependencies", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`[a-z.]+`", cells[0]):
            continue
        deps = set(re.findall(r"`([a-z.]+)`", cells[2]))
        table[cells[0].strip("`")] = deps
    return table


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[:2] in (["ca", "api"], ["ca", "console"]):
        return ".".join(parts[:2])
    return parts[0]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def test_the_table_names_every_package_and_nothing_else() -> None:
    assert set(_allowed()) == {*PACKAGES, "ca.api", "ca.console"}


def test_every_package_imports_only_what_the_table_allows(graph: grimp.ImportGraph) -> None:
    allowed = _allowed()
    broken = []
    for module in sorted(graph.modules):
        here = _layer(module)
        for imported in graph.find_modules_directly_imported_by(module):
            there = _layer(imported)
            if there != here and there not in allowed[here]:
                broken.append(f"{module} -> {imported}")
    assert not broken, "imports docs/architecture.md does not allow:\n" + "\n".join(broken)


def test_every_module_the_page_names_exists() -> None:
    files = r"`((?:ca|ocsp|hsm|cli|wire|agent|gateway|deploy|tests)/[\w/.-]+)`"
    named = set(re.findall(files, DOC))
    assert named, "the page names no files"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    dotted = set(re.findall(r"`((?:ca|ocsp|hsm|wire)\.[a-z_.]+)`", DOC))
    for name in sorted(dotted):
        path = ROOT / name.replace(".", "/")
        assert (
            path.with_suffix(".py").exists()
            or (path / "__init__.py").exists()
            or (
                # a class or function named through its module, e.g. hsm.KeyStore
                name.rsplit(".", 1)[-1][:1].isupper()
            )
        ), f"docs/architecture.md names {name}, which does not exist"
