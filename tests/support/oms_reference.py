"""``model-signing`` as the independent reference for the OMS digest (tests only).

``import model_signing`` runs its package ``__init__``, which imports the certificate signer
and so pyOpenSSL; pyOpenSSL 26.x pins ``cryptography<51`` and agentca runs 51. The hashing
and in-toto payload code needs neither, so when the package ``__init__`` cannot run, the
package is registered without it and the real submodules are imported from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import types
from typing import Any


def _package() -> None:
    try:
        importlib.import_module("model_signing")
    except ModuleNotFoundError as exc:
        if exc.name != "OpenSSL":
            raise
        spec = importlib.util.find_spec("model_signing")
        assert spec is not None and spec.submodule_search_locations is not None
        for name in [m for m in sys.modules if m.startswith("model_signing")]:
            del sys.modules[name]
        pkg = types.ModuleType("model_signing")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["model_signing"] = pkg


def oms_statement(
    path: str | os.PathLike[str], *, ignore: list[str] | None = None, allow_symlinks: bool = False
) -> dict[str, Any]:
    """The in-toto statement ``model-signing`` would sign for ``path`` (as a JSON dict)."""
    _package()
    hashing = importlib.import_module("model_signing.hashing")
    signing = importlib.import_module("model_signing._signing.signing")
    json_format = importlib.import_module("google.protobuf.json_format")
    config = hashing.Config().set_allow_symlinks(allow_symlinks)
    if ignore:
        config.set_ignored_paths(paths=ignore)
    manifest = config.hash(path)
    payload = signing.Payload(manifest)
    statement: dict[str, Any] = json.loads(json_format.MessageToJson(payload.statement.pb))
    return statement


def oms_root(path: str | os.PathLike[str], **kwargs: Any) -> bytes:
    """The subject (root) digest ``model-signing`` computes for ``path``."""
    return bytes.fromhex(oms_statement(path, **kwargs)["subject"][0]["digest"]["sha256"])
