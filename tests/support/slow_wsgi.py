"""A WSGI app for testing ``ocsp.worker.OcspWorker`` with a slow responder (decision 0044).

It offers the worker the same hooks as the OCSP app: ``/fast`` is answered by the inline hook
(what a hot-cache hit is), ``/busy`` says what a full worker answers, and everything else
goes to the app itself on the worker's responder thread, where ``/slow?s=N`` sleeps N seconds
(a miss: status query and HSM signature), ``/spin?s=N`` runs Python for N seconds
(a miss that holds the GIL) and ``/wait`` waits until ``/release`` (inline) or
10 s. Every answer names the worker's pid and the thread that gave it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
_released = threading.Event()


def _answer(start_response: StartResponse, text: str, status: str = "200 OK") -> list[bytes]:
    body = f"{text} pid={os.getpid()} thread={threading.current_thread().name}\n".encode()
    start_response(
        status,
        [("Content-Type", "text/plain"), ("X-Agentca-Worker", str(os.getpid()))],
    )
    return [body]


def _inline(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
    path = environ.get("PATH_INFO", "")
    if path == "/fast":
        return _answer(start_response, "fast")
    if path == "/mix":  # a body whose third byte is "S" is a miss (to the thread), others hits
        body = environ["wsgi.input"].read()
        return None if body[2:3] == b"S" else _answer(start_response, "hit")
    if path == "/release":
        _released.set()
        return _answer(start_response, "released")
    return None


def _busy(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
    if environ.get("PATH_INFO") == "/wait":
        return _answer(start_response, "busy", "503 Service Unavailable")
    return None


class SlowApp:
    """The WSGI app (``tests.support.slow_wsgi:app``)."""

    def __init__(self) -> None:
        self.extensions = {"agentca_ocsp_inline": _inline, "agentca_ocsp_busy": _busy}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/slow":
            seconds = float(environ.get("QUERY_STRING", "").removeprefix("s=") or 1)
            time.sleep(min(seconds, 10.0))
            return _answer(start_response, "slow")
        if path == "/spin":  # a miss that holds the GIL: Python work, no I/O
            end = time.monotonic() + min(
                float(environ.get("QUERY_STRING", "").removeprefix("s=") or 1), 10.0
            )
            while time.monotonic() < end:
                pass
            return _answer(start_response, "spun")
        if path == "/mix":
            if environ["wsgi.input"].read()[2:3] == b"S":
                time.sleep(0.001)  # a miss that waits (database, HSM) without the GIL
            return _answer(start_response, "mix")
        if path == "/wait":
            _released.wait(10.0)
            return _answer(start_response, "waited")
        if path == "/big":  # reads the whole body (tests.support.large_body_worker)
            return _answer(start_response, f"big {len(environ['wsgi.input'].read())}")
        if path == "/echo":
            body = environ["wsgi.input"].read()
            return _answer(start_response, "echo " + body.decode())
        return _answer(start_response, "other")


app = SlowApp()
