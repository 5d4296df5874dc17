"""``ocsp.worker.OcspWorker``: work that may block runs on the responder thread while the event
loop keeps serving (decision 0044), under real gunicorn over loopback sockets.

The app is ``tests.support.slow_wsgi``: ``/fast`` is answered by the inline hook (a hot-cache
hit), ``/slow`` sleeps on the responder thread (a miss), ``/wait`` holds the thread until
``/release``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def gunicorn(
    workers: int = 1, connections: int = 400
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn with ``OcspWorker`` serving the slow app; yields (port, master)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "ocsp.worker.OcspWorker", "-w", str(workers),
         "-b", f"127.0.0.1:{port}", "--worker-connections", str(connections),
         "--graceful-timeout", "5", "--keep-alive", "5", "--no-control-socket",
         "tests.support.slow_wsgi:app"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    send(sock, "/fast", close=True)
                    if read_response(sock).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def send(sock: socket.socket, path: str, close: bool = False) -> None:
    extra = "Connection: close\r\n" if close else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response (head and Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` pipelined responses, split by their Content-Length (one recv may hold
    several: the worker writes an answer and the next inline one back to back)."""
    data, out = b"", []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            length = 0
            for line in data[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(data) >= end:
                out.append(data[:end])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return out


def body_of(response: bytes) -> str:
    return response.partition(b"\r\n\r\n")[2].decode()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_cached_answers_do_not_wait_for_a_slow_miss() -> None:
    with gunicorn() as (port, _):
        slow, fast = connect(port), connect(port)
        with slow, fast:
            started = time.monotonic()
            send(slow, "/slow?s=1.5")
            time.sleep(0.1)  # the miss is on the responder thread now
            waits = []
            for _ in range(20):  # keep-alive: the same connection, one request at a time
                t0 = time.monotonic()
                send(fast, "/fast")
                answer = read_response(fast)
                waits.append(time.monotonic() - t0)
                assert answer.startswith(b"HTTP/1.1 200"), answer
                assert "thread=MainThread" in body_of(answer)  # the event loop answered it
            fast_done = time.monotonic() - started
            answer = read_response(slow)
            slow_done = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 200") and "slow" in body_of(answer)
        assert "thread=ocsp-responder" in body_of(answer)
        assert slow_done >= 1.5
        assert fast_done < 1.0, f"the cached answers waited for the miss: {waits}"
        assert max(waits) < 0.5, waits


def test_keep_alive_answers_stay_in_order_behind_a_parked_request() -> None:
    with gunicorn() as (port, _), connect(port) as sock:
        # three pipelined requests: the parked first one must be answered first
        sock.sendall(
            b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        )
        first, second, third = (body_of(r) for r in read_responses(sock, 3))
        assert first.startswith("slow "), first
        assert second.startswith("fast "), second
        assert third.startswith("echo hello "), third  # the body reached the thread intact


def test_full_queue_is_refused_not_grown() -> None:
    from ocsp.worker import QUEUE_LIMIT

    with gunicorn(connections=4 * (QUEUE_LIMIT + 8)) as (port, _):
        socks = [connect(port) for _ in range(QUEUE_LIMIT + 1)]
        try:
            for sock in socks[:QUEUE_LIMIT]:
                send(sock, "/wait")  # the first holds the thread, the others queue behind it
            time.sleep(0.5)
            t0 = time.monotonic()
            send(socks[QUEUE_LIMIT], "/wait")
            refused = read_response(socks[QUEUE_LIMIT])
            assert time.monotonic() - t0 < 1.0
            assert refused.startswith(b"HTTP/1.1 503") and "busy" in body_of(refused), refused
            with connect(port) as other:
                send(other, "/slow?s=0")  # no busy hook answer for this URL: a plain 503
                plain = read_response(other)
                assert plain.startswith(b"HTTP/1.1 503"), plain
                send(other, "/release")  # inline, while the thread is held
                assert "released" in body_of(read_response(other))
            for sock in socks[:QUEUE_LIMIT]:
                assert "waited" in body_of(read_response(sock))
        finally:
            for sock in socks:
                sock.close()


def test_graceful_stop_finishes_the_parked_request() -> None:
    with gunicorn() as (port, master), connect(port) as sock:
        send(sock, "/slow?s=1")
        time.sleep(0.2)
        master.send_signal(signal.SIGTERM)
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 200") and "slow" in body_of(answer), answer
        assert master.wait(15) == 0


@pytest.mark.parametrize("workers", [2])
def test_a_burst_of_connections_reaches_every_worker(workers: int) -> None:
    """Eight keep-alive connections opened at once (as wrk does), five times: every worker
    serves some of them. Only that is asserted: whether the less-loaded sibling runs within
    the 2 ms a loaded worker waits for it depends on the box's scheduler (on this loaded box a
    burst still went 8/0 now and then); the split is measured by ``make bench-ocsp``."""
    with gunicorn(workers=workers) as (port, _):
        time.sleep(1.0)  # both workers up
        per_burst = []
        served: set[str] = set()
        for _ in range(5):
            socks = []
            for _ in range(8):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
                socks.append(sock)
            pids = []
            for sock in socks:
                sock.setblocking(True)
                sock.settimeout(10)
                send(sock, "/fast")
            for sock in socks:
                pids.append(body_of(read_response(sock)).split("pid=")[1].split()[0])
                served.add(pids[-1])
                sock.close()
            per_burst.append(sorted(pids.count(p) for p in set(pids)))
        assert len(served) == workers, f"connections per worker in each burst: {per_burst}"
