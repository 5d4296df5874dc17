"""A lean gunicorn worker for the OCSP app: one event loop per process, HTTP/1.1 keep-alive.

gunicorn's sync worker spends more time parsing HTTP in Python than the responder spends on a
cached answer (a hello-world app served about 4.5k requests/s on the benchmark box), and it
cannot keep connections alive. This worker multiplexes many connections in one thread with
``selectors``, parses only what OCSP needs (request line, Content-Length, Content-Type,
Connection, If-None-Match, Expect) and calls the same WSGI app, so ``/health`` and every other
URL still go through Flask.

Misses off the loop (decision 0044): the loop answers what needs no I/O itself (an answer in
the responder's hot cache, ``Responder.cached``; a refused request), through the app's
``agentca_ocsp_inline`` hook. Everything else (a miss: status query and HSM signature; a poll
that is due; nonce requests; ``/health`` and the other Flask URLs) goes to **one** responder
thread per worker, which makes every ``Responder.respond`` call (the responder is not
thread-safe). The connection is parked meanwhile (out of the selector: nothing more is read
from it, so keep-alive answers stay in order, one request in flight per connection) and
resumed when the thread's answer arrives through a wake-up pipe in the selector; the other
connections are served meanwhile. At most ``QUEUE_LIMIT`` requests wait for or run on the
thread: beyond that an OCSP request is answered ``tryLater`` and any other URL 503.

Balanced workers (decision 0044): all workers share the master's listening socket (0015),
and the kernel wakes all of them for a new connection. With siblings, a woken worker accepts
at most its share of the accept queue (its length from ``TCP_INFO`` divided by the number of
workers, rounded up), and none while it holds more connections than the least-loaded sibling
plus a slack (``ocsp.worker_board``, counts in memory shared across the fork): it leaves the
queue to the others for at most ``worker_board.DEFER_SECONDS``, then takes its share anyway,
so a stuck sibling delays no connection for longer than that.

Limits (the responder faces the internet; see docs/security.md):
- the request head is parsed strictly (``ca.http1``) and is at most 8 KiB, checked on every
  read, with or without its final CRLF CRLF;
- each request has a total deadline of ``REQUEST_SECONDS`` from its first byte to its last body
  byte: trickling one byte at a time does not extend it (an idle keep-alive connection with no
  request started is closed after gunicorn's ``keepalive`` seconds);
- body at most ``MAX_BODY`` (a larger declared body is answered without being read, then the
  connection is closed), no chunked request bodies (411);
- at ``worker_connections`` the listening sockets leave the selector until a connection
  closes, so a full worker sleeps instead of spinning on a readable listener; one client
  address holds at most ``PER_CLIENT_SHARE`` of a worker's connections (extra ones are closed
  at accept);
- a worker whose master died (kill -9) takes what waits in the backlog, closes its listeners
  at once so that a new master can bind, and serves its open connections for at most
  ``ORPHAN_SECONDS`` more (issue 10 item 6, decision 0015);
- on a graceful stop the loop stops accepting and finishes the requests parked on the
  responder thread (at most ``graceful_timeout``, capped at ``ORPHAN_SECONDS``), then exits;
- a request parked longer than ``PARK_SECONDS`` (a wedged HSM or database) loses its
  connection; its late answer is dropped.

Why one module of this size: one gunicorn worker's event loop and per-connection state machine
for the responder; its states only make sense together.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import select
import selectors
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

from gunicorn.workers.base import Worker

from ca.http1 import HeadError, parse_head
from ocsp import worker_board

MAX_HEAD = 8 * 1024
MAX_BODY = 16 * 1024
DRAIN_SECONDS = 2.0
ORPHAN_SECONDS = 5.0  # a worker whose master died serves its open connections this long at most
REQUEST_SECONDS = 5.0  # first byte of a request to its last body byte
PER_CLIENT_SHARE = 4  # one address may hold 1/4 of a worker's connections
QUEUE_LIMIT = 64  # requests waiting for or on the responder thread, per worker
TICK_SECONDS = 0.05  # the idle responder thread looks at the feed's poll timer this often
PREFETCH_MAX = 32  # queued requests whose stored answers are read in one query
_TICK: Any = ("tick",)  # not a job: the responder thread's timer went off
PARK_SECONDS = 15.0  # a request waiting this long for the responder thread loses its connection
ACCEPT_BATCH = 64  # connections accepted per wake-up at most
_TCPI_UNACKED = 24  # offset of tcpi_unacked in struct tcp_info: a listener's accept queue

_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    408: "Request Timeout",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _Conn:
    __slots__ = (
        "addr",
        "buf",
        "close_after",
        "continued",
        "draining",
        "host",
        "last",
        "out",
        "parked",
        "sock",
        "started",
    )

    def __init__(self, sock: socket.socket, addr: Any) -> None:
        self.sock = sock
        self.addr = addr
        self.host = str(addr[0]) if isinstance(addr, tuple) else ""
        self.started: float | None = None  # when the request being read sent its first byte
        self.buf = b""
        self.out = b""
        self.last = time.monotonic()
        self.close_after = False
        self.draining = False
        self.continued = False
        self.parked: float | None = None  # since when its request waits for the responder thread


class _Capture:
    """The ``start_response`` of one request."""

    __slots__ = ("headers", "status")

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return None


def queued_connections(listener: Any) -> int | None:
    """How many connections wait in ``listener``'s accept queue (Linux TCP_INFO), or None."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_UNACKED + 8)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_UNACKED + 4:
        return None
    return int(struct.unpack_from("=I", info, _TCPI_UNACKED)[0])


def fair_share(queued: int | None, workers: int) -> int:
    """Connections a woken worker takes: all (up to ``ACCEPT_BATCH``) alone or when the queue
    length is unknown, else its share of the queue rounded up (0 for an empty queue)."""
    if workers <= 1 or queued is None:
        return ACCEPT_BATCH
    return min(ACCEPT_BATCH, -(-queued // workers))


class OcspWorker(Worker):  # type: ignore[misc]
    """gunicorn worker class ``ocsp.worker.OcspWorker`` (see the module docstring)."""

    alive: bool
    nr: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = worker_board.claim(self)  # in the master, before the fork

    def init_process(self) -> None:
        self._date = (0, "")  # (second, HTTP date): one tuple, read by both threads
        super().init_process()

    # -- loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        sel = selectors.DefaultSelector()
        self._sel = sel
        for listener in self.sockets:
            listener.setblocking(False)
            sel.register(listener, selectors.EVENT_READ, None)
        self._listening = True
        sel.register(self.PIPE[0], selectors.EVENT_READ, "pipe")
        conns: dict[int, _Conn] = {}
        self._conns = conns
        self._per_host: dict[str, int] = {}
        self._limit = int(self.cfg.worker_connections or 1000)
        self._per_client = max(1, self._limit // PER_CLIENT_SHARE)
        self._workers = int(self.cfg.workers or 1)
        self._defer_until = 0.0  # listeners left to the siblings until then (0: not deferring)
        self._after_defer = False  # the next accept takes its share whatever the loads
        extensions = getattr(self.wsgi, "extensions", {})
        self._inline: Callable[..., Iterable[bytes] | None] | None = extensions.get(
            "agentca_ocsp_inline"
        )
        self._busy: Callable[..., Iterable[bytes] | None] | None = extensions.get(
            "agentca_ocsp_busy"
        )
        self._start_responder_thread()
        idle = float(self.cfg.keepalive or 2)
        next_sweep = time.monotonic() + 1.0
        orphaned_at: float | None = None
        orphan_grace = min(float(self.cfg.graceful_timeout or 0), ORPHAN_SECONDS)
        self._released = False
        # the app's per-second hook: answer counts to the Prometheus counters (ocsp.metrics)
        flush = extensions.get("agentca_ocsp_flush")
        while self.alive:
            self.notify()
            timeout = 1.0
            if self._defer_until:
                timeout = max(0.0, self._defer_until - time.monotonic())
            for key, mask in sel.select(timeout=timeout):
                self._event(key, mask)
            now = time.monotonic()
            if self._defer_until and now >= self._defer_until:
                self._defer_until, self._after_defer = 0.0, True
                self._resume_listening()
            accepting = not self._released and len(conns) < self._limit
            worker_board.publish(
                self._slot, len(conns) if accepting else worker_board.UNAVAILABLE, now
            )
            if now >= next_sweep:
                next_sweep = now + 1.0
                if flush is not None:
                    try:
                        flush()
                    except Exception:  # metrics must never stop the responder
                        self.log.exception("flushing the OCSP answer counts failed")
                self._sweep(now, idle)
                if orphaned_at is None and self.ppid != os.getppid():
                    self.log.info("Parent changed, closing listeners, finishing: %s", self)
                    self._release_listeners()
                    orphaned_at = now
                if orphaned_at is not None and (not conns or now - orphaned_at > orphan_grace):
                    break
        else:
            self._finish_parked(time.monotonic() + orphan_grace, idle)
        worker_board.publish(self._slot, worker_board.UNAVAILABLE, time.monotonic())
        self._stop_responder_thread()
        for conn in list(conns.values()):
            self._close(conn)
        sel.close()
        for fd in self._wake:
            with contextlib.suppress(OSError):
                os.close(fd)
        if flush is not None:
            with contextlib.suppress(Exception):
                flush()

    def _event(self, key: selectors.SelectorKey, mask: int) -> None:
        data = key.data
        if data is None:
            self._accept(key.fileobj)
        elif data == "pipe":
            with contextlib.suppress(OSError):
                os.read(self.PIPE[0], 1)
        elif data == "wake":
            self._answers_arrived()
        elif mask & selectors.EVENT_WRITE:
            self._flush(data)
        else:
            self._read(data)

    def _sweep(self, now: float, idle: float) -> None:
        """Close connections past their deadline, idle ones, and parked ones stuck too long."""
        for conn in list(self._conns.values()):
            if conn.parked is not None:
                if now - conn.parked > PARK_SECONDS:
                    self.log.warning("no answer from the responder thread in %.0f s", PARK_SECONDS)
                    self._close(conn)
                continue
            if conn.started is not None and not conn.draining:
                if now - conn.started > REQUEST_SECONDS:
                    self._close(conn)  # a request deadline: no answer owed
                continue
            limit = DRAIN_SECONDS if conn.draining else idle
            if now - conn.last > limit:
                self._close(conn)

    def _finish_parked(self, deadline: float, idle: float) -> None:
        """Graceful stop: accept nothing more; send the answers still owed by the responder
        thread and what is left to write, until ``deadline``."""
        self._pause_listening()
        while time.monotonic() < deadline and (
            self._pending or any(c.out for c in self._conns.values())
        ):
            self.notify()
            for key, mask in self._sel.select(timeout=0.2):
                self._event(key, mask)
            self._sweep(time.monotonic(), idle)

    # -- the responder thread -----------------------------------------------------------------
    def _start_responder_thread(self) -> None:
        self._pending = 0  # handed to the thread, answer not yet back (loop thread only)
        self._jobs: queue.SimpleQueue[tuple[_Conn, str, dict[str, Any]] | None] = (
            queue.SimpleQueue()
        )
        self._answers: deque[tuple[_Conn, bytes]] = deque()
        self._wake = os.pipe()
        for fd in self._wake:
            os.set_blocking(fd, False)
        self._sel.register(self._wake[0], selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=self._responder_loop, name="ocsp-responder", daemon=True
        )
        self._thread.start()

    def _stop_responder_thread(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=1.0)  # a thread stuck in the HSM ends with the process

    def _responder_loop(self) -> None:
        """The responder thread: every call of the app that may do I/O, one after another."""
        extensions = getattr(self.wsgi, "extensions", {})
        tick = extensions.get("agentca_ocsp_tick")
        prefetch = extensions.get("agentca_ocsp_prefetch")
        ready: deque[Any] = deque()
        while True:
            if ready:
                job = ready.popleft()
            else:
                try:
                    job = self._jobs.get(timeout=TICK_SECONDS if tick is not None else None)
                except queue.Empty:
                    job = _TICK
                if tick is not None:
                    # the feed is polled here, on the thread that owns the responder, so that
                    # answers from the hot cache can stay on the loop (they never poll)
                    tick()
                if prefetch is not None and job is not _TICK and job is not None:
                    # several requests waiting: their stored answers in one round trip
                    while len(ready) < PREFETCH_MAX:
                        try:
                            ready.append(self._jobs.get_nowait())
                        except queue.Empty:
                            break
                    if ready:
                        batch = [job, *ready]
                        with contextlib.suppress(Exception):
                            prefetch([j[2] for j in batch if j is not None])
            if job is _TICK:
                continue
            if job is None:
                return
            conn, method, environ = job
            try:
                data = self._call_app(self.wsgi, conn, method, environ)
            except Exception:  # the loop must get an answer back whatever happens
                self.log.exception("Error handling request")
                data = None
            if data is None:
                data = self._plain(conn, 500)
            self._answers.append((conn, data))
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake[1], b"\0")  # a full pipe already wakes the loop

    def _answers_arrived(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self._wake[0], 4096)
        while self._answers:
            conn, data = self._answers.popleft()
            self._pending -= 1
            if conn.parked is None or self._conns.get(conn.sock.fileno()) is not conn:
                continue  # closed meanwhile (deadline, stop): the answer is dropped
            conn.parked = None
            conn.last = time.monotonic()
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            self._write(conn, data)
            if conn.buf and self._conns.get(conn.sock.fileno()) is conn:
                self._process(conn)  # a pipelined request waited behind this one

    def _accept(self, listener: Any, share: bool = True) -> None:
        batch = ACCEPT_BATCH
        if share and self._workers > 1:
            batch = self._share(listener)
        for _ in range(batch):
            if len(self._conns) >= self._limit:
                self._pause_listening()
                return
            try:
                sock, addr = listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED):
                    self.log.warning("accept failed: %s", exc)
                return
            conn = _Conn(sock, addr)
            held = self._per_host.get(conn.host, 0)
            if held >= self._per_client:
                with contextlib.suppress(OSError):
                    sock.close()  # this address already holds its share of the worker
                continue
            self._per_host[conn.host] = held + 1
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _share(self, listener: Any) -> int:
        """How many queued connections to take now (0: leave them to the siblings)."""
        batch = fair_share(queued_connections(listener), self._workers)
        if batch == 0 or self._after_defer:
            self._after_defer = False
            return batch
        now = time.monotonic()
        least = worker_board.least_other(self._slot, now)
        if least is None:
            return batch
        room = least + worker_board.SLACK + least // 2 + 1 - len(self._conns)
        if room <= 0:  # a sibling holds fewer: leave the queue to it for a moment
            self._pause_listening()
            self._defer_until = now + worker_board.DEFER_SECONDS
            return 0
        return min(batch, room)

    def _pause_listening(self) -> None:
        """Full: stop watching the listeners, or a readable backlog wakes the loop forever."""
        if self._listening:
            for listener in self.sockets:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(listener)
            self._listening = False

    def _release_listeners(self) -> None:
        """The master is gone: take what waits in the backlog, then close the listeners so a
        new master can bind (decision 0015); open connections are served until they end."""
        self._pause_listening()
        self._released = True
        for listener in self.sockets:
            for _ in range(max(1, self._limit // ACCEPT_BATCH)):
                if len(self._conns) >= self._limit:
                    break
                try:
                    if not select.select([listener], [], [], 0)[0]:
                        break
                except (OSError, ValueError):
                    break
                self._accept(listener, share=False)
            with contextlib.suppress(OSError):
                listener.close()

    def _resume_listening(self) -> None:
        if self._released or self._defer_until:
            return
        if not self._listening and len(self._conns) < self._limit and self.alive:
            for listener in self.sockets:
                self._sel.register(listener, selectors.EVENT_READ, None)
            self._listening = True

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            if self._conns.pop(fd, None) is not None:
                left = self._per_host.get(conn.host, 1) - 1
                if left > 0:
                    self._per_host[conn.host] = left
                else:
                    self._per_host.pop(conn.host, None)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self._resume_listening()

    def _finish(self, conn: _Conn) -> None:
        """Close after the last response: at once if nothing is unread, else drain first."""
        if not conn.buf and not conn.draining:
            self._close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.draining, conn.buf, conn.last = True, b"", time.monotonic()

    # -- I/O ----------------------------------------------------------------------------------
    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.last = time.monotonic()
        if conn.draining or conn.close_after:
            return
        if conn.started is None:
            conn.started = conn.last
        conn.buf += data
        self._process(conn)

    def _write(self, conn: _Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent < len(data):
            conn.out = data[sent:]
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
        elif conn.close_after:
            self._finish(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        conn.last = time.monotonic()
        if not conn.out:
            if conn.close_after:
                self._finish(conn)
            else:
                self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
                if conn.buf:
                    self._process(conn)

    # -- HTTP ---------------------------------------------------------------------------------
    def _simple(self, conn: _Conn, code: int) -> None:
        conn.close_after = True
        self._write(conn, self._plain(conn, code))

    def _plain(self, conn: _Conn, code: int) -> bytes:
        body = f"{code} {_REASONS[code]}\n".encode()
        return (
            f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n".encode()
            + (b"Connection: close\r\n\r\n" if conn.close_after else b"\r\n")
            + body
        )

    def _process(self, conn: _Conn) -> None:
        while conn.buf and not conn.out and not conn.close_after and conn.parked is None:
            buf = conn.buf
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(buf) >= MAX_HEAD + 4:
                    self._simple(conn, 431)
                return
            try:
                head = parse_head(buf[:end])
            except HeadError as exc:
                self._simple(conn, exc.status)
                return
            method, target, version = head.method, head.target, head.version
            headers, length = head.headers, head.content_length
            skip_body = length > MAX_BODY
            start = end + 4
            if not skip_body and len(buf) < start + length:
                expect = headers.get("HTTP_EXPECT", "").lower()
                if expect == "100-continue" and not conn.continued:
                    conn.continued = True
                    self._write(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            body = b"" if skip_body else buf[start : start + length]
            conn.buf = b"" if skip_body else buf[start + length :]
            conn.continued = False
            conn.started = time.monotonic() if conn.buf else None
            connection = headers.get("HTTP_CONNECTION", "").lower()
            keep = (
                self.alive
                and not skip_body
                and (
                    "keep-alive" in connection
                    if version == "HTTP/1.0"
                    else "close" not in connection
                )
            )
            self.nr += 1
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
                keep = False
            conn.close_after = not keep
            self._respond(conn, method, target, version, headers, body, length)

    def _environ(
        self,
        conn: _Conn,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
        length: int,
    ) -> dict[str, Any]:
        path, _, query = target.partition("?")
        bound = self.cfg.address[0] if self.cfg.address else None
        host, port = bound[:2] if isinstance(bound, tuple) else ("localhost", 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": version,
            "REMOTE_ADDR": str(conn.addr[0]) if isinstance(conn.addr, tuple) else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        environ.update(headers)
        if "HTTP_CONTENT_TYPE" in headers:
            environ["CONTENT_TYPE"] = environ.pop("HTTP_CONTENT_TYPE")
        if "HTTP_CONTENT_LENGTH" in headers:
            environ["CONTENT_LENGTH"] = environ.pop("HTTP_CONTENT_LENGTH")
        return environ

    def _http_date(self) -> str:
        now = int(time.time())
        date = self._date
        if now != date[0]:
            date = self._date = (now, formatdate(now, usegmt=True))
        return date[1]

    def _respond(
        self,
        conn: _Conn,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
        length: int,
    ) -> None:
        """Answer on the loop if the app can without I/O, else park ``conn`` for the thread."""
        try:
            environ = self._environ(conn, method, target, version, headers, body, length)
        except Exception:
            self.log.exception("Error handling request")
            self._write(conn, self._plain(conn, 500))
            return
        if self._inline is not None:
            data = self._call_app(self._inline, conn, method, environ)
            if data is not None:
                self._write(conn, data)
                return
            environ["wsgi.input"] = io.BytesIO(body)  # the inline attempt read it
        if self._pending >= QUEUE_LIMIT:
            data = None if self._busy is None else self._call_app(self._busy, conn, method, environ)
            self._write(conn, data if data is not None else self._plain(conn, 503))
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)  # parked: nothing more is read until it is answered
        conn.parked = time.monotonic()
        self._pending += 1
        self._jobs.put((conn, method, environ))

    def _call_app(
        self, app: Callable[..., Any], conn: _Conn, method: str, environ: dict[str, Any]
    ) -> Any:
        """The HTTP response bytes ``app`` gives for ``environ`` (None if the app gave None)."""
        capture = _Capture()
        chunks: Iterable[bytes] | None = ()
        try:
            chunks = app(environ, capture)
            if chunks is None:
                return None
            payload = b"".join(chunks)
        except Exception:
            self.log.exception("Error handling request")
            capture.status, capture.headers = "500 Internal Server Error", []
            capture.headers.append(("Content-Type", "text/plain"))
            payload = b"500 Internal Server Error\n"
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        out = [f"HTTP/1.1 {capture.status}\r\n"]
        has_length = False
        for name, value in capture.headers:
            lower = name.lower()
            if lower == "connection":
                continue
            if lower == "content-length":
                has_length = True
            out.append(f"{name}: {value}\r\n")
        if not has_length and not capture.status.startswith("304"):
            out.append(f"Content-Length: {len(payload)}\r\n")
        out.append(f"Date: {self._http_date()}\r\n")
        out.append("Connection: close\r\n\r\n" if conn.close_after else "\r\n")
        data = "".join(out).encode("latin-1")
        if method != "HEAD" and not capture.status.startswith("304"):
            data += payload
        return data
