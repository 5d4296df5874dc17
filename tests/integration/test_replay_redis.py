"""The shared replay store on a real redis-server (issue 16 item 2): a nonce recorded through
one store (one worker) is a replay for another (another worker or host), entries expire with
the signature window, and with Redis gone the store fails closed, then recovers by itself."""

from __future__ import annotations

import logging
import time

import pytest

from gateway.replay import ReplayUnavailable
from gateway.replay_redis import RedisReplayCache, nonce_key
from tests.support.redis_server import RedisServer


def _key(serial: int, nonce: str) -> tuple[tuple[bytes, int], str]:
    return ((b"\x01" * 20, serial), nonce)


def test_a_nonce_seen_by_one_store_is_a_replay_for_another(redis_server: RedisServer) -> None:
    first = RedisReplayCache.from_url(redis_server.url)
    second = RedisReplayCache.from_url(redis_server.url)
    now = time.time()
    assert first.add(_key(7, "n-1"), int(now), now + 65, now)
    assert not second.add(_key(7, "n-1"), int(now), now + 65, now)
    assert not first.add(_key(7, "n-1"), int(now), now + 65, now)
    # the same nonce for another certificate is another key
    assert second.add(_key(8, "n-1"), int(now), now + 65, now)


def test_entries_expire_with_the_signature_window(redis_server: RedisServer) -> None:
    store = RedisReplayCache.from_url(redis_server.url)
    now = time.time()
    assert store.add(_key(9, "short"), int(now), now + 1.2, now)
    ttl_ms = store.client.pttl(nonce_key(store.prefix, _key(9, "short")))
    assert 0 < ttl_ms <= 1300
    # Redis enforces a 1 s floor on expiry from now, whatever keep_until says
    assert store.add(_key(9, "past"), int(now) - 120, now - 60, now)
    assert 0 < store.client.pttl(nonce_key(store.prefix, _key(9, "past"))) <= 1000


def test_redis_gone_fails_closed_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisReplayCache.from_url(redis_server.url, retry_after=0.2)
    now = time.time()
    assert store.add(_key(10, "before"), int(now), now + 65, now)
    redis_server.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="agentca.gateway"):
            started = time.monotonic()
            with pytest.raises(ReplayUnavailable):
                store.add(_key(10, "during"), int(now), now + 65, now)
            with pytest.raises(ReplayUnavailable):  # refused at once, without a new attempt
                store.add(_key(10, "during-2"), int(now), now + 65, now)
            assert time.monotonic() - started < 1.0
        assert not store.available
        assert sum("fail-closed" in r.getMessage() for r in caplog.records) == 1
    finally:
        redis_server.start()
    time.sleep(0.25)
    assert store.add(_key(10, "after"), int(now), now + 65, now)
    assert store.available


def test_fail_open_keeps_refusing_replays_on_the_same_process(redis_server: RedisServer) -> None:
    store = RedisReplayCache.from_url(redis_server.url, fail_open=True, retry_after=0.2)
    now = time.time()
    redis_server.stop()
    try:
        assert store.add(_key(11, "open"), int(now), now + 65, now)
        assert not store.add(_key(11, "open"), int(now), now + 65, now)
    finally:
        redis_server.start()


def test_expiry_is_relative_so_redis_clock_does_not_matter(redis_server: RedisServer) -> None:
    """A gateway clock a day behind Redis's (or Redis a day ahead) still keeps the nonce for
    the signature window: the expiry is PX (relative), not an absolute time."""
    store = RedisReplayCache.from_url(redis_server.url)
    behind = time.time() - 86_400
    assert store.add(_key(12, "skewed"), int(behind), behind + 65, behind)
    ttl_ms = store.client.pttl(nonce_key(store.prefix, _key(12, "skewed")))
    assert 60_000 < ttl_ms <= 65_001
    assert not store.add(_key(12, "skewed"), int(behind), behind + 65, behind)
