"""The verifier service's route table: which scope each ``METHOD /path`` needs.

A small TOML or JSON file (by its suffix), read and validated once at start, so a typo stops
the service with one clear line instead of refusing (or, worse, allowing) requests later::

    # routes.toml
    [routes]
    "GET /book" = "query_anonymized_order_book"      # exact path
    "POST /orders" = "submit_limit_order"
    "GET /reports/*" = "read_reports"                # path prefix (longest wins)

The keys have the form ``gateway.wsgi.route_value`` matches; a request matching no entry is
refused with ``scope-denied`` (fail closed).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

_METHOD = re.compile(r"[A-Z]{1,16}")
_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()+,;=:@/]*\*?")  # a normal path, optional '*'
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")


class RouteConfigError(ValueError):
    """The route file is missing, unreadable or not a valid route table."""


def parse_routes(document: Any, source: str = "routes") -> dict[str, str]:
    """The validated ``{"METHOD /path": scope}`` of a parsed route document."""
    if not isinstance(document, dict) or set(document) - {"routes"}:
        raise RouteConfigError(f"{source}: expected one table 'routes' and nothing else")
    routes = document.get("routes")
    if not isinstance(routes, dict) or not routes:
        raise RouteConfigError(f"{source}: 'routes' must map \"METHOD /path\" to a scope")
    out: dict[str, str] = {}
    for key, scope in routes.items():
        method, sep, path = str(key).partition(" ")
        if not sep or not _METHOD.fullmatch(method) or not _PATH.fullmatch(path):
            raise RouteConfigError(
                f'{source}: route {key!r}: expected "METHOD /path" or "METHOD /prefix/*" '
                "(upper-case method, a normal path, '*' only at the end)"
            )
        if "//" in path or any(seg in (".", "..") for seg in path.split("/")):
            raise RouteConfigError(f"{source}: route {key!r}: the path is not in normal form")
        if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
            raise RouteConfigError(f"{source}: route {key!r}: the scope must be a scope name")
        out[f"{method} {path}"] = scope
    return out


def load_routes(path: Path) -> dict[str, str]:
    """Read and validate the route file at ``path`` (``.toml`` or ``.json``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RouteConfigError(f"{path}: cannot read the route file: {exc.strerror}") from None
    try:
        if path.suffix == ".json":
            document = json.loads(raw)
        elif path.suffix == ".toml":
            document = tomllib.loads(raw.decode())
        else:
            raise RouteConfigError(f"{path}: the route file must end in .toml or .json")
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, RouteConfigError):
            raise
        raise RouteConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    return parse_routes(document, str(path))
