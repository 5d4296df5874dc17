"""Clock skew against the database server's clock (pure, fake clocks)."""

from __future__ import annotations

import pytest

from ca.api.statuses import http_status
from ca.clockcheck import NO_SERVER_CLOCK, SkewMonitor, offset_from, skew_error
from ca.errors import CAError, ErrorCode


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_offset_takes_the_middle_of_the_round_trip() -> None:
    assert offset_from(100.0, 100.5, 101.0) == 0.0
    assert offset_from(3700.0, 100.0, 3700.2) == pytest.approx(3600.1)
    assert offset_from(100.0, 3700.0, 100.0) == -3600.0


def test_skew_error_bound() -> None:
    assert skew_error(None, 5) is None
    assert skew_error(4.9, 5) is None
    assert skew_error(-5.0, 5) is None
    assert skew_error(3600.0, 0) is None  # 0: the check is off
    ahead = skew_error(3600.0, 5)
    behind = skew_error(-3600.0, 5)
    assert ahead is not None and behind is not None
    assert ahead.code is ErrorCode.CLOCK_SKEW and http_status(ahead) == 503
    assert "3600.0 s ahead of" in ahead.detail and "behind" in behind.detail
    assert ahead.extra["clock_offset_seconds"] == 3600.0
    assert ahead.extra["retry_after"] == 30


def _monitor(offsets: list[float | Exception], clock: FakeClock) -> SkewMonitor:
    def measure() -> float | None:
        value = offsets.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    return SkewMonitor(5, 30, measure, "postgresql", monotonic=clock)


def test_monitor_refuses_while_skewed_and_recovers() -> None:
    clock = FakeClock()
    monitor = _monitor([3600.0, 0.2], clock)
    monitor.refresh()
    with pytest.raises(CAError) as info:
        monitor.check()
    assert info.value.code is ErrorCode.CLOCK_SKEW
    assert monitor.reading().to_dict(5)["status"] == "skewed"
    assert not monitor.due(clock.now + 29)
    assert monitor.due(clock.now + 30)
    clock.now += 30
    monitor.refresh()
    monitor.check()  # within bound again
    body = monitor.reading().to_dict(5)
    assert body["status"] == "ok" and body["offset_seconds"] == 0.2


def test_failed_measurement_keeps_the_last_offset_and_says_why() -> None:
    clock = FakeClock()
    monitor = _monitor([3600.0, ConnectionError("down")], clock)
    monitor.refresh()
    clock.now += 31
    reading = monitor.refresh()
    assert reading.offset == 3600.0
    assert reading.error == "measurement failed: ConnectionError"
    assert reading.age == pytest.approx(31)
    with pytest.raises(CAError):
        monitor.check()


def test_without_a_server_clock_nothing_is_refused() -> None:
    monitor = SkewMonitor(5, 30, None, "sqlite")
    monitor.refresh()
    monitor.check()
    body = monitor.reading().to_dict(5)
    assert body["status"] == "ok" and body["offset_seconds"] is None
    assert body["reference"] == NO_SERVER_CLOCK
