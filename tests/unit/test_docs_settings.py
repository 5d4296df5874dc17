"""docs/operators.md lists every setting of ``ca.config.Settings``, and nothing else, in its
``| setting | default | meaning |`` tables, with the default the code has."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ca.config import Settings

OPERATORS = Path(__file__).resolve().parents[2] / "docs" / "operators.md"


def settings_rows(text: str) -> dict[str, tuple[str, str]]:
    """``name -> (default cell, meaning cell)`` of every row of every table headed
    ``| setting | default | meaning |``. A first cell may name several settings."""
    rows: dict[str, tuple[str, str]] = {}
    in_table = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        if cells[:3] == ["setting", "default", "meaning"]:
            in_table = True
            continue
        if not in_table or set(cells[0]) <= {"-", ":", " "}:
            continue
        for name in re.findall(r"`([a-z0-9_]+)`", cells[0]):
            assert name not in rows, f"setting {name} is listed twice"
            rows[name] = (cells[1], cells[2] if len(cells) > 2 else "")
    return rows


def test_the_table_reader_reads_tables_only() -> None:
    text = (
        "| setting | default | meaning |\n|---|---|---|\n| `a`, `b` | 1 | x |\n\n"
        "| other | default | meaning |\n|---|---|---|\n| `c` | 2 | y |\n"
    )
    assert settings_rows(text) == {"a": ("1", "x"), "b": ("1", "x")}


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = settings_rows(OPERATORS.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(Settings)}
    missing = sorted(fields - documented.keys())
    unknown = sorted(documented.keys() - fields)
    assert not missing, f"docs/operators.md does not list the settings {missing}"
    assert not unknown, f"docs/operators.md lists {unknown}, which are not settings"


def test_documented_numbers_and_booleans_are_the_code_defaults() -> None:
    """Where a row gives plain numbers or booleans as defaults, they are the code's."""
    documented = settings_rows(OPERATORS.read_text(encoding="utf-8"))
    defaults = Settings()
    rows: dict[str, list[str]] = {}
    for name, (default, _) in documented.items():
        rows.setdefault(default, []).append(name)
    checked = 0
    for cell, names in rows.items():
        values = [v.strip().strip("`") for v in cell.split(",")]
        if len(values) != len(names):
            continue
        for name, value in zip(names, values, strict=True):
            actual = getattr(defaults, name)
            if isinstance(actual, bool):
                if value in ("true", "false"):
                    assert value == str(actual).lower(), f"{name}: docs {value}, code {actual}"
                    checked += 1
            elif isinstance(actual, int) and re.fullmatch(r"\d+", value):
                assert int(value) == actual, f"{name}: docs {value}, code {actual}"
                checked += 1
    assert checked >= 20, checked
