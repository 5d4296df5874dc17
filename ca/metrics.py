"""Prometheus metrics of the CA API and the OCSP responder (decision 0031): the one module that
imports ``prometheus_client``, a shell over the core (which only hands over plain numbers).

Each service runs in gunicorn worker processes, so counters and histograms use
prometheus-client's multiprocess mode: the launch code gives each service a fresh directory
(``prepare_multiprocess_dir``) before any metric exists, gunicorn's ``child_exit`` hook calls
``worker_exited``, and ``render`` merges every worker's files into one text exposition. Gauges
that describe the database or published files rather than a process (CRL age, ledger size,
checkpoint age, the responder's feed age) are computed at scrape time by the caller and passed
to ``render`` as plain values.

Labels are low-cardinality only: outcomes, error codes, OCSP statuses, pool and issuer names.
Never a serial, an agent name or a client address.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: latency buckets (seconds): an issuance is a few HSM signatures and database round trips
ISSUANCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: one HSM signature: SoftHSM2 takes ~1 ms, a network HSM 5-50 ms
SIGN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def prepare_multiprocess_dir(service: str) -> Path:
    """Give this process tree a fresh, empty metrics directory and point prometheus-client at
    it; call before any metric exists (before gunicorn forks). Under systemd it lives in
    ``$RUNTIME_DIRECTORY``, else in the temporary directory; ``remove_multiprocess_dir`` or
    the next start's fresh directory makes sure no dead process's values are ever merged."""
    base = os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=f"agentca-metrics-{service}-", dir=base))
    os.environ[MULTIPROC_ENV] = str(path)
    _reset_value_class()
    return path


def remove_multiprocess_dir(path: Path) -> None:
    """Delete a directory made by ``prepare_multiprocess_dir`` (the service stopped)."""
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(MULTIPROC_ENV) == str(path):
        del os.environ[MULTIPROC_ENV]


def worker_exited(_server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: drop the live gauges of a worker that is gone."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _reset_value_class() -> None:
    """prometheus-client picks its value class when first imported: if that happened before
    the directory was set, pick again (no metric exists yet, see ``metrics``)."""
    import sys

    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


class Metrics:
    """This process's metric objects (created once, after the multiprocess directory is set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.issuance = Counter(
            "agentca_issuance",
            "Certificate issuance requests by endpoint (enroll, renew, direct) and outcome "
            "(issued, or the error code that refused it)",
            ["endpoint", "outcome"],
        )
        self.issuance_seconds = Histogram(
            "agentca_issuance_seconds",
            "Time to answer an issuance request, by endpoint and outcome",
            ["endpoint", "outcome"],
            buckets=ISSUANCE_BUCKETS,
        )
        self.ocsp_responses = Counter(
            "agentca_ocsp_responses",
            "OCSP answers by status (good, revoked, unknown, or the OCSP error status) and "
            "answer cache (hit: worker's hot cache, store: the shared pre-signed store, miss: "
            "signed for this request, none: error)",
            ["status", "cache"],
        )
        self.hsm_sign_seconds = Histogram(
            "agentca_hsm_sign_seconds",
            "One signature in the HSM (PKCS#11 C_Sign), by outcome (ok, error)",
            ["outcome"],
            buckets=SIGN_BUCKETS,
        )
        self.pool_checked_out = Gauge(
            "agentca_db_pool_checked_out",
            "Database connections checked out of the pool, summed over live workers",
            ["pool"],
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "agentca_db_pool_size",
            "Configured database pool size (without overflow), summed over live workers",
            ["pool"],
            multiprocess_mode="livesum",
        )


_metrics: tuple[int, Metrics] | None = None


def metrics() -> Metrics:
    """This process's metrics, created on first use."""
    global _metrics
    if _metrics is None:
        _reset_value_class()
        _metrics = (os.getpid(), Metrics())
    return _metrics[1]


def observe_sign(seconds: float, ok: bool) -> None:
    """The key seam's sign observer (``hsm.observe``): one HSM signature took ``seconds``."""
    metrics().hsm_sign_seconds.labels("ok" if ok else "error").observe(seconds)


def watch_pool(engine: Any, pool: str) -> None:
    """Count ``engine``'s checked-out connections and report its pool size as ``pool``."""
    from sqlalchemy import event

    m = metrics()
    out = m.pool_checked_out.labels(pool)
    out.set(0)
    size = getattr(engine.pool, "size", None)
    if callable(size):
        m.pool_size.labels(pool).set(int(size()))

    def checkout(*_: Any) -> None:
        out.inc()

    def checkin(*_: Any) -> None:
        out.dec()

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)


@dataclass(frozen=True)
class Sample:
    """One gauge value computed at scrape time (``labels`` in the family's label order)."""

    value: float
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScrapeGauge:
    """A gauge family computed at scrape time by the service (not kept in any process)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()


class _Static:
    def __init__(self, families: Sequence[Any]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        yield from self._families


class _Default:
    """The default registry's metrics (one process, no multiprocess directory)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client import REGISTRY

        yield from REGISTRY.collect()


def _families(gauges: Iterable[ScrapeGauge]) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    out = []
    for gauge in gauges:
        family = GaugeMetricFamily(gauge.name, gauge.help, labels=list(gauge.labels))
        for sample in gauge.samples:
            family.add_metric(list(sample.labels), sample.value)
        out.append(family)
    return out


def render(gauges: Iterable[ScrapeGauge] = ()) -> bytes:
    """The text exposition of every worker's metrics plus ``gauges``."""
    from prometheus_client import CollectorRegistry, generate_latest

    metrics()  # every family appears, with its HELP, even before the first event
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    registry.register(_Static(_families(gauges)))
    return bytes(generate_latest(registry))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """The ``metrics_networks`` setting as networks (``ValueError`` for a bad one)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def may_scrape(client: str | None, networks: Sequence[Network]) -> bool:
    """Whether a client at address ``client`` may read ``/metrics``."""
    if not client or not networks:
        return False
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address.version == net.version and address in net for net in networks)


def age_seconds(at: float | None, now: Callable[[], float] = time.time) -> float:
    """Seconds since the UNIX time ``at`` (NaN when unknown: nothing published yet)."""
    return float("nan") if at is None else max(0.0, now() - at)


def samples(values: Mapping[tuple[str, ...], float]) -> tuple[Sample, ...]:
    """``Sample``s from a mapping of label values to values, in a stable order."""
    return tuple(Sample(v, k) for k, v in sorted(values.items()))
