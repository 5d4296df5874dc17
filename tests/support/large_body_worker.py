"""``ca.api.worker`` as ``agentca serve`` configures it, with a larger limit on one path, for
tests that run it in real gunicorn over ``tests.support.slow_wsgi`` (``/slow`` holds a thread).

``-k tests.support.large_body_worker.Worker``: bodies up to 64 KiB everywhere, up to 4 MiB on
``POST /big``, as ``/v1/actions`` on the CA."""

from __future__ import annotations

from ca.api.worker import worker_class

MAX_BODY = 64 * 1024
BIG_BODY = 4 * 1024 * 1024
Worker = worker_class(MAX_BODY, {"/big": BIG_BODY})
