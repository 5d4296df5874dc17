"""Enrollment on PostgreSQL in three statements, each its own atomic transaction (decision 0048).

The issuance cycle's steps are unchanged (ca/issuance.py): the reservation commits before the
HSM signs, and the client is answered only after ``issued`` and its ledger entry committed.
What changes is how many round trips each step takes. On one autocommit connection:

1. **Read** (no locks, no writes): the usable token's registration and the inventory rows of
   the CSR's model digests, in one ``SELECT``.
2. **Reserve**: one statement that share-locks the agent and model rows (still active), takes
   the token (still unused, unrevoked, unexpired), inserts the ``pending`` record, and appends
   ``enrollment_token.used`` and ``certificate.reserved`` to the ledger; each step runs only
   if the one before it produced a row, so either everything is written or nothing is. A
   single statement in autocommit is one transaction: nothing of it survives a crash or an
   error half-way.
3. **Store**: one statement that sets ``pending`` -> ``issued`` by compare-and-set and, only
   if it did, appends ``certificate.issued``.

The ledger append is the one of ``ca.ledger.store`` done in SQL: the head row is updated by
the number of entries (its row lock serialises appenders until the commit, so numbers stay
gap-free and in commit order) and each entry's leaf hash is ``sha256(0x00 || canonical
JSON)``, where the canonical JSON is made in Python with the sequence number left out and
PostgreSQL writes the number's decimal digits into the gap (:func:`ledger_arrays`). ``agentca
ledger verify`` recomputes every leaf hash from the stored entry, so a difference would show.

Anything but the plain success (an unknown or used token, a disabled agent, a retired model,
a policy refusal, a malformed CSR) produces no row; the caller then runs the general path,
which writes nothing before its own checks and names the reason as it always did.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ca.ledger.entries import format_time
from ca.records import CertStatus
from ca.registry import POLICY_COLUMNS
from ca.store.models import Certificate
from wire.canonical import canonical

#: the columns of the reservation's INSERT, in order; ``enrollment_token_id`` comes from the
#: token the same statement takes
RESERVED_COLUMNS = tuple(
    c.key for c in Certificate.__table__.columns if c.key not in ("id", "enrollment_token_id")
)

READ = """
SELECT a.*, m.digest AS m_digest, m.model_type AS m_model_type,
       m.environment AS m_environment, m.status AS m_status,
       m.digest_scheme AS m_digest_scheme, m.signed_by AS m_signed_by,
       m.signature_method AS m_signature_method, m.signer AS m_signer,
       m.signature_sha256 AS m_signature_sha256
FROM enrollment_tokens t
JOIN agents a ON a.id = t.agent_id
LEFT JOIN models m ON m.digest = ANY(%(digests)s::text[]) AND m.environment = a.environment
WHERE t.token_hash = %(h)s AND t.used_at IS NULL AND t.revoked_at IS NULL
  AND t.expires_at > %(now)s
"""


def _ledger_ctes(guard: str) -> str:
    """``head`` and ``led``: append the ``l_*`` entries when CTE ``guard`` produced a row."""
    return f"""
head AS (
  UPDATE ledger_head SET size = size + %(l_n)s::bigint
  WHERE id = 1 AND EXISTS (SELECT 1 FROM {guard}) RETURNING size),
led AS (
  INSERT INTO ledger_entries (seq, time, actor, event, agent, officer, body, leaf_hash)
  SELECT q.seq, q.time, q.actor, q.event, q.agent, q.officer, q.body,
         sha256(q.prefix || convert_to(q.seq::text, 'UTF8') || q.suffix)
  FROM (SELECT head.size - %(l_n)s::bigint + e.i - 1 AS seq, e.*
        FROM head, unnest(%(l_time)s::text[], %(l_actor)s::text[], %(l_event)s::text[],
                          %(l_agent)s::text[], %(l_officer)s::text[], %(l_body)s::text[],
                          %(l_prefix)s::bytea[], %(l_suffix)s::bytea[])
             WITH ORDINALITY AS e(time, actor, event, agent, officer, body, prefix, suffix, i)
       ) q
  RETURNING seq)"""


def all_appended(appended: str, expected: str) -> str:
    """The number of entries appended, or an error (which rolls the whole statement back)
    when it is not the expected one: a reservation or a storage never commits without its
    ledger entries. The error is a failed cast, evaluated only in that branch."""
    return (
        f"CASE WHEN {appended} = {expected} THEN {appended} "
        f"ELSE ('ledger entries not all appended: ' || {appended})::bigint END"
    )


RESERVE = f"""
WITH ok AS (
  SELECT 1 FROM agents a, models m
  WHERE a.id = %(agent_id)s AND a.status = 'active'
    AND ({", ".join(f"a.{c}" for c in POLICY_COLUMNS)})
        IS NOT DISTINCT FROM ({", ".join(f"%(p_{c})s" for c in POLICY_COLUMNS)})
    AND m.digest = %(digest)s AND m.environment = %(env)s AND m.status = 'active'
  FOR SHARE OF a, m),
tok AS (
  UPDATE enrollment_tokens SET used_at = %(now)s
  WHERE token_hash = %(h)s AND agent_id = %(agent_id)s AND used_at IS NULL
    AND revoked_at IS NULL AND expires_at > %(now)s AND EXISTS (SELECT 1 FROM ok)
  RETURNING id),
cert AS (
  INSERT INTO certificates ({", ".join(RESERVED_COLUMNS)}, enrollment_token_id)
  SELECT {", ".join(f"%(c_{c})s" for c in RESERVED_COLUMNS)}, tok.id FROM tok
  RETURNING id, enrollment_token_id),
{_ledger_ctes("cert")}
SELECT cert.id, cert.enrollment_token_id,
       (SELECT oid_arc FROM issuers WHERE id = %(c_issuer_id)s),
       {all_appended("(SELECT count(*) FROM led)", "%(l_n)s::bigint")}
FROM cert
"""

STORE = f"""
WITH cert AS (
  UPDATE certificates SET status = '{CertStatus.ISSUED.value}', certificate_der = %(der)s,
         fingerprint_sha256 = %(fp)s, issued_at = %(now)s
  WHERE id = %(row_id)s AND status = '{CertStatus.PENDING.value}'
  RETURNING id),
{_ledger_ctes("cert")}
SELECT c, {all_appended("l", "c")}
FROM (SELECT (SELECT count(*) FROM cert) AS c, (SELECT count(*) FROM led) AS l) counts
"""


class SerialTaken(Exception):
    """The reservation's serial number is already on record; nothing was written."""


#: one ledger entry as :func:`ca.ledger.store.append` takes it
Entry = tuple[str, str, Mapping[str, Any], datetime]

_LEDGER_ARRAYS = ("time", "actor", "event", "agent", "officer", "body", "prefix", "suffix")
_SEQ_MARK = 1 << 70  # stands for the sequence number; no real one is this large


def ledger_arrays(entries: Sequence[Entry]) -> dict[str, Any]:
    """The ``l_*`` parameters of :func:`_ledger_ctes` for ``entries`` (in order).

    Each entry's canonical JSON is split around its ``seq`` value: ``prefix`` (with the leaf
    prefix byte 0x00) and ``suffix``, so that ``sha256(prefix || str(seq) || suffix)`` is the
    leaf hash :class:`ca.ledger.entries.LedgerEntry` gives. Raises ``ValueError`` for a body
    that cannot be hashed (a float), before anything is sent.
    """
    params: dict[str, list[Any]] = {f"l_{k}": [] for k in _LEDGER_ARRAYS}
    mark = b'"seq":%d' % _SEQ_MARK
    for actor, event, body, now in entries:
        time = format_time(now)
        whole = canonical(
            {"seq": _SEQ_MARK, "time": time, "actor": actor, "event": event, "body": dict(body)}
        )
        at = whole.index(mark) + len(b'"seq":')
        params["l_time"].append(time)
        params["l_actor"].append(actor)
        params["l_event"].append(event)
        params["l_agent"].append(_text(body.get("agent")))
        params["l_officer"].append(_text(body.get("officer")))
        params["l_body"].append(canonical(body, check=False).decode())
        params["l_prefix"].append(b"\x00" + whole[:at])
        params["l_suffix"].append(whole[at + len(str(_SEQ_MARK)) :])
    return {"l_n": len(entries), **params}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@contextmanager
def autocommit(engine: Engine) -> Iterator[Any]:
    """A pooled connection's psycopg connection in autocommit mode (reset when returned).

    A psycopg error raised in the block is raised as SQLAlchemy's wrapper of it (what the
    general path raises, so ``ca.errors.as_ca_error`` answers 503 for an unreachable
    database, 507 for a full disk, 409 for a deadlock); a lost connection is invalidated, so
    it is not handed out again.
    """
    import psycopg

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        raw: Any = conn.connection.driver_connection
        try:
            yield raw
        except psycopg.Error as exc:
            lost = bool(raw.closed) or engine.dialect.is_disconnect(exc, raw, None)  # type: ignore[arg-type]
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                None, None, exc, psycopg.Error, connection_invalidated=lost
            ) from exc


def read_usable(
    raw: Any, token_digest: str, now: datetime, digests: Sequence[str]
) -> list[Any] | None:
    """Step 1: the registration row (columns of ``agents``) with one row per matching
    inventory entry (``m_*``, NULL when none), or None when the token is not usable."""
    from psycopg.rows import namedtuple_row

    with raw.cursor(row_factory=namedtuple_row) as cur:
        cur.execute(READ, {"h": token_digest, "now": now, "digests": list(digests)})
        rows = cur.fetchall()
    return rows or None


def reserve(
    raw: Any,
    values: Mapping[str, Any],
    token_digest: str,
    agent_id: int,
    entries: Sequence[Entry],
    now: datetime,
    agent_version: Sequence[object],
) -> tuple[int, int, str] | None:
    """Step 2: ``(row id, token id, issuing arc)`` of the committed reservation, or None when
    nothing was written (a check failed). ``values`` are the record's columns."""
    params = {f"c_{c}": values[c] for c in RESERVED_COLUMNS}
    params.update(
        {
            "h": token_digest,
            "now": now,
            "agent_id": agent_id,
            **{f"p_{c}": v for c, v in zip(POLICY_COLUMNS, agent_version, strict=True)},
            "digest": values["model_digest"],
            "env": values["environment"],
            **ledger_arrays(entries),
        }
    )
    from psycopg.errors import UniqueViolation  # psycopg is there: this is PostgreSQL

    with raw.cursor() as cur:
        try:
            cur.execute(RESERVE, params)
        except UniqueViolation as exc:
            raise SerialTaken(str(exc)) from exc
        found = cur.fetchone()
    if found is None:
        return None
    row_id, token_id, arc, appended = found
    if appended != len(entries) or arc is None:  # cannot happen: the statement is one unit
        raise RuntimeError(f"reservation {row_id} wrote {appended} of {len(entries)} entries")
    return int(row_id), int(token_id), str(arc)


def store(raw: Any, row_id: int, der: bytes, fingerprint: str, now: datetime, entry: Entry) -> bool:
    """Step 3: ``pending`` -> ``issued`` with its ledger entry; False when the record was no
    longer pending (nothing written)."""
    params = {"row_id": row_id, "der": der, "fp": fingerprint, "now": now}
    params.update(ledger_arrays([entry]))
    with raw.cursor() as cur:
        cur.execute(STORE, params)
        found = cur.fetchone()
    assert found is not None  # an aggregate always answers one row
    changed, appended = found
    if changed != appended:
        raise RuntimeError(f"storing {row_id} changed {changed} rows, appended {appended}")
    return bool(changed)
