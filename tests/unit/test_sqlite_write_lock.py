"""On SQLite a read-check-write takes the write lock before it reads (review 3): two
revocations racing both succeeded there, and the later reason overwrote the earlier one (a
keyCompromise became affiliationChanged, with two ledger entries)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import ca.revoking
from ca.errors import CAError, ErrorCode
from ca.revocation import RevocationReason
from tests.unit.core_support import make_core


def test_a_revocation_racing_another_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = make_core(tmp_path)
    record = core.issue()
    real_find = ca.revoking.find
    outcome: list[object] = []
    started: list[bool] = []

    def other() -> None:
        try:
            outcome.append(
                core.authority.revoke(record.serial_hex, RevocationReason.KEY_COMPROMISE, "op2")
            )
        except CAError as exc:
            outcome.append(exc.code)

    def find(*args: Any, **kw: Any) -> Any:
        row = real_find(*args, **kw)
        if not started:  # the first revocation has read the row: the second one runs now
            started.append(True)
            thread = threading.Thread(target=other)
            thread.start()
            thread.join(1.0)  # with the lock taken it waits for the first to commit
            racing.append(thread)
        return row

    racing: list[threading.Thread] = []
    monkeypatch.setattr(ca.revoking, "find", find)
    first = core.authority.revoke(record.serial_hex, RevocationReason.AFFILIATION_CHANGED, "op1")
    racing[0].join(30)
    assert first.revocation_reason is RevocationReason.AFFILIATION_CHANGED
    # the second one came after the first and escalated it to keyCompromise (docs 0008);
    # before the fix it ran in between and was then overwritten by affiliationChanged
    assert core.status(record) == ("revoked", int(RevocationReason.KEY_COMPROMISE))
    assert len(outcome) == 1 and not isinstance(outcome[0], ErrorCode)
    assert core.events().count("certificate.revoked") == 2
