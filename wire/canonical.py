"""Canonical JSON: the one byte spelling of a JSON object that the issuance ledger, the action
ledger and every gateway's local action log hash and sign (docs/auditors.md).

Keys sorted, separators ``,`` and ``:``, UTF-8 without escaping, and no floating-point numbers,
whose spelling differs across implementations (integers and strings only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def canonical(obj: Mapping[str, Any], check: bool = True) -> bytes:
    """Canonical JSON bytes (sorted keys, compact, UTF-8).

    ``check`` refuses floats (whose spelling is not canonical across implementations); the CA
    checks when it appends, a verifier need not: any difference shows as a hash mismatch.
    """
    if check:
        _no_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_floats(value: Any) -> None:
    kind = type(value)
    if kind is float:
        raise ValueError("ledger bodies hold no floating-point numbers")
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise ValueError("ledger object keys are strings")
            _no_floats(v)
    elif kind is list or kind is tuple:
        for v in value:
            _no_floats(v)
    elif isinstance(value, Mapping):
        _no_floats(dict(value))
