"""gunicorn settings for the CA API (used by ``agentca serve``; also a gunicorn -c file).

Workers are processes, not threads: the PKCS#11 library serialises signing per process, so
throughput scales with processes. Each worker opens its HSM session after the fork.
"""

from __future__ import annotations

from typing import Any


def options(settings: Any) -> dict[str, Any]:
    """gunicorn options for the given ``ca.config.Settings``."""
    return {
        "bind": f"{settings.listen_host}:{settings.listen_port}",
        "workers": settings.workers,
        "worker_class": "sync",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "limit_request_line": 8190,
        "limit_request_fields": 64,
        "preload_app": False,
        "proc_name": "agentca-ca",
    }
