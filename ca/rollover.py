"""Issuing-CA key rollover with overlap (decision 0033).

A new issuing key is generated in the key store (``hsm.KeyManager``: private, sensitive,
non-extractable), the root signs a new issuing CA certificate for it in the one issuing
profile (:func:`ca.hierarchy.sign_issuing_certificate`, linted), and in one transaction the new
``issuers`` row becomes the active issuing CA, the old one is retired (``active`` false) and
the ledger records ``ca.issuing_rolled_over``. The retired CA keeps its key, its CRLs and its
responder certificates: what it issued keeps verifying, keeps OCSP answers and can still be
revoked, until it expires. Each process issues under the new CA within
:data:`ca.hierarchy.ACTIVE_ISSUER_TTL` seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.hierarchy import (
    CA_KEY_TYPES,
    ISSUING,
    Hierarchy,
    issuer_row,
    issuer_summary,
    sign_issuing_certificate,
)
from ca.oids import OidArc
from ca.queries import NOT_INITIALISED
from ca.store.db import lock_for_write
from ca.store.models import Issuer
from hsm import KeyManager
from hsm.keytypes import KeyType

ROLLED_OVER = "ca.issuing_rolled_over"
"""The ledger event of a rollover."""


@dataclass(frozen=True)
class RolloverPlan:
    """What a rollover makes: read from the database only (no key is touched)."""

    retiring: str  # name of the issuing CA that stops issuing
    retiring_id: int
    retiring_not_after: datetime
    root: str
    root_id: int
    root_key_label: str
    name: str  # the new issuing CA's name (its CRL files and caIssuers URL use it)
    common_name: str
    key_type: KeyType
    not_after: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "retiring": self.retiring,
            "retiring_not_after": self.retiring_not_after,
            "root": self.root,
            "issuer": self.name,
            "common_name": self.common_name,
            "key_type": self.key_type.value,
            "not_after": self.not_after,
        }


@dataclass(frozen=True)
class RolloverResult:
    """A completed rollover: the new issuing CA's certificate and key label."""

    plan: RolloverPlan
    certificate: x509.Certificate
    key_label: str

    def to_dict(self) -> dict[str, Any]:
        return self.plan.to_dict() | {
            "serial": format(self.certificate.serial_number, "x"),
            "subject": self.certificate.subject.rfc4514_string(),
            "key_label": self.key_label,
            "not_after": self.certificate.not_valid_after_utc,
        }


def generation_name(existing: set[str], generation: int) -> tuple[str, int]:
    """The first free ``issuing-<n>`` name from ``generation`` on (the first issuing CA of
    ``agentca init`` is plain ``issuing``)."""
    while f"{ISSUING}-{generation}" in existing:
        generation += 1
    return f"{ISSUING}-{generation}", generation


def generation_common_name(base: str, generation: int) -> str:
    """``<issuing_common_name> G<n>``, within the 64 characters of a CN."""
    suffix = f" G{generation}"
    return base[: 64 - len(suffix)] + suffix


def plan_rollover(
    settings: Settings, sessions: sessionmaker[Session], now: datetime, key_type: str | None = None
) -> RolloverPlan:
    """The rollover that :func:`roll_over` would make at ``now`` (reads the database only)."""
    try:
        kind = KeyType.parse(key_type or settings.issuing_key_type)
    except ValueError as exc:
        raise CAError(ErrorCode.UNSUPPORTED_KEY, str(exc)) from exc
    if kind not in CA_KEY_TYPES:
        raise CAError(
            ErrorCode.UNSUPPORTED_KEY,
            f"an issuing CA key cannot be {kind}: verifiers refuse chains under it; "
            f"choose one of {', '.join(str(t) for t in CA_KEY_TYPES)}",
        )
    with sessions() as s:
        rows = s.scalars(select(Issuer).order_by(Issuer.id)).all()
    active = [r for r in rows if r.role == ISSUING and r.active]
    if not active:
        raise CAError(ErrorCode.NOT_INITIALISED, NOT_INITIALISED)
    current = active[-1]
    root = next((r for r in rows if r.id == current.parent_id), None)
    if root is None:
        raise CAError(ErrorCode.INTERNAL, f"the issuing CA {current.name} has no parent on record")
    if root.not_after <= now:
        raise CAError(
            ErrorCode.CONFIG, f"the root CA {root.name} has expired; no rollover under it"
        )
    issuing_count = sum(1 for r in rows if r.role == ISSUING)
    name, generation = generation_name({r.name for r in rows}, issuing_count + 1)
    return RolloverPlan(
        retiring=current.name,
        retiring_id=current.id,
        retiring_not_after=current.not_after,
        root=root.name,
        root_id=root.id,
        root_key_label=root.key_label,
        name=name,
        common_name=generation_common_name(settings.issuing_common_name, generation),
        key_type=kind,
        not_after=min(now + timedelta(days=settings.issuing_validity_days), root.not_after),
    )


def roll_over(
    hierarchy: Hierarchy,
    plan: RolloverPlan,
    actor: str = "system",
    root_keys: KeyManager | None = None,
) -> RolloverResult:
    """Carry out ``plan``: new key (``hierarchy.keys``), certificate signed by the root key
    (from ``root_keys``, default the same store), recorded and made active, one ledger entry.

    Refused with ``conflict`` when another rollover made a different CA active since the plan
    was read; the key generated for it then stays unused in the token (harmless).
    """
    now = hierarchy.clock()
    root_store = root_keys if root_keys is not None else hierarchy.keys
    root_key = root_store.get(plan.root_key_label)  # first: an absent root token fails early
    with hierarchy.sessions() as s:
        root_row = s.get(Issuer, plan.root_id)
        assert root_row is not None
        root_cert = x509.load_der_x509_certificate(root_row.certificate_der)
    label = f"agentca-issuing-{secrets.token_hex(4)}"
    key = hierarchy.keys.generate(label, plan.key_type)
    cert = sign_issuing_certificate(
        hierarchy.settings, key.public_key(), plan.common_name, root_cert, root_key, now
    )
    with hierarchy.sessions.begin() as s:
        lock_for_write(s)
        rows = s.scalars(select(Issuer).with_for_update()).all()
        active = [r for r in rows if r.role == ISSUING and r.active]
        if [r.id for r in active] != [plan.retiring_id] or plan.name in {r.name for r in rows}:
            raise CAError(
                ErrorCode.CONFLICT,
                f"the active issuing CA changed since the rollover was planned "
                f"(another rollover?); {plan.retiring} is no longer the only active one",
            )
        old = active[0]
        new = issuer_row(
            plan.name, ISSUING, plan.root_id, label, plan.key_type.value, cert, now,
            OidArc(old.oid_arc),
        )  # fmt: skip
        new.previous_oid_arcs = old.previous_oid_arcs
        old.active = False
        s.add(new)
        s.flush()
        hierarchy.journal.write(
            s,
            actor,
            ROLLED_OVER,
            {
                "retired": {"issuer": old.name, "serial": old.serial_hex},
                "issuer": plan.name,
                "parent": plan.root,
                "certificate": issuer_summary(cert, plan.key_type.value),
            },
            now,
        )
    hierarchy.forget_issuing()
    return RolloverResult(plan, cert, label)
