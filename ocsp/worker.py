"""A lean gunicorn worker for the OCSP app: one event loop per process, HTTP/1.1 keep-alive.

gunicorn's sync worker spends more time parsing HTTP in Python than the responder spends on a
cached answer (a hello-world app served about 4.5k requests/s on the benchmark box), and it
cannot keep connections alive. This worker multiplexes many connections in one thread with
``selectors``, parses only what OCSP needs (request line, Content-Length, Content-Type,
Connection, If-None-Match, Expect) and calls the same WSGI app, so ``/health`` and every other
URL still go through Flask. Blocking work (a status query, an HSM signature) pauses the
loop briefly, as it would pause a sync worker; processes provide the parallelism.

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
  ``ORPHAN_SECONDS`` more (issue 10 item 6, decision 0015).

Why one module of this size: one gunicorn worker's event loop and per-connection state machine
for the responder; its states only make sense together.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import selectors
import socket
import sys
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

from gunicorn.workers.base import Worker

from ca.http1 import HeadError, parse_head

MAX_HEAD = 8 * 1024
MAX_BODY = 16 * 1024
DRAIN_SECONDS = 2.0
ORPHAN_SECONDS = 5.0  # a worker whose master died serves its open connections this long at most
REQUEST_SECONDS = 5.0  # first byte of a request to its last body byte
PER_CLIENT_SHARE = 4  # one address may hold 1/4 of a worker's connections

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


class _Capture:
    """The ``start_response`` of one request."""

    __slots__ = ("headers", "status")

    def __init__(self) -> None:
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers = status, headers
        return None


class OcspWorker(Worker):  # type: ignore[misc]
    """gunicorn worker class ``ocsp.worker.OcspWorker`` (see the module docstring)."""

    alive: bool
    nr: int

    def init_process(self) -> None:
        self._date = ""
        self._date_at = 0
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
        idle = float(self.cfg.keepalive or 2)
        next_sweep = time.monotonic() + 1.0
        orphaned_at: float | None = None
        orphan_grace = min(float(self.cfg.graceful_timeout or 0), ORPHAN_SECONDS)
        self._released = False
        # the app's per-second hook: answer counts to the Prometheus counters (ocsp.metrics)
        flush = getattr(self.wsgi, "extensions", {}).get("agentca_ocsp_flush")
        while self.alive:
            self.notify()
            for key, mask in sel.select(timeout=1.0):
                data = key.data
                if data is None:
                    self._accept(key.fileobj)
                elif data == "pipe":
                    with contextlib.suppress(OSError):
                        os.read(self.PIPE[0], 1)
                elif mask & selectors.EVENT_WRITE:
                    self._flush(data)
                else:
                    self._read(data)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 1.0
                if flush is not None:
                    try:
                        flush()
                    except Exception:  # metrics must never stop the responder
                        self.log.exception("flushing the OCSP answer counts failed")
                for conn in list(conns.values()):
                    if conn.started is not None and not conn.draining:
                        if now - conn.started > REQUEST_SECONDS:
                            self._close(conn)  # a request deadline: no answer owed
                        continue
                    limit = DRAIN_SECONDS if conn.draining else idle
                    if now - conn.last > limit:
                        self._close(conn)
                if orphaned_at is None and self.ppid != os.getppid():
                    self.log.info("Parent changed, closing listeners, finishing: %s", self)
                    self._release_listeners()
                    orphaned_at = now
                if orphaned_at is not None and (not conns or now - orphaned_at > orphan_grace):
                    break
        for conn in list(conns.values()):
            self._close(conn)
        sel.close()
        if flush is not None:
            with contextlib.suppress(Exception):
                flush()

    def _accept(self, listener: Any) -> None:
        for _ in range(64):
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
            for _ in range(max(1, self._limit // 64)):
                if len(self._conns) >= self._limit:
                    break
                try:
                    if not select.select([listener], [], [], 0)[0]:
                        break
                except (OSError, ValueError):
                    break
                self._accept(listener)
            with contextlib.suppress(OSError):
                listener.close()

    def _resume_listening(self) -> None:
        if self._released:
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
        body = f"{code} {_REASONS[code]}\n".encode()
        conn.close_after = True
        self._write(
            conn,
            f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body,
        )

    def _process(self, conn: _Conn) -> None:
        while conn.buf and not conn.out and not conn.close_after:
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
        if now != self._date_at:
            self._date, self._date_at = formatdate(now, usegmt=True), now
        return self._date

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
        capture = _Capture()
        chunks: Iterable[bytes] = ()
        try:
            environ = self._environ(conn, method, target, version, headers, body, length)
            chunks = self.wsgi(environ, capture)
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
        self._write(conn, data)
