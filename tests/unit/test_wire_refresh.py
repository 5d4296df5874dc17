"""``wire.refresh.Refresher``: the one background loop of the agent and gateway SDKs.

The loop is driven synchronously with a fake stop signal (no sleeps); the thread tests use
millisecond delays and events, never waiting longer than about 0.2 s.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.client import Agent
from agent.errors import NotEnrolled
from agent.provenance import RuntimeProvenance
from wire.refresh import Refresher


class FakeSignal:
    """A stop signal whose ``wait`` returns at once, recording each timeout; it reports
    "stopped" once ``stop_after`` waits have happened (or ``set`` was called)."""

    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.waits: list[float | None] = []
        self._set = False

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self._set or len(self.waits) >= self.stop_after

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


class Boom(Exception):
    pass


def test_steps_then_waits_the_delay_asked_after_each_step() -> None:
    delays = iter([0.5, 1.25, 2.0])
    calls: list[str] = []
    signal = FakeSignal(stop_after=3)
    r = Refresher("t", lambda: calls.append("step"), lambda: next(delays), signal=signal)
    r.run()
    assert calls == ["step"] * 3
    assert signal.waits == [0.5, 1.25, 2.0]


def test_first_wait_waits_before_the_first_step() -> None:
    calls: list[int] = []
    signal = FakeSignal(stop_after=3)
    r = Refresher("t", lambda: calls.append(1), lambda: 0.25, first_wait=True, signal=signal)
    r.run()
    assert calls == [1, 1] and signal.waits == [0.25, 0.25, 0.25]


def test_stopped_before_running_does_nothing() -> None:
    calls: list[int] = []
    signal = FakeSignal(stop_after=99)
    signal.set()
    Refresher("t", lambda: calls.append(1), lambda: 1.0, signal=signal).run()
    assert calls == [] and signal.waits == []


def test_negative_delay_is_clamped_to_zero() -> None:
    signal = FakeSignal(stop_after=1)
    Refresher("t", lambda: None, lambda: -3.0, signal=signal).run()
    assert signal.waits == [0.0]


def test_expected_errors_go_to_the_handler_and_the_loop_goes_on() -> None:
    seen: list[Exception] = []
    count = iter(range(10))

    def step() -> None:
        if next(count) % 2 == 0:
            raise Boom("down")

    r = Refresher(
        "t", step, lambda: 1.0, expected=(Boom,), on_error=seen.append, signal=FakeSignal(4)
    )
    r.run()
    assert [str(e) for e in seen] == ["down", "down"]


def test_unexpected_errors_are_logged_and_do_not_end_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR, logger="agentca.wire.refresh"):
        Refresher("upkeep", step, lambda: 1.0, expected=(Boom,), signal=FakeSignal(3)).run()
    assert len(calls) == 3
    assert len(caplog.records) == 3 and "'upkeep'" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is not None


def test_a_failing_delay_falls_back_to_one_second(caplog: pytest.LogCaptureFixture) -> None:
    def delay() -> float:
        raise ValueError("clock")

    signal = FakeSignal(stop_after=1)
    with caplog.at_level(logging.ERROR, logger="agentca.wire.refresh"):
        Refresher("t", lambda: None, delay, signal=signal).run()
    assert signal.waits == [1.0] and caplog.records


def test_thread_runs_stops_promptly_and_restarts() -> None:
    stepped = threading.Event()
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        stepped.set()

    r = Refresher("agentca-test-refresh", step, lambda: 0.005)
    assert not r.running
    assert r.start() is True
    assert r.start() is False  # idempotent while running
    assert stepped.wait(0.2) and r.running
    names = {t.name for t in threading.enumerate()}
    assert "agentca-test-refresh" in names
    r.stop(timeout=0.2)
    assert not r.running
    n = len(calls)
    stepped.clear()
    assert r.start() is True  # a new thread after stop
    assert stepped.wait(0.2) and len(calls) > n
    r.stop(timeout=0.2)
    assert not r.running


def test_stop_wakes_a_long_wait() -> None:
    stepped = threading.Event()
    r = Refresher("t", stepped.set, lambda: 3600.0)
    r.start()
    assert stepped.wait(0.2)
    thread = r._thread
    assert thread is not None
    r.stop(timeout=0.2)
    assert not thread.is_alive()


def test_stop_without_start_and_twice_is_harmless() -> None:
    r = Refresher("t", lambda: None, lambda: 1.0)
    r.stop()
    r.stop()
    assert not r.running


def test_thread_is_a_daemon() -> None:
    started = threading.Event()
    r = Refresher("t", started.set, lambda: 1.0)
    r.start()
    try:
        assert started.wait(0.2)
        assert r._thread is not None and r._thread.daemon
    finally:
        r.stop(timeout=0.2)


# ---- the SDKs' use of it ----------------------------------------------------------------------


def _bare_agent(tmp_path: Path, now: list[float]) -> Agent:
    (tmp_path / "m.bin").write_bytes(b"weights")
    provenance = RuntimeProvenance("m", tmp_path / "m.bin", prompt_bytes=b"prompt")
    key = ec.generate_private_key(ec.SECP256R1())
    return Agent("A", key, provenance, "http://127.0.0.1:9", clock=lambda: now[0])


def test_agent_upkeep_fetches_just_after_each_whole_second(tmp_path: Path) -> None:
    now = [100.25]
    agent = _bare_agent(tmp_path, now)
    assert agent._upkeep_delay() == pytest.approx(0.77)
    now[0] = 100.99
    assert agent._upkeep_delay() == pytest.approx(0.05)  # never busier than 20 per second


def test_agent_upkeep_errors_become_last_error(tmp_path: Path) -> None:
    agent = _bare_agent(tmp_path, [0.0])
    agent._upkeep.step_once()  # not enrolled: renewal refuses
    assert isinstance(agent.last_error, NotEnrolled)


def test_agent_start_stop_runs_one_upkeep_thread(tmp_path: Path) -> None:
    agent = _bare_agent(tmp_path, [0.0])
    agent.start()
    try:
        agent.start()
        names = [t.name for t in threading.enumerate()].count("agentca-agent")
        assert names == 1 and agent._upkeep.running
    finally:
        agent.stop()
    assert not agent._upkeep.running
