"""Strict JSON bodies of the CA API: bounded nesting measured in one linear pass."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ca.api.bodies import json_depth, parse_json_object
from ca.api.statuses import http_status
from ca.errors import CAError


@contextmanager
def at_most(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""

    def _expired(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": "[[[["}]}', 3),
        (b'{"a": "\\"]]]]"}', 1),
        (b'{"a": "\\\\", "b": [[]]}', 3),
        (b"[" * 100 + b"]" * 100, 100),
        (b'"unterminated [[[', 0),
    ],
)
def test_depth(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "' + b'\\"' * 32_000,  # unterminated string of escaped quotes (64 KB)
        b'{"a": "' + b"\\\\" * 32_000,
        b'"' * 65_000,
        b"[" * 65_000,
    ],
)
def test_hostile_bodies_are_refused_in_linear_time(raw: bytes) -> None:
    """Review finding: cutting strings out with re.sub was quadratic on escaped quotes
    (64 KB, the body limit, cost ~17 s of CPU per unauthenticated /v1/renew)."""
    with at_most(2), pytest.raises(CAError) as caught:
        parse_json_object(raw)
    assert http_status(caught.value) == 400


def test_strict_parsing() -> None:
    assert parse_json_object(b'{"a": [1, 2]}') == {"a": [1, 2]}
    for raw in (b'{"a": 1, "a": 2}', b'{"a": NaN}', b"[1]", b'{"a": "\xff"}', b"\xff\xfe{\x00}"):
        with pytest.raises(CAError):
            parse_json_object(raw)
