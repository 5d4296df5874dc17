"""gunicorn settings for the OCSP responder (used by ``agentca ocsp serve``).

Worker class ``ocsp.worker.OcspWorker``: one event-loop process per core, each with its own HSM
session (opened after the fork, warmed up before serving) and its own answer cache. No access
log by default: formatting a log line costs about as much as serving a cached answer.
"""

from __future__ import annotations

import gc
from typing import Any

from ca.api.access_log import logger_class
from ca.metrics import worker_exited
from deploy import SHARED_REUSE_PORT


def warm_up(worker: Any) -> None:
    """``post_worker_init``: open the responder (HSM login, issuers, signers) before serving."""
    holder = getattr(worker.wsgi, "extensions", {}).get("agentca_ocsp")
    if holder is None:
        return
    try:
        holder.get().poll()
    except Exception:  # the first request retries; never keep the worker from booting
        worker.log.exception("OCSP responder warm-up failed")
    # Everything loaded so far lives as long as the worker: keep it out of the cyclic
    # collector, whose full passes over it showed up as multi-millisecond p99 stalls.
    gc.collect()
    gc.freeze()


def options(settings: Any) -> dict[str, Any]:
    """gunicorn options for the given ``ca.config.Settings``."""
    return {
        "bind": f"{settings.listen_host}:{settings.ocsp_listen_port}",
        "workers": settings.workers,
        "worker_class": "ocsp.worker.OcspWorker",
        "backlog": 2048,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "worker_connections": 1000,  # per worker; one client address may hold a quarter
        "accesslog": None,
        "errorlog": "-",
        # gunicorn's and the responder's lines as text or JSON (log_format); OCSP answers
        # themselves are not access-logged (decision 0031)
        "logger_class": logger_class(False, settings.log_format == "json"),
        "loglevel": "info",
        "limit_request_line": 8190,
        "limit_request_fields": 64,
        "preload_app": False,
        "proc_name": "agentca-ocsp",
        # ``agentca serve`` binds the socket itself with SO_REUSEPORT, so a new master binds
        # while orphaned workers of a killed one finish (decision 0015). Not gunicorn's
        # ``reuse_port``: that gives each worker its own socket and backlog, lost on kill -9.
        SHARED_REUSE_PORT: True,
        # gunicorn 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl):
        # the CA and OCSP masters, or a new master and a dead one, unlink each other's.
        # agentca does not use gunicornc; signals control the master.
        "control_socket_disable": True,
        "post_worker_init": warm_up,
        # a dead worker's live gauges leave the Prometheus multiprocess directory (0031)
        "child_exit": worker_exited,
    }
