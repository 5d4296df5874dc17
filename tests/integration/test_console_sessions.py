"""Console sessions on both backends, with a clock the test moves: timeouts, token revocation
and expiry end a session, ids are stored hashed, and every change is in the ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ca.apitokens import ApiTokens
from ca.console.guard import safe_next
from ca.console.sessions import ConsoleSessions, SessionEnded
from ca.errors import CAError, ErrorCode
from ca.roles import Role, token_hash
from ca.store.db import make_engine, make_session_factory, upgrade
from ca.store.models import ConsoleSession, LedgerEntryRow


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(db_url: str) -> Iterator[tuple[ConsoleSessions, ApiTokens, Clock]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    clock = Clock()
    tokens = ApiTokens(sessions, clock)
    console = ConsoleSessions(sessions, tokens, clock, timedelta(minutes=15), timedelta(hours=8))
    try:
        yield console, tokens, clock
    finally:
        engine.dispose()


def events(console: ConsoleSessions) -> list[tuple[str, str, dict[str, object]]]:
    with console.sessions() as s:
        rows = s.execute(
            select(LedgerEntryRow.actor, LedgerEntryRow.event, LedgerEntryRow.body)
            .where(LedgerEntryRow.event.like("console.%"))
            .order_by(LedgerEntryRow.seq)
        ).all()
    return [(a, e, json.loads(b)) for a, e, b in rows]


def test_sign_in_look_up_and_sign_out(store: tuple[ConsoleSessions, ApiTokens, Clock]) -> None:
    console, tokens, clock = store
    secret, _ = tokens.create("alice", "auditor")
    sid, user = console.sign_in(secret, "192.0.2.7")
    assert user.role is Role.AUDITOR and user.actor == "console:alice"
    with console.sessions() as s:
        row = s.scalars(select(ConsoleSession)).one()
    assert row.session_hash == token_hash(sid) and sid not in (row.session_hash, row.csrf_token)
    clock.now += timedelta(minutes=10)
    again = console.lookup(sid)
    assert again.csrf_token == user.csrf_token and again.session_id == user.session_id
    console.sign_out(again)
    with pytest.raises(SessionEnded) as ended:
        console.lookup(sid)
    assert ended.value.reason == "signed-out"
    assert [e for _, e, _ in events(console)] == ["console.signed_in", "console.signed_out"]
    assert events(console)[0][2]["client"] == "192.0.2.7"
    sid2, _ = console.sign_in(secret, "192.0.2.7")
    assert sid2 != sid  # a new id every sign-in


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (timedelta(minutes=15), "idle-timeout"),
        (timedelta(minutes=14, seconds=59), None),
    ],
)
def test_idle_timeout(
    store: tuple[ConsoleSessions, ApiTokens, Clock], step: timedelta, reason: str | None
) -> None:
    console, tokens, clock = store
    sid, _ = console.sign_in(tokens.create("bob", "read-only")[0], "x")
    clock.now += step
    if reason is None:
        console.lookup(sid)
        return
    with pytest.raises(SessionEnded) as ended:
        console.lookup(sid)
    assert ended.value.reason == reason
    assert events(console)[-1][1:] == (
        "console.session_ended",
        {"token_name": "bob", "session": 1, "reason": reason},
    )


def test_absolute_timeout_however_active(store: tuple[ConsoleSessions, ApiTokens, Clock]) -> None:
    console, tokens, clock = store
    sid, _ = console.sign_in(tokens.create("carol", "operator")[0], "x")
    for _ in range(47):  # a page every 10 minutes for 7 h 50 min
        clock.now += timedelta(minutes=10)
        console.lookup(sid)
    clock.now += timedelta(minutes=10)
    with pytest.raises(SessionEnded) as ended:
        console.lookup(sid)
    assert ended.value.reason == "session-expired"


def test_revoked_or_expired_token_ends_its_sessions(
    store: tuple[ConsoleSessions, ApiTokens, Clock],
) -> None:
    console, tokens, clock = store
    sid, _ = console.sign_in(tokens.create("dave", "operator")[0], "x")
    tokens.revoke("dave", "test")
    with pytest.raises(SessionEnded) as ended:
        console.lookup(sid)
    assert ended.value.reason == "token-revoked"
    short = tokens.create("erin", "auditor", ttl=timedelta(minutes=5))[0]
    sid, _ = console.sign_in(short, "x")
    clock.now += timedelta(minutes=5)
    with pytest.raises(SessionEnded) as ended:
        console.lookup(sid)
    assert ended.value.reason == "token-expired"
    with pytest.raises(CAError) as refused:
        console.sign_in(short, "x")
    assert refused.value.code is ErrorCode.UNAUTHENTICATED


def test_unknown_ids_and_other_roles_are_refused(
    store: tuple[ConsoleSessions, ApiTokens, Clock],
) -> None:
    console, tokens, _ = store
    for sid in ("", "x" * 65, "not-a-session"):
        with pytest.raises(SessionEnded):
            console.lookup(sid)
    verbatim = tokens.create("minter", "issuer-verbatim")[0]
    with pytest.raises(CAError) as refused:
        console.sign_in(verbatim, "x")
    assert refused.value.code is ErrorCode.FORBIDDEN


def test_bad_timeouts_are_a_config_error(store: tuple[ConsoleSessions, ApiTokens, Clock]) -> None:
    console, tokens, clock = store
    with pytest.raises(CAError) as refused:
        ConsoleSessions(console.sessions, tokens, clock, timedelta(0), timedelta(hours=1))
    assert refused.value.code is ErrorCode.CONFIG


@pytest.mark.parametrize(
    ("raw", "wanted"),
    [
        ("/console/ledger?event=x", "/console/ledger?event=x"),
        ("/console", "/console"),
        (None, "/console/"),
        ("https://evil.example/console", "/console/"),
        ("//evil.example", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/../v1/agents", "/console/"),
        ("/consolex", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/console/a\nb", "/console/"),
        ("/console/\n", "/console/"),
    ],
)
def test_next_is_a_local_console_path(raw: str | None, wanted: str) -> None:
    assert safe_next(raw) == wanted
