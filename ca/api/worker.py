"""gunicorn worker for the CA API: requests are read whole on the event loop, threads run the app.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first byte
arrives; the thread then blocks reading the rest of the head and the body. Four clients that
send an unfinished head therefore held all four threads of a worker, and ``/health`` timed
out for everyone (issue 9 item 5). This worker keeps the ``gthread`` thread pool and
keep-alive handling but reads each request on the worker's selector loop first:

- the head is parsed strictly (``ca.http1``) and must be complete, at most ``MAX_HEAD``
  bytes, within ``HEAD_SECONDS`` of its first byte;
- the whole request (head and body, at most the app's ``max_request_bytes``) must arrive
  within ``REQUEST_SECONDS``; trickling does not extend either deadline (408 after it);
- no chunked request bodies (411, as RFC 9112 section 6.3 allows);
- one client address may have at most ``1 / PER_CLIENT_SHARE`` of the worker's connections
  in this reading state; extra ones are answered 503 and closed at once;
- only a complete request reaches a thread; the thread's writes go to the kernel or, when a
  client is slow to read, to a per-connection buffer (``MAX_QUEUED``) that the event loop
  writes out within ``REQUEST_SECONDS`` (else the connection is closed), so a client that
  stops reading cannot hold a thread either. The next pipelined request waits for that.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import selectors
import socket
import time
from collections import Counter
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

from ca.http1 import HeadError, parse_head

MAX_HEAD = 16 * 1024
HEAD_SECONDS = 5.0
REQUEST_SECONDS = 10.0
PER_CLIENT_SHARE = 4
MAX_QUEUED = 256 * 1024  # answer bytes per connection the event loop writes for a thread

_BARE_LF = re.compile(rb"(?<!\r)\n")
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _BoundedSocket(socket.socket):
    """A client socket that never lets a thread wait on a slow peer.

    Blocking mode has a ``REQUEST_SECONDS`` timeout. ``sendall`` hands the kernel what it
    takes now and keeps the rest (up to ``MAX_QUEUED`` bytes) for the event loop to write, so
    the thread is free as soon as the app has produced its answer.
    """

    __slots__ = ("out",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = bytearray()

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
        if len(self.out) + len(view) <= MAX_QUEUED:
            self.out += view
            return
        # too much to hold (a large streamed answer): write it here, within the timeout
        pending, self.out = bytes(self.out), bytearray()
        super().sendall(pending + bytes(view), flags)


class _Reading:
    """A request being read: bytes so far, bytes needed (once the head is in), deadline."""

    __slots__ = ("address", "buf", "deadline", "need", "request_deadline", "scanned")

    def __init__(self, address: str, initial: bytes, now: float) -> None:
        self.address = address
        self.buf = bytearray(initial)
        self.need: int | None = None
        self.deadline = now + HEAD_SECONDS
        self.request_deadline = now + REQUEST_SECONDS
        self.scanned = 0  # bytes of buf searched for the end of the head


def response(status: int, detail: str) -> bytes:
    """A complete RFC 9457 ``application/problem+json`` answer that closes the connection."""
    reason = _REASONS.get(status, "Error")
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail})
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()


class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """``gthread`` with requests read whole, under deadlines, before any thread is used."""

    max_body = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, _Reading] = {}
        self.flushing: dict[TConn, tuple[Any, float]] = {}  # answer left to write, deadline
        self.per_address: Counter[str] = Counter()
        self.address_share = max(2, self.worker_connections // PER_CLIENT_SHARE)

    # -- connections entering the reading state -----------------------------------------
    def accept(self, listener: socket.socket) -> None:
        try:
            raw, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        sock = _BoundedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking now
        self._start(conn, b"")

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection has its next request coming: read it here, not in a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start(conn, b"")

    def _start(self, conn: TConn, initial: bytes) -> None:
        address = conn.client[0] if isinstance(conn.client, tuple) else ""
        if self.per_address[address] >= self.address_share:
            self._answer_and_close(conn, None, 503, "too many unfinished requests from here")
            return
        state = _Reading(address, initial, time.monotonic())
        self.reading[conn] = state
        self.per_address[address] += 1
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
            self._close(conn, state)
            return
        if not data:
            self._close(conn, state)
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
                    self._answer_and_close(conn, state, 400, "bare LF in the request head")
                elif len(state.buf) > MAX_HEAD:
                    self._answer_and_close(conn, state, 431, "the request head is too large")
                return
            try:
                head = parse_head(bytes(state.buf[:end]))
            except HeadError as exc:
                self._answer_and_close(conn, state, exc.status, str(exc))
                return
            if head.content_length > self.max_body:
                self._answer_and_close(conn, state, 413, "the request body is too large")
                return
            state.need = end + 4 + head.content_length
            state.deadline = state.request_deadline
            if (
                head.headers.get("HTTP_EXPECT", "").lower() == "100-continue"
                and len(state.buf) < state.need
            ):
                # the thread's gunicorn parser sends its own too; RFC 9110 allows several 1xx
                with contextlib.suppress(OSError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(state.buf) >= state.need:
            self._dispatch(conn, state)

    def _dispatch(self, conn: TConn, state: _Reading) -> None:
        """The request is complete: give it, already buffered, to a thread."""
        self._leave(conn, state)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True  # plain HTTP/1.1 only: no TLS or h2c on this worker
        conn.parser.unreader.unread(bytes(state.buf))
        conn.data_ready = True
        self.enqueue_req(conn)

    # -- leaving -------------------------------------------------------------------------
    def _leave(self, conn: TConn, state: _Reading) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        if self.reading.pop(conn, None) is not None:
            self.per_address[state.address] -= 1
            if self.per_address[state.address] <= 0:
                del self.per_address[state.address]

    def _close(self, conn: TConn, state: _Reading | None) -> None:
        if state is not None:
            self._leave(conn, state)
        self.nr_conns -= 1
        conn.close()

    def _answer_and_close(
        self, conn: TConn, state: _Reading | None, status: int, detail: str
    ) -> None:
        with contextlib.suppress(OSError):
            conn.sock.send(response(status, detail))
        self._close(conn, state)

    def murder_pending(self) -> None:
        """Also end requests past their head or body deadline (408) and unread answers."""
        super().murder_pending()
        now = time.monotonic()
        for conn, state in [(c, s) for c, s in self.reading.items() if s.deadline <= now]:
            what = "head" if state.need is None else "body"
            self._answer_and_close(conn, state, 408, f"the request {what} took too long")
        for conn in [c for c, (_fs, deadline) in self.flushing.items() if deadline <= now]:
            self._abandon(conn)

    # -- after a response ----------------------------------------------------------------
    def finish_request(self, conn: TConn, fs: Any) -> None:
        """As ``gthread``, once the answer is written; a pipelined next request is read here."""
        sock = conn.sock
        if isinstance(sock, _BoundedSocket) and sock.out:
            sock.setblocking(False)
            self.flushing[conn] = (fs, time.monotonic() + REQUEST_SECONDS)
            self.poller.register(sock, selectors.EVENT_WRITE, partial(self._on_writable, conn))
            return
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:
            result = False
        if result and conn.parser is not None and self.alive:
            pending = conn.parser.unreader.take_buffered()
            if pending:
                sock.setblocking(False)
                self._start(conn, pending)
                return
        super().finish_request(conn, fs)

    def _on_writable(self, conn: TConn, _sock: Any) -> None:
        sock = conn.sock
        try:
            sent = sock.send(sock.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abandon(conn)
            return
        del sock.out[:sent]
        if not sock.out:
            fs, _deadline = self.flushing.pop(conn)
            self.poller.unregister(sock)
            self.finish_request(conn, fs)

    def _abandon(self, conn: TConn) -> None:
        """A client that does not read its answer in time loses the connection."""
        self.flushing.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self._close(conn, None)


def worker_class(max_body: int) -> type[BufferedThreadWorker]:
    """The worker class for an app that accepts request bodies of at most ``max_body`` bytes."""
    return type("BufferedThreadWorker", (BufferedThreadWorker,), {"max_body": max_body})
