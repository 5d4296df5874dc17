"""The one scheduler: run a task every N seconds until a stop event (ledger checkpoints in
``agentca ledger checkpoint --every``, reconciliation in each CA API worker and in
``agentca reconcile --every``, OCSP responder certificates in ``agentca ocsp rotate-signer
--every``, which ``agentca run`` starts).

A task that raises is logged in one line and run again at the next interval: a database or
HSM that is away for a while must not end the schedule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("agentca.schedule")


def run_every(
    interval: float,
    task: Callable[[], object],
    stop: threading.Event,
    name: str,
    first_delay: float = 0.0,
) -> None:
    """Call ``task`` now (after ``first_delay``) and then every ``interval`` s until ``stop``."""
    if first_delay > 0 and stop.wait(first_delay):
        return
    while not stop.is_set():
        try:
            task()
        except Exception as exc:  # logged, retried next interval
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            log.warning("%s failed: %s: %s", name, type(exc).__name__, first)
        stop.wait(interval)


def start_every(
    interval: float, task: Callable[[], object], name: str, first_delay: float = 0.0
) -> threading.Event:
    """:func:`run_every` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(
        target=run_every,
        args=(interval, task, stop, name, first_delay),
        name=name,
        daemon=True,
    ).start()
    return stop
