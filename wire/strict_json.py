"""Strict JSON for documents a verifier judges (ledger exports, gateway checkpoint files).

The standard library keeps the last of two members with the same name and accepts ``NaN``
and ``Infinity``: a line ``{"agent": "a", ..., "agent": "b"}`` then reads as ``b`` here and
may read as ``a`` to another tool, so what was verified is not what is shown. These are
refused instead, with ``ValueError`` like any other malformed JSON.
"""

from __future__ import annotations

import json
from typing import Any


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the member '{key[:64]}' appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"'{name}' is not JSON")


def loads(text: str | bytes) -> Any:
    """Parse ``text`` as JSON, refusing duplicate members and ``NaN``/``Infinity``; any
    failure (nesting too deep included) is a ``ValueError``."""
    try:
        return json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("the JSON nests too deeply") from exc
