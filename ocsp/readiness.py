"""Readiness of one OCSP worker: the database, the HSM (responder keys) and the clock."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

log = logging.getLogger("agentca.ocsp")


class _Responders(Protocol):
    def get(self) -> Any: ...


def readiness_report(responders: _Responders, rt: Any) -> tuple[dict[str, Any], bool]:
    """The readiness body and whether the worker is ready. ``rt`` is the worker's
    ``ResponderRuntime`` (None when the app was built around another responder factory)."""
    try:
        responder = responders.get()
        responder.poll()
        db_ok = bool(responder.ready and responder.database_ok)
    except Exception:
        log.exception("OCSP readiness check failed")
        db_ok = False
    body: dict[str, Any] = {"database": {"status": "ok" if db_ok else "unreachable"}}
    ok = db_ok
    if rt is not None:
        hsm = rt.keys.status()
        body["hsm"] = hsm.to_dict()
        ok = ok and hsm.ok
        clock = rt.clock_check
        if clock is not None:
            if clock.due(time.monotonic()):
                clock.refresh()
            body["clock"] = clock.reading().to_dict(clock.bound)
            ok = ok and body["clock"]["status"] == "ok"
    body["status"] = "ready" if ok else "not-ready"
    return body, ok
