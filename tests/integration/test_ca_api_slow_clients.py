"""The CA API under slow and malformed HTTP clients, over real sockets (issue 9 item 5).

``agentca serve --workers 1`` as ``make run`` starts it (SQLite, SoftHSM2, 4 threads). With
gunicorn's gthread worker four connections that sent an unfinished head held all four threads
and ``/health`` timed out for everyone. Attackers connect from 127.0.0.2 and up so the
per-address limit can be told apart from the normal client on 127.0.0.1. Every adversarial
client here is bounded in connections and seconds and stops by itself.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from ca.api.worker import HEAD_SECONDS, REQUEST_SECONDS
from tests.integration.servers import agentca_server
from tests.integration.test_ocsp_hardening import Trickler, _exchange

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    data_dir = tmp_path_factory.mktemp("slow-ca") / "data"
    with agentca_server(["serve", "--workers", "1"], data_dir, "/health") as (base, _proc):
        url = urllib.parse.urlsplit(base)
        assert url.hostname is not None and url.port is not None
        yield url.hostname, url.port


def _health_seconds(addr: tuple[str, int]) -> float:
    start = time.monotonic()
    answer = _exchange(addr, HEALTH, timeout=3.0)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    return time.monotonic() - start


def _throughput(addr: tuple[str, int], seconds: float) -> tuple[float, float]:
    """Sequential fresh-connection ``GET /health`` for ``seconds``: (requests/s, worst wait)."""
    end = time.monotonic() + seconds
    count, worst = 0, 0.0
    while time.monotonic() < end:
        worst = max(worst, _health_seconds(addr))
        count += 1
    return count / seconds, worst


# ------------------------------------------------------------------------------ slow clients
@pytest.mark.parametrize("attackers", [4, 200])
def test_unfinished_heads_do_not_starve_a_normal_client(
    api: tuple[str, int], attackers: int
) -> None:
    """4 (the reported case: one per thread) and 200 connections trickling unfinished heads
    from two addresses: the normal client keeps half its unloaded rate, never waits 1 s."""
    base_rate, _ = _throughput(api, 1.5)
    attack = Trickler(api, ["127.0.0.2", "127.0.0.3"], attackers)
    try:
        time.sleep(0.5)
        with attack.in_background():
            rate, worst = _throughput(api, 3.0)
    finally:
        attack.close()
    assert rate >= base_rate / 2, (rate, base_rate)
    assert worst < 1.0, worst


def test_a_trickled_head_gets_408_at_its_deadline(api: tuple[str, int]) -> None:
    with socket.create_connection(api, timeout=10) as sock:
        start = time.monotonic()
        sock.setblocking(False)
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100:
            if time.monotonic() - start > HEAD_SECONDS + 3:
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.5)
            with contextlib.suppress(BlockingIOError):
                answer = sock.recv(4096)
                break
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"application/problem+json" in answer
    assert elapsed < HEAD_SECONDS + 2, elapsed


def test_a_trickled_body_gets_408_at_the_request_deadline(api: tuple[str, int]) -> None:
    head = (
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    with socket.create_connection(api, timeout=REQUEST_SECONDS + 5) as sock:
        start = time.monotonic()
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        while time.monotonic() - start < REQUEST_SECONDS + 3:
            with contextlib.suppress(OSError):
                sock.send(b" ")
            time.sleep(0.5)
            with contextlib.suppress(BlockingIOError):
                answer = sock.recv(4096)
                break
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert REQUEST_SECONDS - 1 < elapsed < REQUEST_SECONDS + 2, elapsed


def test_one_address_holds_at_most_a_quarter_of_the_worker(api: tuple[str, int]) -> None:
    """300 unfinished heads from one address: past its share (250 of 1,000) the worker
    closes them at once (503), and the normal client is still served."""
    attack = Trickler(api, ["127.0.0.4"], 300)
    try:
        for byte in b"GET /":
            for sock in attack.socks:
                with contextlib.suppress(OSError):
                    sock.send(bytes([byte]))
            time.sleep(0.3)
        closed = sum(1 for sock in attack.socks if _refused(sock))
        assert 40 <= closed <= 60, closed
        assert _health_seconds(api) < 1.0
    finally:
        attack.close()


def _refused(sock: socket.socket) -> bool:
    """The server answered 503 and closed (or reset, having not read what we sent)."""
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503 ")


class _SlowReader:
    """A connection from ``source`` that pipelines ``GET path`` and never reads an answer."""

    def __init__(self, addr: tuple[str, int], source: str, path: bytes) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind((source, 0))
        self.sock.connect(addr)
        self.sock.setblocking(False)
        request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        with contextlib.suppress(BlockingIOError):
            self.sock.send(request * 20)


def test_clients_that_never_read_their_answers_do_not_hold_the_threads(
    api: tuple[str, int],
) -> None:
    """Four clients (one per thread) pipeline requests for the 61 KB OpenAPI document and
    never read: the answers stop fitting in the socket buffers. The normal client keeps half
    its unloaded rate and never waits 1 s; each slow reader is cut off at the deadline."""
    base_rate, _ = _throughput(api, 1.5)
    readers = [_SlowReader(api, f"127.0.0.{i}", b"/openapi.json") for i in range(5, 9)]
    try:
        time.sleep(0.5)
        rate, worst = _throughput(api, 3.0)
        time.sleep(REQUEST_SECONDS + 1)
        cut = sum(1 for r in readers if _drained_and_closed(r.sock))
    finally:
        for r in readers:
            r.sock.close()
    assert rate >= base_rate / 2, (rate, base_rate)
    assert worst < 1.0, worst
    assert cut == len(readers)


def _drained_and_closed(sock: socket.socket) -> bool:
    """Read what was sent: True when the peer closed the connection (EOF or reset)."""
    try:
        while data := sock.recv(1 << 20):
            del data
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_clients_that_never_close_do_not_stall_the_loop(api: tuple[str, int]) -> None:
    """Answers that end a connection linger for the peer's FIN (RFC 9112 section 9.6). That
    wait was a blocking 2 s call on the loop: ten HTTP/1.0 clients that neither read nor
    close took the worker down for everyone."""
    socks = []
    try:
        for _ in range(10):
            sock = socket.socket()
            sock.bind(("127.0.0.9", 0))
            sock.connect(api)
            sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            socks.append(sock)
        time.sleep(0.1)
        rate, worst = _throughput(api, 2.0)
    finally:
        for sock in socks:
            sock.close()
    assert rate > 20 and worst < 1.0, (rate, worst)


def _idle_keep_alive(addr: tuple[str, int], source: str, n: int) -> list[socket.socket]:
    """``n`` connections from ``source`` that each make one request, then sit idle."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(3)
        try:
            sock.connect(addr)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answered = sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        except OSError:
            answered = False
        if answered:
            socks.append(sock)
        else:
            sock.close()
    return socks


def test_idle_keep_alive_connections_cannot_fill_the_worker(api: tuple[str, int]) -> None:
    """Five addresses hold 240 idle kept-alive connections each (1,200 for a worker of
    1,000): one address is capped at its share, and a full worker evicts its oldest idle
    connection for a new client instead of ceasing to accept."""
    held: list[socket.socket] = []
    try:
        for i in range(5):
            held += _idle_keep_alive(api, f"127.0.1.{i + 1}", 240)
        assert _health_seconds(api) < 1.0
        rate, worst = _throughput(api, 1.0)
        assert rate > 20 and worst < 1.0, (rate, worst)
        extra = _idle_keep_alive(api, "127.0.1.9", 300)
        assert len(extra) <= 250  # one address: a quarter of the worker
        held += extra
    finally:
        for sock in held:
            sock.close()


# ------------------------------------------------------------------------------ framing
@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}", 400),
        (
            b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            411,
        ),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 60_000 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\nHost: x\n\n", 400),
        (b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # refused by gunicorn's parser
        (b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n", 417),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 70 + b"\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ],
    ids=[
        "signed-length",
        "chunked",
        "huge-head",
        "bare-lf",
        "huge-body",
        "lowercase-method",
        "expectation",
        "many-fields",
        "long-target",
    ],
)
def test_malformed_requests_get_a_problem_and_a_close(
    api: tuple[str, int], payload: bytes, status: int
) -> None:
    answer = _exchange(api, payload)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"application/problem+json" in answer.split(b"\r\n\r\n")[0]


def test_keep_alive_pipelining_and_100_continue_still_work(api: tuple[str, int]) -> None:
    two = HEALTH.replace(b"Connection: close\r\n", b"") + HEALTH
    answer = _exchange(api, two)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:500]
    with socket.create_connection(api, timeout=5) as sock:
        sock.sendall(
            b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"{}")
        rest = b""
        while data := sock.recv(65536):
            rest += data
    final = rest.split(b"HTTP/1.1 100 Continue\r\n\r\n")[-1]
    assert final.startswith(b"HTTP/1.1 401 "), rest[:300]  # no enrollment token: a problem
    assert b"application/problem+json" in final
    assert _health_seconds(api) < 1.0


# ------------------------------------------------------------------------------ large bodies
def _post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nAuthorization: Bearer not-a-token\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_only_the_action_endpoint_takes_a_batch_sized_body(api: tuple[str, int]) -> None:
    """An action batch of 1,000 records is far past the 64 KiB every other body may hold:
    ``/v1/actions`` reads it (and then refuses the missing credential), ``/v1/enroll``
    answers 413 before reading it, and past MAX_ACTIONS_BODY the action endpoint does too."""
    from ca.api.action_routes import MAX_ACTIONS_BODY

    body = b"{" + b" " * (300 * 1024) + b"}"
    answer = _exchange(api, _post_head("/v1/actions", len(body)) + body, timeout=10)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    answer = _exchange(api, _post_head("/v1/enroll", len(body)) + body, timeout=10)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    answer = _exchange(api, _post_head("/v1/actions", MAX_ACTIONS_BODY + 1), timeout=10)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    answer = _exchange(api, _post_head("/v1/actions?x=1", len(body)) + body, timeout=10)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]


def test_unfinished_large_bodies_share_one_bounded_budget(api: tuple[str, int]) -> None:
    """Connections that announce 4 MiB action batches and never send them: the worker reads
    at most LARGE_BODY_BUDGET bytes of such bodies at once; the next gets 503 with
    Retry-After at once, and a normal client is served meanwhile."""
    from ca.api.action_routes import MAX_ACTIONS_BODY
    from ca.api.worker import LARGE_BODY_BUDGET

    fits = LARGE_BODY_BUDGET // MAX_ACTIONS_BODY
    held = []
    try:
        for i in range(fits):
            sock = socket.create_connection(api, source_address=(f"127.0.0.{2 + i}", 0))
            sock.sendall(_post_head("/v1/actions", MAX_ACTIONS_BODY) + b"{")
            held.append(sock)
        time.sleep(0.3)
        start = time.monotonic()
        answer = _exchange(api, _post_head("/v1/actions", MAX_ACTIONS_BODY) + b"{", timeout=5)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:300]
        assert b"\r\nRetry-After: 1\r\n" in answer and time.monotonic() - start < 1.0
        assert _health_seconds(api) < 1.0
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)  # the held bodies are forgotten once their connections close
    body = b"{" + b" " * (1024 * 1024) + b"}"
    answer = _exchange(api, _post_head("/v1/actions", len(body)) + body, timeout=10)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
