"""A stand-in for the CA's ``POST /v1/actions`` (issue 18's contract, decision 0055): a real
HTTP server in a thread over an in-memory ledger, which can be stopped and started again on
its port (a CA outage), and told to answer 503, 413 or a wrong ``next_seq``, or to refuse
checkpoints not signed by ``registered_key_id`` (422 ``checkpoint-invalid``, as the CA does,
storing nothing)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wire.actions import ActionBatch, ActionRecord
from wire.merkle import MerkleTree

GATEWAY = "orders-1"
TOKEN = "agentca_gateway_token_1"


class FakeLedger:
    """The CA side of the contract, in memory: ``(gateway, seq) -> leaf bytes``."""

    def __init__(self, gateway: str = GATEWAY, token: str = TOKEN) -> None:
        self.gateway = gateway
        self.token = token
        self.records: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.posts: list[tuple[int, int]] = []  # (first seq, count) of each batch received
        self.checkpoints_ok = 0
        self.max_records: int | None = None  # 413 above this
        self.fail_next = 0  # answer 503 to this many requests
        self.claim_next: int | None = None  # a wrong next_seq to answer with
        self.registered_key_id: str | None = None  # refuse checkpoints of other keys
        self.checkpoints_refused = 0
        self.unprocessable_next = 0  # answer 422 (no next_seq) to this many requests

    @property
    def next_seq(self) -> int:
        n = 0
        while n in self.records:
            n += 1
        return n

    def handle(self, auth: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {self.token}":
            return 401, {"title": "Unauthorized", "detail": "bad token"}
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                return 503, {"title": "Unavailable"}
            if self.unprocessable_next:
                self.unprocessable_next -= 1
                return 422, {"type": "https://agentca.dev/problems/other", "title": "No"}
            try:
                batch = ActionBatch.from_json(json.loads(body))
            except ValueError as exc:
                return 400, {"title": "Bad batch", "detail": str(exc)}
            if batch.gateway != self.gateway:
                return 403, {"title": "Forbidden"}
            first = batch.records[0].seq
            self.posts.append((first, len(batch.records)))
            cp = batch.checkpoint
            if cp is not None and self.registered_key_id not in (None, cp.key_id):
                self.checkpoints_refused += 1
                return 422, {
                    "type": "https://agentca.dev/problems/checkpoint-invalid",
                    "title": "Invalid gateway checkpoint",
                    "detail": f"the checkpoint names key {cp.key_id}, not the gateway's "
                    "registered key",
                }
            if self.max_records is not None and len(batch.records) > self.max_records:
                return 413, {"title": "Too large"}
            if first > self.next_seq:
                return 422, {
                    "type": "https://agentca.dev/problems/action-sequence-gap",
                    "title": "Gap",
                    "next_seq": self.next_seq,
                }
            accepted = duplicates = 0
            for record in batch.records:
                leaf = record.leaf_bytes()
                held = self.records.get(record.seq)
                if held is None:
                    self.records[record.seq] = leaf
                    accepted += 1
                elif held == leaf:
                    duplicates += 1
                else:
                    return 409, {"title": "Conflict", "detail": f"seq {record.seq} differs"}
            if cp is not None:
                size = self.next_seq
                assert cp.tree_size <= size, "a checkpoint the CA cannot check yet"
                leaves = [ActionRecord.from_json(json.loads(self.records[i])).leaf_hash()
                          for i in range(cp.tree_size)]  # fmt: skip
                assert MerkleTree(leaves).root() == cp.root_hash
                self.checkpoints_ok += 1
            next_seq = self.next_seq if self.claim_next is None else self.claim_next
            return 200, {"accepted": accepted, "duplicates": duplicates, "next_seq": next_seq}


class CaStandIn:
    """A real HTTP server on ``port`` serving a :class:`FakeLedger`; start and stop at will."""

    def __init__(self, ledger: FakeLedger, port: int) -> None:
        self.ledger = ledger
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ledger = self.ledger

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path != "/v1/actions":
                    status, doc = 404, {"title": "Not found"}
                else:
                    status, doc = ledger.handle(self.headers.get("Authorization"), body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                kind = "application/json" if status == 200 else "application/problem+json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join(5)
            self.server = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
