"""Review 17b: the gateway's ``CAInventory`` reading a hostile or malformed CA answer.

The gateway trusts its CA's verdicts, but a broken answer (a proxy's page, a truncated or
absurd document) must fail closed as "inventory unavailable", never as an exception other
than :class:`InventoryUnavailable` from ``load`` and never as "signed" for a value that does
not name a producer. A real HTTP server serves each answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.inventory import CAInventory, InventoryUnavailable

DIGEST = "ab" * 32


class Answer:
    body = b"[]"


@pytest.fixture
def ca() -> Iterator[tuple[str, Answer]]:
    answer = Answer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def inventory(url: str) -> CAInventory:
    return CAInventory(url, "token", background=False, timeout=5, signed_environments=["prod"])


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"digest": "x"}', b'"text"', b"null", b"[1]", b"[{}]", b"<html>"],
    ids=["deep", "object", "string", "null", "number", "no-digest", "html"],
)
def test_a_malformed_answer_is_inventory_unavailable(ca: tuple[str, Answer], body: bytes) -> None:
    url, answer = ca
    answer.body = body
    inv = inventory(url)
    with pytest.raises(InventoryUnavailable):
        inv.load()
    assert not inv.authorised(DIGEST, "prod")
    assert inv.entry(DIGEST, "prod") is None


@pytest.mark.parametrize("signed_by", [False, "", 0, [], {}])
def test_a_signed_by_that_names_no_producer_is_not_signed(
    ca: tuple[str, Answer], signed_by: object
) -> None:
    url, answer = ca
    answer.body = json.dumps(
        [{"digest": DIGEST, "environment": "prod", "status": "active", "signed_by": signed_by}]
    ).encode()
    inv = inventory(url)
    inv.load()
    entry = inv.entry(DIGEST, "prod")
    assert entry is not None and not entry.signed
    assert not inv.authorised(DIGEST, "prod")


def test_a_producer_name_is_signed(ca: tuple[str, Answer]) -> None:
    url, answer = ca
    answer.body = json.dumps(
        [{"digest": DIGEST.upper(), "environment": "prod", "signed_by": "acme"}]
    ).encode()
    inv = inventory(url)
    assert inv.authorised(DIGEST, "prod")
    assert not inv.authorised(DIGEST, "prod-2")
