"""Whole-ledger verifications in a background thread, with progress every worker can show.

``POST /console/ledger/verify`` starts a job and redirects to its progress page, which
refreshes itself (``<meta http-equiv="refresh">``, no JavaScript) until the verdict. The
verification is ``ca.ledger.verify.verify_export`` (what ``agentca ledger verify`` runs) over
the export stream of the newest checkpoint; a counter between the stream and the verifier
writes how many entries were checked to the job's row (table ``console_verify_jobs``) at
most twice a second, so the progress page works whichever worker answers it.

Bounds: one running job per worker process (a second start in that worker is refused with
Retry-After); a job id is 256 random bits, stored as its SHA-256 only, and found only with
the console session that started it; rows are deleted :data:`JOB_TTL` after the start, and a
job still running then stops at its next progress write.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock
from ca.errors import CAError, ErrorCode
from ca.ledger.entries import Checkpoint
from ca.ledger.trust import LedgerTrust
from ca.ledger.verify import verify_export
from ca.store.models import ConsoleVerifyJob

log = logging.getLogger("agentca.console")
JOB_TTL = timedelta(minutes=10)
PROGRESS_SECONDS = 0.5  # the most often a job writes its progress
STALLED = timedelta(seconds=30)  # a running job silent this long: its worker may have stopped
RUNNING, DONE, FAILED = "running", "done", "failed"
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class _Forgotten(Exception):
    """The job's row is gone (forgotten after :data:`JOB_TTL`): the thread stops."""


def _hash(job: str) -> str:
    return hashlib.sha256(job.encode()).hexdigest()


class VerifyJobs:
    """The verification jobs of one worker process (its one running thread) over the
    shared job table."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(
        self,
        session_id: int,
        checkpoint: Checkpoint,
        lines: Callable[[], Iterator[str]],
        trust: LedgerTrust,
    ) -> str:
        """Start verifying ``lines()`` (an export covering ``checkpoint``) for the console
        session ``session_id``; returns the job id (shown once, in the redirect)."""
        self.forget_old()
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise CAError(
                    ErrorCode.RATE_LIMITED,
                    "a ledger verification is already running in this worker; retry when it "
                    "has finished",
                    retry_after=5,
                )
            job = secrets.token_urlsafe(32)
            now = self.clock()
            with self.sessions.begin() as s:
                row = ConsoleVerifyJob(
                    job_hash=_hash(job),
                    session_id=session_id,
                    ledger=checkpoint.ledger,
                    tree_size=checkpoint.tree_size,
                    checked=0,
                    state=RUNNING,
                    started_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
                row_id = row.id
            self._thread = threading.Thread(
                target=self._run,
                args=(row_id, lines, trust),
                name="agentca-console-verify",
                daemon=True,
            )
            self._thread.start()
        return job

    def lookup(self, job: str, session_id: int) -> ConsoleVerifyJob:
        """The job ``job`` of session ``session_id``; NOT_FOUND for anything else (a
        malformed id, another session's job, a forgotten one: all look the same)."""
        if not _JOB_ID.fullmatch(job):
            raise CAError(ErrorCode.NOT_FOUND, "no such verification")
        t = ConsoleVerifyJob
        with self.sessions() as s:
            row = s.scalar(
                select(t).where(
                    t.job_hash == _hash(job),
                    t.session_id == session_id,
                    t.started_at >= self.clock() - JOB_TTL,
                )
            )
            if row is None:
                raise CAError(ErrorCode.NOT_FOUND, "no such verification (jobs are kept 10 min)")
            s.expunge(row)
            return row

    def forget_old(self) -> int:
        """Delete the jobs started more than :data:`JOB_TTL` ago; returns how many."""
        t = ConsoleVerifyJob
        with self.sessions.begin() as s:
            result = s.execute(delete(t).where(t.started_at < self.clock() - JOB_TTL))
            return int(getattr(result, "rowcount", 0) or 0)

    def wait(self, timeout: float) -> bool:
        """Wait for this worker's running job (if any); True when none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # ------------------------------------------------------------------ the thread

    def _run(self, row_id: int, lines: Callable[[], Iterator[str]], trust: LedgerTrust) -> None:
        try:
            self._verify(row_id, lines, trust)
        except _Forgotten:
            log.warning("console ledger verification %d stopped: forgotten", row_id)

    def _verify(self, row_id: int, lines: Callable[[], Iterator[str]], trust: LedgerTrust) -> None:
        try:
            report = verify_export(self._counted(row_id, lines()), trust)
        except _Forgotten:
            raise
        except Exception as exc:  # the stream or the database failed: say so, log the trace
            log.error("console ledger verification %d failed", row_id, exc_info=exc)
            self._write(
                row_id,
                state=FAILED,
                ok=False,
                message="the verification could not run to its end (the CA's log has why)",
            )
            return
        self._write(
            row_id,
            state=DONE,
            ok=report.ok,
            message=report.message,
            failed_seq=report.failed_seq,
            checked=report.entries,
        )

    def _counted(self, row_id: int, lines: Iterator[str]) -> Iterator[str]:
        """``lines`` as they are, writing the entries consumed so far now and then."""
        last = time.monotonic()
        for n, line in enumerate(lines):
            if n % 256 == 0 and time.monotonic() - last >= PROGRESS_SECONDS:
                self._write(row_id, checked=max(0, n - 1))
                last = time.monotonic()
            yield line

    def _write(self, row_id: int, **values: object) -> None:
        t = ConsoleVerifyJob
        with self.sessions.begin() as s:
            result = s.execute(
                update(t).where(t.id == row_id).values(updated_at=self.clock(), **values)
            )
            if not getattr(result, "rowcount", 0):
                raise _Forgotten(row_id)


def stalled(job: ConsoleVerifyJob, now: datetime) -> bool:
    """A running job that has written no progress for :data:`STALLED`."""
    return job.state == RUNNING and now - job.updated_at > STALLED
