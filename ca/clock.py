"""The CA's clock: wall time in UTC at X.509 precision, injectable for tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, in UTC, truncated to whole seconds (X.509 time precision)."""
    return datetime.now(UTC).replace(microsecond=0)
