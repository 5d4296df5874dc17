"""gunicorn settings for the CA API (used by ``agentca serve``; also a gunicorn -c file).

Workers are processes; each runs a few threads so that one request's database round trips
overlap another's work (signing is serialised per process by the key store's lock, which the
PKCS#11 library requires). Each worker opens its HSM session after the fork. The worker class
(``ca.api.worker``) reads every request whole, under head and body deadlines, before a thread
takes it, so slow clients cannot hold the threads (docs/security.md). Each worker also runs
the reconciliation of abandoned reservations on a schedule (``ca.reconciliation``).
"""

from __future__ import annotations

from typing import Any

from ca.api.access_log import logger_class
from ca.api.action_routes import MAX_ACTIONS_BODY
from ca.api.worker import worker_class
from ca.metrics import worker_exited
from ca.reconciliation import start_reconciler
from deploy import SHARED_REUSE_PORT


def options(settings: Any) -> dict[str, Any]:
    """gunicorn options for the given ``ca.config.Settings``."""
    return {
        "bind": f"{settings.listen_host}:{settings.listen_port}",
        "workers": settings.workers,
        # an action batch (up to 1,000 records) is larger than any other request body
        "worker_class": worker_class(settings.max_request_bytes, {"/v1/actions": MAX_ACTIONS_BODY}),
        "threads": settings.threads,
        "worker_connections": 1000,  # per worker; one client address may hold a quarter
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-",
        # 304 answers to conditional polls (inventory, CRLs, bundle) stay out of the log;
        # text or JSON lines (log_format)
        "logger_class": logger_class(
            settings.access_log_not_modified, settings.log_format == "json"
        ),
        "errorlog": "-",
        "loglevel": "info",
        "limit_request_line": 8190,
        "limit_request_fields": 64,
        "preload_app": False,
        "proc_name": "agentca-ca",
        "post_worker_init": lambda worker: start_reconciler(worker.wsgi, settings),
        # a dead worker's live gauges leave the Prometheus multiprocess directory (0031)
        "child_exit": worker_exited,
        # ``agentca serve`` binds the socket itself with SO_REUSEPORT, so a new master binds
        # while orphaned workers of a killed one finish (decision 0015). Not gunicorn's
        # ``reuse_port``: that gives each worker its own socket and backlog, lost on kill -9.
        SHARED_REUSE_PORT: True,
        # gunicorn 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl):
        # the CA and OCSP masters, or a new master and a dead one, unlink each other's.
        # agentca does not use gunicornc; signals control the master.
        "control_socket_disable": True,
    }
