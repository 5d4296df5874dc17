"""The gateway's decision log, off the request path.

A request appends one small record to a queue (a C ``SimpleQueue``: no lock taken in Python,
well under a microsecond); one writer thread per process, waking every 50 ms (``INTERVAL``),
turns records into JSON lines and
hands them to the ``agentca.gateway.decisions`` logger, whose handlers write them. When those
handlers are plain stream or file handlers with a message-only format (the documented setup),
the writer writes each batch of waiting lines to their streams in one call: the same bytes,
without a ``LogRecord`` and a handler round per line (about 12 us each, decision 0046). Nothing is
dropped: when the queue holds ``capacity`` records (the writer cannot keep up, or its handler
blocks), the request formats and writes its own line, as before this module existed, so memory
stays bounded and the log stays complete. :func:`flush` waits until every line appended before
it has been handed to the handlers (tests, shutdown); it also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
from time import sleep
from typing import Any, Final, Protocol

CAPACITY: Final = 65_536
"""Records waiting for the writer before a request writes its own line."""
BATCH: Final = 1024
"""Lines the writer takes from the queue at once (one write per handler for all of them)."""
INTERVAL: Final = 0.05
"""Seconds between two rounds of the writer (``flush`` does not wait for it)."""


class Line(Protocol):
    """A decision record: formatted (``str``) only by the writer."""

    def __str__(self) -> str: ...


class _Flush:
    """A marker in the queue: the writer sets ``done`` when it reaches it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class DecisionLog:
    """Decision lines queued by requests and written by one background thread."""

    def __init__(self, logger: logging.Logger, capacity: int = CAPACITY) -> None:
        self.logger = logger
        self.capacity = capacity
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # In a forked child (gunicorn workers) the parent's writer thread does not exist.
        self._queue: queue.SimpleQueue[Line | _Flush] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def enabled(self) -> bool:
        """Whether a decision line would be written at all (INFO on the logger)."""
        return self.logger.isEnabledFor(logging.INFO)

    def append(self, line: Line) -> None:
        """Queue ``line`` for the writer (or, with the queue full, write it now)."""
        if self._writer is None:
            self._start()
        if self._queue.qsize() >= self.capacity:
            self._emit(line)
            return
        self._queue.put(line)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line appended so far is written; False if ``timeout`` passed."""
        if self._writer is None:
            return True
        marker = _Flush()
        self._queue.put(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._writer is None:
                writer = threading.Thread(
                    target=self._run, name="agentca-decision-log", daemon=True
                )
                writer.start()
                self._writer = writer

    def _run(self) -> None:
        get_nowait = self._queue.get_nowait
        while True:
            # Wake on a timer, not per line: a writer woken by every append takes the GIL in
            # the middle of each request (during the signature check, which releases it) and
            # the request then waits to get it back. ``flush`` wakes it at once.
            self._wake.wait(INTERVAL)
            self._wake.clear()
            while True:
                batch: list[Line | _Flush] = []
                with contextlib.suppress(queue.Empty):
                    while len(batch) < BATCH:
                        batch.append(get_nowait())
                lines: list[Line] = []
                for item in batch:
                    if isinstance(item, _Flush):
                        self._write(lines)
                        lines = []
                        item.done.set()
                    else:
                        lines.append(item)
                self._write(lines)
                if len(batch) < BATCH:
                    break
                sleep(0)  # a backlog: let requests run between batches

    def _write(self, lines: list[Line]) -> None:
        """Write ``lines``: straight to the handlers' streams when that gives the very bytes
        the logging machinery would (see :func:`_plain_handlers`), else one record each."""
        if not lines:
            return
        handlers = _plain_handlers(self.logger)
        if handlers is None:
            for line in lines:
                try:
                    self._emit(line)
                except Exception:  # a broken handler must not stop the writer
                    logging.getLogger("agentca.gateway").exception("decision log line not written")
            return
        try:
            for handler in handlers:
                text = handler.terminator.join(str(line) for line in lines) + handler.terminator
                with handler.lock:  # type: ignore[union-attr]  # a StreamHandler has one
                    handler.stream.write(text)
                    handler.flush()
        except Exception:  # a broken handler must not stop the writer
            logging.getLogger("agentca.gateway").exception("decision log lines not written")

    def _emit(self, line: Line) -> None:
        # logger.info() without its caller lookup (findCaller walks the stack of the writer
        # thread, whose file and line say nothing about the request anyway).
        logger = self.logger
        if logger.isEnabledFor(logging.INFO):
            logger.handle(
                logger.makeRecord(
                    logger.name, logging.INFO, __file__, 0, "%s", (line,), None, "decision"
                )
            )


def _plain_handlers(logger: logging.Logger) -> list[logging.StreamHandler[Any]] | None:
    """The handlers a record of ``logger`` reaches, if writing ``line + terminator`` to each
    one's stream is exactly what logging would do: no filters anywhere, every handler a plain
    ``StreamHandler``/``FileHandler`` at INFO or below with an open stream and a message-only
    formatter. None otherwise (then every line goes through ``Logger.handle``)."""
    if not logger.isEnabledFor(logging.INFO):
        return []
    found: list[logging.StreamHandler[Any]] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                type(handler) not in _PLAIN
                or handler.filters
                or handler.level > logging.INFO
                or not _message_only(handler.formatter)
            ):
                return None
            assert isinstance(handler, logging.StreamHandler)
            if handler.stream is None:  # a FileHandler opened lazily (delay=True)
                return None
            found.append(handler)
        if not current.propagate:
            break
        current = current.parent
    if not found:
        return None  # logging's last resort handler (WARNING and up) would not write INFO
    return found


_PLAIN: Final = (logging.StreamHandler, logging.FileHandler)


def _message_only(formatter: logging.Formatter | None) -> bool:
    if formatter is None:
        return True
    return (
        type(formatter) is logging.Formatter
        and formatter._fmt in (None, "%(message)s")
        and isinstance(formatter._style, logging.PercentStyle)
    )


decision_log = logging.getLogger("agentca.gateway.decisions")
decisions: Final = DecisionLog(decision_log)
"""This process's decision log (every verifier shares it)."""


def flush(timeout: float = 5.0) -> bool:
    """Write every decision line queued so far (see :meth:`DecisionLog.flush`)."""
    return decisions.flush(timeout)


atexit.register(flush, 2.0)
