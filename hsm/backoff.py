"""Bounded exponential backoff for reopening a lost PKCS#11 session (pure: the caller passes
the time, so tests drive it with a fake clock)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """After each failure the next attempt waits ``initial * factor**n`` seconds, at most
    ``maximum``; one success resets it. Between attempts callers fail fast instead of waiting."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    failures: int = 0
    not_before: float = 0.0

    def allows(self, now: float) -> bool:
        """True if an attempt may be made at ``now``."""
        return now >= self.not_before

    def wait(self, now: float) -> float:
        """Seconds until the next attempt is allowed (0 if it is allowed now)."""
        return max(0.0, self.not_before - now)

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; returns the delay before the next one."""
        delay = min(self.maximum, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        """Record a successful attempt: the next failure starts from ``initial`` again."""
        self.failures = 0
        self.not_before = 0.0
