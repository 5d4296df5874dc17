"""Bounded exponential backoff for reopening a lost HSM session (pure, fake clock)."""

from __future__ import annotations

import pytest

from ca.api.problems import problem_body
from ca.api.statuses import http_status
from ca.errors import ErrorCode, as_ca_error
from hsm.backoff import Backoff
from hsm.errors import HSMUnavailable


def test_delays_double_up_to_the_maximum_and_reset_on_success() -> None:
    b = Backoff(initial=0.1, maximum=5.0)
    now = 100.0
    delays = []
    for _ in range(10):
        assert b.allows(now)
        delays.append(b.failed(now))
        assert not b.allows(now)
        now += delays[-1]
    assert delays[:7] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
    assert max(delays) == 5.0
    b.succeeded()
    assert b.allows(now) and b.wait(now) == 0.0
    assert b.failed(now) == pytest.approx(0.1)


def test_wait_counts_down_and_fast_fails_in_between() -> None:
    b = Backoff(initial=0.5, maximum=2.0)
    b.failed(10.0)
    assert b.wait(10.0) == pytest.approx(0.5)
    assert b.wait(10.4) == pytest.approx(0.1)
    assert not b.allows(10.4)
    assert b.allows(10.5) and b.wait(11.0) == 0.0


def test_many_failures_never_overflow() -> None:
    b = Backoff()
    for i in range(10_000):
        assert b.failed(float(i)) <= 5.0


def test_hsm_unavailable_is_a_503_problem_with_retry_after() -> None:
    err = as_ca_error(HSMUnavailable("the HSM is unavailable", retry_after=3))
    assert err.code is ErrorCode.HSM_UNAVAILABLE
    assert http_status(err) == 503
    assert problem_body(err)["type"].endswith("/hsm-unavailable")
    assert err.extra["retry_after"] == 3
