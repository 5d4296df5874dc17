"""The gateway's decision log, off the request path.

A request appends one small record to a queue (a C ``SimpleQueue``: no lock taken in Python,
well under a microsecond); one writer thread per process turns records into JSON lines and
hands them to the ``agentca.gateway.decisions`` logger, whose handlers write them. Nothing is
dropped: when the queue holds ``capacity`` records (the writer cannot keep up, or its handler
blocks), the request formats and writes its own line, as before this module existed, so memory
stays bounded and the log stays complete. :func:`flush` waits until every line appended before
it has been handed to the handlers (tests, shutdown); it also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from time import sleep
from typing import Final, Protocol

CAPACITY: Final = 65_536
"""Records waiting for the writer before a request writes its own line."""


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
        get = self._queue.get
        while True:
            item = get()
            if isinstance(item, _Flush):
                item.done.set()
                continue
            try:
                self._emit(item)
            except Exception:  # a broken handler must not stop the writer
                logging.getLogger("agentca.gateway").exception("decision log line not written")
            # Hand the GIL back after every line: with a backlog, the writer would otherwise
            # keep it for a whole switch interval (5 ms) while requests wait for it.
            sleep(0)

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


decision_log = logging.getLogger("agentca.gateway.decisions")
decisions: Final = DecisionLog(decision_log)
"""This process's decision log (every verifier shares it)."""


def flush(timeout: float = 5.0) -> bool:
    """Write every decision line queued so far (see :meth:`DecisionLog.flush`)."""
    return decisions.flush(timeout)


atexit.register(flush, 2.0)
