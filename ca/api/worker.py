"""gunicorn worker for the CA API: requests are read whole on the event loop, threads run the app.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first byte
arrives; the thread then blocks reading the rest of the head and the body. Four clients that
send an unfinished head therefore held all four threads of a worker, and ``/health`` timed
out for everyone (issue 9 item 5). This worker keeps the ``gthread`` thread pool but does
everything that waits on a client on its selector loop (decision 0011):

- the head is parsed strictly (``ca.http1``) and must be complete, at most ``MAX_HEAD``
  bytes, within ``HEAD_SECONDS`` of its first byte;
- the whole request (head and body, at most the app's ``max_request_bytes``, or a POST
  path's own larger limit, e.g. ``/v1/actions``) must arrive within ``REQUEST_SECONDS``;
  trickling does not extend either deadline (408 after it). Bodies past
  ``max_request_bytes`` need a head that claims a bearer token (401 before the body is
  read otherwise); held at once (from their head until their answer is done: read, waiting
  for a thread, or in one) they share ``LARGE_BODY_BUDGET`` bytes per worker, at most a
  ``PER_CLIENT_SHARE`` of it per client address (503 with Retry-After beyond), so large
  uploads cannot exhaust memory and one address cannot hold the whole budget;
- no chunked request bodies (411, as RFC 9112 section 6.3 allows);
- one client address may hold at most ``1 / PER_CLIENT_SHARE`` of the worker's connections,
  whatever their state; a full worker evicts its oldest idle, unfinished or closing
  connection for a new one instead of ceasing to accept;
- only a complete request reaches a thread. The thread's writes go to the kernel or, when a
  client is slow to read, to a per-connection buffer (``MAX_QUEUED``; ``MAX_QUEUED_TOTAL``
  per worker) that the loop writes out by a deadline that allows ``MIN_RATE`` bytes/s, else
  the connection is dropped. Past those buffers a thread writes itself, within
  ``ANSWER_SECONDS`` for the whole answer. The next pipelined request waits for all that;
- closing lingers (RFC 9112 section 9.6) on the loop, at most ``LINGER_SECONDS``, never in a
  blocking call;
- every refusal, gunicorn's own included, is an ``application/problem+json`` answer;
- a worker whose master died (kill -9) takes the connections already waiting in the backlog,
  then closes its listeners at once and only finishes what it holds: gthread kept them open
  through the whole graceful drain, so a new master could not bind (issue 10 item 6,
  decision 0015).

Why one module of this size: one gunicorn worker's event loop and per-connection state machine
(read whole under deadlines, per-address shares, lingering close); its states only make sense
together.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import select
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from ca.http1 import HeadError, RequestHead, parse_head

MAX_HEAD = 16 * 1024
HEAD_SECONDS = 5.0
REQUEST_SECONDS = 10.0
PER_CLIENT_SHARE = 4
MAX_QUEUED = 4 * 1024 * 1024  # answer bytes per connection the loop writes for a thread
MAX_QUEUED_TOTAL = 64 * 1024 * 1024  # and per worker
LARGE_BODY_BUDGET = 16 * 1024 * 1024  # bytes of large bodies one worker reads at once
MIN_RATE = 64 * 1024  # bytes/s a client must read a queued answer at (after REQUEST_SECONDS)
ANSWER_SECONDS = 30.0  # a thread writing an answer past the buffers gives up after this
LINGER_SECONDS = 2.0

_BARE_LF = re.compile(rb"(?<!\r)\n")
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def response(status: int, detail: str) -> bytes:
    """A complete RFC 9457 ``application/problem+json`` answer that closes the connection
    (a 503 says ``Retry-After: 1``)."""
    reason = _REASONS.get(status, "Error")
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail})
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\n"
        f"{retry}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()


class _Queued:
    """Answer bytes held for the loop, summed over the worker's connections."""

    lock = threading.Lock()
    total = 0

    @classmethod
    def take(cls, n: int) -> bool:
        with cls.lock:
            if cls.total + n > MAX_QUEUED_TOTAL:
                return False
            cls.total += n
            return True

    @classmethod
    def give_back(cls, n: int) -> None:
        with cls.lock:
            cls.total -= n


class _BoundedSocket(socket.socket):
    """A client socket that never lets a thread wait on a slow peer for long.

    Blocking mode has a ``REQUEST_SECONDS`` timeout. ``sendall`` hands the kernel what it
    takes now and keeps the rest for the event loop, so the thread is free as soon as the app
    has produced its answer; past the buffers it writes itself within ``answer_deadline``.
    """

    __slots__ = ("answer_deadline", "out")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = bytearray()
        self.answer_deadline = 0.0

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(REQUEST_SECONDS)
        else:
            super().setblocking(False)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        if not self.out:
            timeout = self.gettimeout()
            self.settimeout(0.0)
            try:
                view = view[self.send(view, flags) :]
            except (BlockingIOError, InterruptedError):
                pass
            finally:
                self.settimeout(timeout)
        if not view:
            return
        if len(self.out) + len(view) <= MAX_QUEUED and _Queued.take(len(view)):
            self.out += view
            return
        # too much to hold (a large streamed answer): write it here, by the answer's deadline
        pending = bytes(self.out)
        _Queued.give_back(len(pending))
        self.out = bytearray()
        timeout = self.gettimeout()
        try:
            self.settimeout(max(0.001, self.answer_deadline - time.monotonic()))
            super().sendall(pending + bytes(view), flags)
        finally:
            self.settimeout(timeout)

    def discard(self) -> None:
        """Forget what is queued (the connection is going away)."""
        _Queued.give_back(len(self.out))
        self.out = bytearray()


class _Capture:
    """Stands in for a socket to catch the status of gunicorn's own HTML error page."""

    def __init__(self) -> None:
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data


class _Reading:
    """A request being read: bytes so far, bytes needed (once the head is in), deadline."""

    __slots__ = ("buf", "deadline", "large", "need", "request_deadline", "scanned", "started")

    def __init__(self, initial: bytes, now: float) -> None:
        self.buf = bytearray(initial)
        self.need: int | None = None
        self.started = now
        self.deadline = now + HEAD_SECONDS
        self.request_deadline = now + REQUEST_SECONDS
        self.scanned = 0  # bytes of buf searched for the end of the head
        self.large = 0  # bytes of this body counted in the worker's large-body budget


class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """``gthread`` with requests read whole, under deadlines, before any thread is used."""

    max_body = 64 * 1024
    # POST paths whose bodies may be larger than max_body (exact path: its own limit); the
    # bodies past max_body being read at once share LARGE_BODY_BUDGET bytes per worker
    large_bodies: Mapping[str, int] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.large_in_flight = 0  # bytes of large bodies held: being read or handed on
        self.large_handed: dict[TConn, int] = {}  # dispatched, counted until finish_request
        self.large_per_address: Counter[str] = Counter()  # large-body bytes held per address
        self.limit: int = self.cfg.worker_connections
        self.worker_connections = self.limit + 1  # gthread's run() stops accepting past this
        self.reading: dict[TConn, _Reading] = {}
        self.flushing: dict[TConn, tuple[Any, float]] = {}  # answer left to write, deadline
        self.closing: dict[TConn, float] = {}  # lingering after our FIN, until
        self.address_of: dict[TConn, str] = {}
        self.per_address: Counter[str] = Counter()
        self.address_share = max(2, self.limit // PER_CLIENT_SHARE)

    # -- orphaned ------------------------------------------------------------------------
    def is_parent_alive(self) -> bool:
        """False once the master is gone; then the listeners are handed back right away."""
        if self.ppid == os.getppid():
            return True
        self.log.info("Parent changed, closing listeners and shutting down: %s", self)
        self.release_listeners()
        return False

    def release_listeners(self) -> None:
        """Stop accepting, take what already waits in the backlog, close the listeners."""
        self.set_accept_enabled(False)
        for listener in self.sockets:
            for _ in range(self.limit):  # bounded: at most a worker's worth of connections
                try:
                    ready = select.select([listener], [], [], 0)[0]
                except (OSError, ValueError):
                    break
                if not ready:
                    break
                self.accept(listener)
            with contextlib.suppress(OSError):
                listener.close()

    # -- accepting -----------------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        try:
            raw, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        sock = _BoundedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        address = client[0] if isinstance(client, tuple) else ""
        if self.per_address[address] >= self.address_share or not self._make_room():
            with contextlib.suppress(OSError):
                sock.send(response(503, "too many connections from this address"))
            sock.close()
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking now
        self.address_of[conn] = address
        self.per_address[address] += 1
        self._start(conn, b"")

    def _make_room(self) -> bool:
        """At the limit, end the oldest idle, lingering, unfinished or flushing connection."""
        if self.nr_conns < self.limit:
            return True
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            self._close(conn)
        elif self.closing:
            self._close(next(iter(self.closing)))
        elif self.reading:
            conn = next(iter(self.reading))
            self._answer_and_close(conn, 503, "the server is full; this request was the oldest")
        elif self.flushing:
            self._close(next(iter(self.flushing)))
        else:
            return False  # every connection is in a thread
        return True

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection has its next request coming: read it here, not in a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start(conn, b"")

    def _start(self, conn: TConn, initial: bytes) -> None:
        state = _Reading(initial, time.monotonic())
        self.reading[conn] = state
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if initial:
            self._progress(conn, state)
        else:
            self._on_readable(conn, conn.sock)

    # -- reading -------------------------------------------------------------------------
    def _on_readable(self, conn: TConn, _sock: Any) -> None:
        state = self.reading.get(conn)
        if state is None:
            return
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
        state.buf += data
        self._progress(conn, state)

    def _progress(self, conn: TConn, state: _Reading) -> None:
        if state.need is None:
            # scan only what is new (one read at a time must not cost the whole head again)
            start, state.scanned = max(0, state.scanned - 3), min(len(state.buf), MAX_HEAD + 4)
            end = state.buf.find(b"\r\n\r\n", start, state.scanned)
            if end < 0:
                if _BARE_LF.search(state.buf, max(0, start - 1), state.scanned):
                    self._answer_and_close(conn, 400, "bare LF in the request head")
                elif len(state.buf) > MAX_HEAD:
                    self._answer_and_close(conn, 431, "the request head is too large")
                return
            try:
                head = parse_head(bytes(state.buf[:end]))
            except HeadError as exc:
                self._answer_and_close(conn, exc.status, str(exc))
                return
            limit = self.max_body
            if head.method == "POST" and head.content_length > limit:
                limit = self.large_bodies.get(head.target.partition("?")[0], limit)
            if head.content_length > limit:
                self._answer_and_close(conn, 413, "the request body is too large")
                return
            if head.content_length > self.max_body and not self._take_large(conn, head):
                return
            state.need = end + 4 + head.content_length
            state.deadline = state.request_deadline
            if (
                head.version == "HTTP/1.1"
                and head.headers.get("HTTP_EXPECT", "").lower() == "100-continue"
                and len(state.buf) < state.need
            ):
                # the thread's gunicorn parser sends its own too; RFC 9110 allows several 1xx
                with contextlib.suppress(OSError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(state.buf) >= state.need:
            self._dispatch(conn, state)

    def _take_large(self, conn: TConn, head: RequestHead) -> bool:
        """Count a body past ``max_body`` in the budgets, or answer and close: only with a
        bearer credential (checked by the app later; the head alone must claim one), at most
        ``LARGE_BODY_BUDGET`` per worker and a ``PER_CLIENT_SHARE`` of it per address."""
        n = head.content_length
        if head.headers.get("HTTP_AUTHORIZATION", "")[:7].lower() != "bearer ":
            self._answer_and_close(conn, 401, "a request body this large needs a bearer token")
            return False
        address = self.address_of.get(conn, "")
        if self.large_per_address[address] + n > LARGE_BODY_BUDGET // PER_CLIENT_SHARE:
            self._answer_and_close(conn, 503, "this address is already sending a large body")
            return False
        if self.large_in_flight + n > LARGE_BODY_BUDGET:
            self._answer_and_close(conn, 503, "too many large request bodies are being read")
            return False
        self.reading[conn].large = n
        self.large_in_flight += n
        self.large_per_address[address] += n
        return True

    def _give_large(self, conn: TConn, n: int) -> None:
        """Give ``n`` bytes of ``conn``'s large body back to the budgets."""
        if n:
            self.large_in_flight -= n
            address = self.address_of.get(conn, "")
            self.large_per_address[address] -= n
            if self.large_per_address[address] <= 0:
                del self.large_per_address[address]

    def _dispatch(self, conn: TConn, state: _Reading) -> None:
        """The request is complete: give it, already buffered, to a thread."""
        self._unwatch(conn)
        del self.reading[conn]
        if state.large:  # it stays in memory until the thread is done with it
            self.large_handed[conn] = state.large
            state.large = 0
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True  # plain HTTP/1.1 only: no TLS or h2c on this worker
        conn.parser.unreader.unread(bytes(state.buf))
        conn.data_ready = True
        conn.sock.answer_deadline = time.monotonic() + ANSWER_SECONDS
        self.enqueue_req(conn)

    # -- after a response ----------------------------------------------------------------
    def finish_request(self, conn: TConn, fs: Any) -> None:
        """Write what is queued, then keep the connection alive, read the next pipelined
        request, or close it, all without blocking the loop."""
        self._give_large(conn, self.large_handed.pop(conn, 0))  # the thread has let go of it
        try:
            sock = conn.sock
            if sock.fileno() == -1:  # closed in the thread (an app error mid-answer)
                self._close(conn)
                return
            if sock.out:
                sock.setblocking(False)
                deadline = time.monotonic() + REQUEST_SECONDS + len(sock.out) / MIN_RATE
                self.flushing[conn] = (fs, deadline)
                self.poller.register(sock, selectors.EVENT_WRITE, partial(self._on_writable, conn))
                return
            try:
                keep = bool(fs.result()) if not fs.cancelled() else False
            except Exception:
                keep = False
            if not keep or conn.parser is None:
                self._linger(conn)
                return
            sock.setblocking(False)
            pending = conn.parser.unreader.take_buffered()
            if pending:  # pipelined: read it whole here (after SIGTERM too; it gets a close)
                self._start(conn, pending)
                return
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + LINGER_SECONDS)
            self.keepalived_conns.append(conn)
            self.poller.register(
                sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        except Exception:
            self.log.exception("finishing a request failed")
            self._close(conn)

    def _on_writable(self, conn: TConn, _sock: Any) -> None:
        sock = conn.sock
        try:
            sent = sock.send(sock.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del sock.out[:sent]
        _Queued.give_back(sent)
        if not sock.out:
            fs, _deadline = self.flushing.pop(conn)
            self._unwatch(conn)
            self.finish_request(conn, fs)

    def _linger(self, conn: TConn) -> None:
        """Half-close and read until the peer closes (RFC 9112 section 9.6), on the loop."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.closing[conn] = time.monotonic() + LINGER_SECONDS
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_lingering, conn))

    def _on_lingering(self, conn: TConn, _sock: Any) -> None:
        try:
            if conn.sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close(conn)

    # -- leaving -------------------------------------------------------------------------
    def _unwatch(self, conn: TConn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _forget_reading(self, conn: TConn) -> None:
        state = self.reading.pop(conn, None)
        if state is not None and state.large:
            self._give_large(conn, state.large)
            state.large = 0

    def _close(self, conn: TConn) -> None:
        """The one way a connection ends: every table forgets it, then the socket closes."""
        self._unwatch(conn)
        self._forget_reading(conn)
        self._give_large(conn, self.large_handed.pop(conn, 0))
        self.flushing.pop(conn, None)
        self.closing.pop(conn, None)
        address = self.address_of.pop(conn, None)
        if address is not None:
            self.per_address[address] -= 1
            if self.per_address[address] <= 0:
                del self.per_address[address]
        self.nr_conns -= 1
        if isinstance(conn.sock, _BoundedSocket):
            conn.sock.discard()
        conn.close()

    def _answer_and_close(self, conn: TConn, status: int, detail: str) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(response(status, detail))
        self._close(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        """Close kept-alive connections idle past ``keepalive`` (or all if ``force``)."""
        now = time.monotonic()
        while self.keepalived_conns and (force or self.keepalived_conns[0].timeout <= now):
            self._close(self.keepalived_conns.popleft())

    def murder_pending(self) -> None:
        """End requests past their head or body deadline (408), unread answers, lingerers."""
        super().murder_pending()
        now = time.monotonic()
        for conn, state in [(c, s) for c, s in self.reading.items() if s.deadline <= now]:
            what = "head" if state.need is None else "body"
            self._answer_and_close(conn, 408, f"the request {what} took too long")
        for conn in [c for c, (_fs, deadline) in self.flushing.items() if deadline <= now]:
            self._close(conn)
        for conn in [c for c, deadline in self.closing.items() if deadline <= now]:
            self._close(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's own refusals (limits, methods, Expect) as problems, not HTML."""
        capture = _Capture()
        super().handle_error(req, capture, addr, exc)  # logs, and picks the status
        parts = bytes(capture.data).split(b" ", 2)
        status = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 500
        detail = "the request was refused" if status < 500 else "internal error"
        with contextlib.suppress(OSError):
            client.sendall(response(status, detail))


def worker_class(
    max_body: int, large_bodies: Mapping[str, int] | None = None
) -> type[BufferedThreadWorker]:
    """The worker class for an app that accepts request bodies of at most ``max_body`` bytes,
    and POST bodies up to ``large_bodies[path]`` on those paths."""
    attrs = {"max_body": max_body, "large_bodies": dict(large_bodies or {})}
    return type("BufferedThreadWorker", (BufferedThreadWorker,), attrs)
