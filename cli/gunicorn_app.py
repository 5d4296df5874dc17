"""Run a WSGI app under gunicorn from inside a click command (CA API and OCSP responder)."""

from __future__ import annotations

from typing import Any


def serve_with_gunicorn(app: Any, options: dict[str, Any]) -> None:
    """Start gunicorn's master with ``options`` serving ``app``; returns when it stops."""
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    _App().run()
