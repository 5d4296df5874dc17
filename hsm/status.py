"""What a readiness check learns about a key store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HsmStatus:
    """What a readiness check learns about the token: reachable or not, and why."""

    ok: bool
    detail: str
    retry_after: float = 0.0  # seconds until the next reopen attempt, when not ok
    last_success_age: float | None = None  # seconds since the last successful operation

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ok else "unavailable", "detail": self.detail}
        if not self.ok:
            body["retry_after_seconds"] = round(self.retry_after, 3)
        if self.last_success_age is not None:
            body["last_success_seconds_ago"] = round(self.last_success_age, 3)
        return body
