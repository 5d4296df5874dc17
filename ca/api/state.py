"""Per-process application state: the lazily opened runtime."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import current_app

from ca.wiring import Runtime


class LazyRuntime:
    """Opens the runtime once per process, on first use (i.e. after gunicorn forks)."""

    def __init__(self, factory: Callable[[], Runtime]) -> None:
        self._factory = factory
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    def get(self) -> Runtime:
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = self._factory()
        return self._runtime


def runtime() -> Runtime:
    """The current app's runtime."""
    holder: LazyRuntime = current_app.extensions["agentca"]
    return holder.get()
