"""A tiny HTTP client for tests (urllib) and an in-process server on loopback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import make_server


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    content_type: str | None = None,
    accept: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One real HTTP request; never raises on HTTP error statuses."""
    data: bytes | None
    hdrs = dict(headers or {})
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
        hdrs["Content-Type"] = content_type or "application/octet-stream"
    else:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = content_type or "application/json"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if accept:
        hdrs["Accept"] = accept
    req = urllib.request.Request(base + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve a WSGI app with werkzeug on a free loopback port; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
