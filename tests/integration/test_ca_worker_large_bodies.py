"""The CA worker's large-body budget (``ca.api.worker.LARGE_BODY_BUDGET``) under real gunicorn
over loopback sockets: it bounds the large bodies a worker holds in memory, from their first
byte until their answer is written, not only while they are being read.

The app is ``tests.support.slow_wsgi`` (``/slow`` holds the only thread); the worker takes
4 MiB bodies on ``POST /big`` (``tests.support.large_body_worker``), as ``/v1/actions``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ca.api.worker import LARGE_BODY_BUDGET
from tests.integration.servers import free_port
from tests.integration.test_ocsp_worker_offload import read_response, send
from tests.support.large_body_worker import BIG_BODY

ROOT = Path(__file__).resolve().parents[2]
FITS = LARGE_BODY_BUDGET // BIG_BODY


@pytest.fixture
def server() -> Iterator[tuple[tuple[str, int], int]]:
    """One worker with one thread; yields (address, worker pid)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "tests.support.large_body_worker.Worker",
         "-w", "1", "--threads", "1", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "3",
         "--keep-alive", "5", "--no-control-socket", "tests.support.slow_wsgi:app"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            answer = b""
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
            ):
                send(sock, "/fast", close=True)
                answer = read_response(sock)
            if answer.startswith(b"HTTP/1.1 200"):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        pid = int(answer.split(b"X-Agentca-Worker: ")[1].split(b"\r\n")[0])
        yield ("127.0.0.1", port), pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


BEARER = "Authorization: Bearer any-token\r\n"  # claimed in the head; the app checks it
BIG_HEAD = f"POST /big HTTP/1.1\r\nHost: x\r\n{BEARER}Content-Length: {BIG_BODY}\r\n\r\n".encode()


def _big(addr: tuple[str, int], n: int = 0) -> tuple[socket.socket, bytes | None]:
    """A connection from 127.0.0.(10 + n) that sent a 4 MiB ``POST /big``, or its immediate
    refusal: the body follows the head only if no answer came within 0.2 s (a refused body
    is not sent). One address may hold one such body at a time."""
    sock = socket.create_connection(addr, timeout=15, source_address=(f"127.0.0.{10 + n}", 0))
    head = (
        f"POST /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{BEARER}Content-Length: {BIG_BODY}"
    )
    sock.sendall(head.encode() + b"\r\n\r\n")
    if select.select([sock], [], [], 0.2)[0]:
        return sock, read_response(sock)
    sock.sendall(b"x" * BIG_BODY)
    return sock, None


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _hold_the_thread(addr: tuple[str, int], seconds: float) -> socket.socket:
    sock = socket.create_connection(addr, timeout=seconds + 10)
    send(sock, f"/slow?s={seconds}", close=True)
    time.sleep(0.3)  # the thread has it
    return sock


def test_bodies_waiting_for_a_thread_stay_in_the_budget(
    server: tuple[tuple[str, int], int],
) -> None:
    """Review: the budget was given back when a body was complete, before a thread took it,
    so while the threads were busy any number of complete 4 MiB bodies piled up in memory
    (1,000 connections: 4 GiB per worker). Now a body counts until its answer is written:
    past the budget the next one is 503 at once, and once the thread is free all of it
    comes back (the same number fits again)."""
    addr, pid = server
    slow = _hold_the_thread(addr, 4.0)
    socks: list[socket.socket] = []
    try:
        rss_before = _rss_kib(pid)
        sent = [_big(addr, i) for i in range(FITS + 4)]
        socks = [sock for sock, _answer in sent]
        time.sleep(0.5)
        rss_during = _rss_kib(pid)
        answers = [answer or read_response(sock) for sock, answer in sent]
        assert read_response(slow).startswith(b"HTTP/1.1 200")
    finally:
        slow.close()
        for sock in socks:
            sock.close()
    statuses = [a.split(b" ", 2)[1] for a in answers]
    assert statuses.count(b"200") == FITS, statuses
    assert statuses.count(b"503") == 4, statuses
    held_mib = (rss_during - rss_before) / 1024
    print(f"worker RSS grew by {held_mib:.1f} MiB while the thread was busy")
    assert held_mib < LARGE_BODY_BUDGET / 2**20 * 2.5, held_mib  # bodies and their copies
    _assert_budget_whole(addr)


def _assert_budget_whole(addr: tuple[str, int]) -> None:
    """Nothing leaked: as many bodies as fit the budget are all taken again, concurrently,
    while the thread is busy (and one more is refused: nothing went negative either)."""
    time.sleep(0.5)
    slow = _hold_the_thread(addr, 2.0)
    sent: list[tuple[socket.socket, bytes | None]] = []
    try:
        sent = [_big(addr, i) for i in range(FITS + 1)]
        assert [answer is None for _sock, answer in sent] == [True] * FITS + [False], sent
        assert (sent[-1][1] or b"").startswith(b"HTTP/1.1 503 "), sent[-1][1]
        assert all(read_response(sock).startswith(b"HTTP/1.1 200") for sock, _ in sent[:-1])
    finally:
        slow.close()
        for sock, _answer in sent:
            sock.close()


def test_every_way_a_large_body_ends_gives_its_budget_back(
    server: tuple[tuple[str, int], int],
) -> None:
    """Connections closed mid-head, mid-body and after their body was complete (waiting
    for the thread); a keep-alive connection with two pipelined 4 MiB requests; one with
    ``Expect: 100-continue``: afterwards the whole budget is free, no more."""
    addr, _pid = server
    slow = _hold_the_thread(addr, 3.0)
    try:
        with socket.create_connection(addr, timeout=5) as sock:  # mid-head
            sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Len")
            time.sleep(0.1)
        with socket.create_connection(addr, timeout=5) as sock:  # mid-body
            sock.sendall(BIG_HEAD + b"x" * (BIG_BODY // 2))
            time.sleep(0.1)
        sent = [_big(addr, i) for i in range(FITS)]  # complete, then gone before their answer
        assert [answer for _sock, answer in sent] == [None] * FITS
        time.sleep(0.3)
        for sock, _answer in sent:
            sock.close()
        assert read_response(slow).startswith(b"HTTP/1.1 200")
    finally:
        slow.close()
    _assert_budget_whole(addr)
    head = BIG_HEAD
    with socket.create_connection(addr, timeout=15) as sock:  # pipelined, kept alive
        sock.sendall((head + b"x" * BIG_BODY) * 2)
        send(sock, "/fast")
        data = b""
        while data.count(b"\r\n0\r\n\r\n") < 3 and (chunk := sock.recv(65536)):
            data += chunk  # three chunked answers
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3, data
    with socket.create_connection(addr, timeout=15) as sock:  # 100-continue
        sock.sendall(head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"x" * BIG_BODY)
        answer = read_response(sock)
        while answer.startswith(b"HTTP/1.1 100"):  # the thread's parser says it again
            answer = answer.partition(b"\r\n\r\n")[2] or read_response(sock)
        assert b"HTTP/1.1 200" in answer[:200], answer[:200]
    _assert_budget_whole(addr)


def test_a_large_body_needs_a_bearer_head_and_one_address_holds_one(
    server: tuple[tuple[str, int], int],
) -> None:
    """Review: four trickling connections from one address held the whole budget for the
    request deadline, and every gateway's batch got 503. A body past 64 KiB now needs a
    head that claims a bearer token (401 before a byte of it is read), and one address holds
    at most a quarter of the budget (one 4 MiB body) at a time; other addresses still fit."""
    addr, _pid = server
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(
            f"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG_BODY}\r\n\r\n".encode()
        )
        assert read_response(sock).startswith(b"HTTP/1.1 401 ")
    first, answer = _big(addr, 0)
    try:
        assert answer is None
        second, refused = _big(addr, 0)  # the same address again
        second.close()
        assert (refused or b"").startswith(b"HTTP/1.1 503 "), refused
        assert b"Retry-After: 1" in (refused or b"")
        other, taken = _big(addr, 1)
        assert taken is None
        assert read_response(other).startswith(b"HTTP/1.1 200")
        other.close()
        assert read_response(first).startswith(b"HTTP/1.1 200")
    finally:
        first.close()
    _assert_budget_whole(addr)
