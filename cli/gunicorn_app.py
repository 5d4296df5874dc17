"""Run a WSGI app under gunicorn from inside a click command (CA API and OCSP responder)."""

from __future__ import annotations

import socket
from typing import Any

from ca.errors import CAError, ErrorCode
from deploy import SHARED_REUSE_PORT


def listen_reusable(bind: str, backlog: int) -> int:
    """Bind ``host:port`` with SO_REUSEADDR and SO_REUSEPORT, listen, return the descriptor.

    A new master can then bind while orphaned workers of a killed one still hold the old
    socket (they close it within a second, decision 0015)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, ValueError) as exc:
        raise CAError(ErrorCode.CONFIG, f"cannot listen on {bind}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise CAError(ErrorCode.CONFIG, f"cannot listen on {bind}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock.detach()


def serve_with_gunicorn(app: Any, options: dict[str, Any], metrics_service: str = "") -> None:
    """Start gunicorn's master with ``options`` serving ``app``; returns when it stops.

    With ``metrics_service`` the workers share a fresh Prometheus multiprocess directory of
    that name, made before they fork and removed when the master stops (decision 0031)."""
    from gunicorn.app.base import BaseApplication

    from ca.metrics import prepare_multiprocess_dir, remove_multiprocess_dir

    settings = dict(options)
    if settings.pop(SHARED_REUSE_PORT, False) and isinstance(settings.get("bind"), str):
        fd = listen_reusable(settings["bind"], int(settings.get("backlog", 2048)))
        settings["bind"] = f"fd://{fd}"

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    metrics_dir = prepare_multiprocess_dir(metrics_service) if metrics_service else None
    try:
        _App().run()
    finally:
        if metrics_dir is not None:
            remove_multiprocess_dir(metrics_dir)
