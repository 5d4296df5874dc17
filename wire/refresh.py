"""One background refresher for the SDKs: a daemon thread that repeats a step on a schedule.

The agent renews its certificate and fetches staples with it, the gateway keeps its OCSP
cache and its model inventory fresh with it. Each owner supplies the step, the delay before
the next step (asked again after every step, so it may depend on the clock) and the errors
it expects; anything else is logged with its traceback and the loop goes on, so one bug in a
step never silently ends the upkeep for good. :meth:`Refresher.run_async` is the same loop as
an asyncio coroutine (the step in a worker thread, so a blocking step never stalls the loop).

Standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["Refresher", "StopSignal"]

log = logging.getLogger("agentca.wire.refresh")


class StopSignal(Protocol):
    """What the refresher waits on: ``threading.Event``, or a fake one in tests."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...


class Refresher:
    """Runs ``step`` in a daemon thread named ``name`` until :meth:`stop`.

    The loop is: step, then wait ``delay()`` seconds (``first_wait``: wait first). Exceptions
    of the types in ``expected`` go to ``on_error`` (default: ignored); any other exception
    is logged. ``stop`` wakes the wait at once; ``start`` after ``stop`` starts a new thread.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], None],
        delay: Callable[[], float],
        *,
        first_wait: bool = False,
        expected: tuple[type[Exception], ...] = (),
        on_error: Callable[[Exception], None] | None = None,
        signal: StopSignal | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self._delay = delay
        self._first_wait = first_wait
        self._expected = expected
        self._on_error = on_error
        self._stop: StopSignal = threading.Event() if signal is None else signal
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> bool:
        """Start the thread unless it is running; True if this call started it."""
        with self._lock:
            if self.running:
                return False
            self._stop.clear()
            thread = threading.Thread(target=self.run, name=self.name, daemon=True)
            self._thread = thread
            thread.start()
            return True

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def step_once(self) -> None:
        """Run the step once, handling its errors as the loop does."""
        try:
            self._step()
        except self._expected as exc:
            if self._on_error is not None:
                self._on_error(exc)
        except Exception:
            log.exception("background refresh %r failed; it goes on", self.name)

    def _wait(self) -> bool:
        """Wait for the next step; True when stopped meanwhile."""
        return self._stop.wait(self._next_delay())

    def run(self) -> None:
        """The loop itself (the thread's target; tests call it directly with a fake signal)."""
        if self._first_wait and self._wait():
            return
        while not self._stop.is_set():
            self.step_once()
            if self._wait():
                return

    async def run_async(self) -> None:
        """The same loop as a coroutine, until cancelled: each step runs in a worker thread
        (``asyncio.to_thread``) with the same error handling, then ``asyncio.sleep(delay())``.

        Cancel-safe: a worker thread cannot be interrupted, so when cancelled during a step
        it waits for that step to end before it re-raises, and nothing the step does lands
        after the task is done. The thread's stop signal plays no part here.
        """
        if self._first_wait:
            await asyncio.sleep(self._next_delay())
        while True:
            step = asyncio.ensure_future(asyncio.to_thread(self.step_once))
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError:
                await asyncio.wait({step})
                raise
            await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        try:
            return max(0.0, self._delay())
        except Exception:
            log.exception("background refresh %r could not schedule; retrying in 1 s", self.name)
            return 1.0
