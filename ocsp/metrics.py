"""The OCSP responder's ``/metrics`` (decision 0031): answer counts from ``ocsp.tally``, HSM
sign latency, pool use, and the age of the status feed this worker vouches from.

Answer counts reach the multiprocess counters in ``flush``, which the worker calls about once a
second (``ocsp.worker``) and which runs before every scrape; so a scrape sees every answer a
worker gave more than about a second earlier.
"""

from __future__ import annotations

from typing import Any

from ca.metrics import Sample, ScrapeGauge, metrics, observe_sign, render, watch_pool
from hsm.observe import set_sign_observer
from ocsp.tally import ANSWERS, AnswerTally


def flush(tally: AnswerTally = ANSWERS) -> None:
    """Add the answers counted since the last flush to the Prometheus counters."""
    counts = tally.take()
    if counts:
        counter = metrics().ocsp_responses
        for (status, cache), n in counts.items():
            counter.labels(status, cache).inc(n)


def instrument(runtime: Any) -> None:
    """Report this worker's HSM signatures and pool use (call once its runtime is open)."""
    set_sign_observer(observe_sign)
    watch_pool(runtime.engine, "ocsp")


def feed_gauges(responder: Any) -> list[ScrapeGauge]:
    """The feed's age and replica lag as this worker sees them after one poll."""
    responder.poll()
    fresh = responder.fresh_as_of
    lag = responder.replica_lag
    return [
        ScrapeGauge(
            "agentca_ocsp_status_age_seconds",
            "Age of the status feed the responder vouches from (now minus the time as of which "
            "its last poll read the database, replica lag included)",
            samples=(Sample(max(0.0, responder.clock() - fresh)),) if fresh else (),
        ),
        ScrapeGauge(
            "agentca_ocsp_replica_lag_seconds",
            "How far the responder's database trailed the primary at the last poll "
            "(0 on the primary)",
            samples=(Sample(float(lag)),) if lag is not None else (),
        ),
        ScrapeGauge(
            "agentca_ocsp_database_up",
            "1 when the responder's last poll of the database succeeded",
            samples=(Sample(1.0 if responder.database_ok else 0.0),),
        ),
    ]


def exposition(responder: Any | None) -> bytes:
    """The text exposition for a scrape served by this worker."""
    flush()
    gauges = feed_gauges(responder) if responder is not None else []
    return render(gauges)
