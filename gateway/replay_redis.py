"""A replay store shared by every worker and gateway host: Redis ``SET key NX PX``.

One atomic command per request: the key is a digest of the verifier's nonce key (certificate
and nonce), the value a byte, and it expires when the signature could no longer be accepted
anyway (``keep_until``: created + window + skew, at most about a minute), so Redis holds at
most one minute of nonces and needs no eviction policy of its own (``noeviction`` is right:
an evicted nonce would re-open a replay, a full Redis fails closed).

Redis unreachable (refused, timed out, read-only replica, out of memory):
- ``fail_open=False`` (default): :class:`~gateway.replay.ReplayUnavailable`, so the verifier
  refuses with ``replay-cache-unavailable`` (503). After a failure Redis is not asked again for
  ``retry_after`` seconds (requests are refused at once instead of each waiting for a
  timeout); the first request after that tries again, so service resumes by itself.
- ``fail_open=True`` (a documented choice for those who prefer availability): nonces go to
  this process's in-memory cache while Redis is away, so replays on the same worker are still
  refused; replays sent to another worker or host in that time are not.
Each transition (lost, back) is logged once; failures in between at most once per 10 s.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from gateway.replay import ReplayCache, ReplayUnavailable

log = logging.getLogger("agentca.gateway")

DEFAULT_PREFIX = "agentca:nonce:"
LOG_EVERY = 10.0


def nonce_key(prefix: str, nonce: Hashable) -> str:
    """The Redis key of a verifier nonce key: the same on every host and Python version
    (``repr`` of the tuple of bytes, ints and strings the verifier passes, digested)."""
    return prefix + hashlib.sha256(repr(nonce).encode()).hexdigest()[:40]


class RedisReplayCache:
    """:class:`~gateway.replay.ReplayStore` on Redis (see the module docstring).

    ``client``: a ``redis.Redis`` (give it short ``socket_timeout`` and
    ``socket_connect_timeout``, e.g. 0.1 s on a LAN: they bound how long one request can wait);
    :func:`from_url` builds one. Thread-safe (redis-py's pool is).
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        fail_open: bool = False,
        retry_after: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis  # the optional dependency: only those who use this store need it

        self.client = client
        self.prefix = prefix
        self.fail_open = fail_open
        self.retry_after = retry_after
        self.monotonic = monotonic
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._down_until = float("-inf")
        self._down = False
        self._last_log = float("-inf")
        self._lock = threading.Lock()
        self._local = ReplayCache(100_000) if fail_open else None

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.1, **kwargs: Any) -> RedisReplayCache:
        """A store on the Redis at ``url`` (``redis://host:6379/0``, ``unix:///path``)."""
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
        )
        return cls(client, **kwargs)

    @property
    def available(self) -> bool:
        """False while the last attempt failed (for health checks and metrics)."""
        return not self._down

    def add(self, nonce: Hashable, created: int, keep_until: float, now: float) -> bool:
        """Record ``nonce`` until ``keep_until`` (wall clock); False if any verifier sharing
        this Redis recorded it before."""
        if self.monotonic() < self._down_until:
            return self._unavailable(nonce, created, keep_until, now, None)
        # relative expiry (PX): Redis's own clock never meets the gateway's, so a Redis host
        # whose clock runs ahead cannot expire nonces early and re-open replays
        expire_ms = max(int((keep_until - now) * 1000) + 1, 1000)
        try:
            stored = self.client.set(nonce_key(self.prefix, nonce), b"1", nx=True, px=expire_ms)
        except self._errors as exc:
            return self._unavailable(nonce, created, keep_until, now, exc)
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    log.warning("replay cache: Redis reachable again")
        return bool(stored)

    def _unavailable(
        self,
        nonce: Hashable,
        created: int,
        keep_until: float,
        now: float,
        exc: BaseException | None,
    ) -> bool:
        mono = self.monotonic()
        if exc is not None:
            with self._lock:
                self._down_until = mono + self.retry_after
                first = not self._down
                self._down = True
                if first or mono - self._last_log >= LOG_EVERY:
                    self._last_log = mono
                    log.error(
                        "replay cache: Redis unreachable (%s: %s); %s",
                        type(exc).__name__,
                        exc,
                        "accepting on this process's cache (fail-open)"
                        if self.fail_open
                        else "refusing signed requests (fail-closed)",
                    )
        if self._local is not None:
            return self._local.add(nonce, created, keep_until, now)
        raise ReplayUnavailable("the shared replay cache (Redis) is unreachable")
