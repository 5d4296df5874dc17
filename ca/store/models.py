"""SQLAlchemy 2 typed models: CAs, certificates, registrations, inventory, tokens, CRL/OCSP.

Serial numbers are stored as lowercase hexadecimal without leading zeros (``serial_hex``):
they exceed 64-bit integers, and text compares and indexes identically on both backends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ca.records import CertStatus as CertStatus  # re-exported; its home is ca.records
from ca.store import tables
from ca.store.tables import CERT_STATUS as CERT_STATUS  # re-exported
from ca.store.types import UTCDateTime


class Base(DeclarativeBase):
    """Declarative base holding the metadata Alembic migrates (shared with ca.store.tables)."""

    metadata = tables.metadata


class Issuer(Base):
    """A CA certificate whose private key lives in the HSM under ``key_label``."""

    __table__ = tables.issuers

    id: Mapped[int]
    name: Mapped[str]
    role: Mapped[str]  # "root" | "issuing"
    parent_id: Mapped[int | None]
    subject: Mapped[str]
    key_label: Mapped[str]
    key_type: Mapped[str]
    serial_hex: Mapped[str]
    certificate_der: Mapped[bytes]
    name_hash_sha1: Mapped[bytes]
    key_hash_sha1: Mapped[bytes]
    name_hash_sha256: Mapped[bytes]
    key_hash_sha256: Mapped[bytes]
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    active: Mapped[bool]
    created_at: Mapped[datetime]
    oid_arc: Mapped[str]
    previous_oid_arcs: Mapped[str]

    parent: Mapped[Issuer | None] = relationship(remote_side=[tables.issuers.c.id])


class Certificate(Base):
    """An agent certificate record, written before the certificate is signed."""

    __table__ = tables.certificates

    id: Mapped[int]
    issuer_id: Mapped[int]
    serial_hex: Mapped[str]
    status: Mapped[CertStatus]
    agent_name: Mapped[str]
    subject: Mapped[str]
    public_key_sha256: Mapped[bytes]
    model_type: Mapped[str]
    model_digest: Mapped[str]
    prompt_digest: Mapped[str]
    config_digest: Mapped[str | None]
    scopes: Mapped[str]  # space-separated, sorted
    officer: Mapped[str]
    environment: Mapped[str]
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    certificate_der: Mapped[bytes | None]
    fingerprint_sha256: Mapped[str | None]
    requested_by: Mapped[str]
    created_at: Mapped[datetime]
    issued_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revocation_reason: Mapped[int | None]
    revoked_by: Mapped[str | None]
    failure: Mapped[str | None]
    agent_id: Mapped[int | None]
    renewed_from_id: Mapped[int | None]
    lineage_id: Mapped[int | None]
    renewal_proof_sha256: Mapped[str | None]
    attestation_sha256: Mapped[str | None]
    enrollment_token_id: Mapped[int | None]

    issuer: Mapped[Issuer] = relationship()


class StatusChange(Base):
    """Change feed of certificate status (revocation, hold release), written in the same
    transaction as the change; OCSP workers poll its highest id to drop stale answers."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("issuers.id"))
    serial_hex: Mapped[str] = mapped_column(String(42))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AgentRegistration(Base):
    """What an agent may be certified for: the policy input for enrollment and renewal."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("name_key", name="uq_agents_name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # ca.names.identifier_key(name): look-alike names (case, UTS #39 confusables) collide here
    name_key: Mapped[str] = mapped_column(String(160))
    organization: Mapped[str | None] = mapped_column(String(128))
    officer: Mapped[str] = mapped_column(String(254))
    environment: Mapped[str] = mapped_column(String(64))
    model_type: Mapped[str] = mapped_column(String(128))
    allowed_scopes: Mapped[str] = mapped_column(Text)  # space-separated, sorted
    allowed_model_digests: Mapped[str] = mapped_column(Text)  # space-separated hex
    allowed_prompt_digests: Mapped[str] = mapped_column(Text)  # space-separated hex
    # space-separated hex; empty: the CSR must carry no config digest
    allowed_config_digests: Mapped[str] = mapped_column(Text, default="", server_default="")
    allowed_key_types: Mapped[str] = mapped_column(Text)  # space-separated
    max_validity_seconds: Mapped[int] = mapped_column(Integer)
    # certificates only with a runtime attestation (decision 0051)
    require_attestation: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModelInventoryEntry(Base):
    """An authorised model digest for one environment (active or retired)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("digest", "environment", name="uq_models_digest_env"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(128), index=True)
    model_type: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | retired
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # agentca-manifest-v1 | oms-v1 (migration 0013, decision 0049)
    digest_scheme: Mapped[str] = mapped_column(
        String(32), default="agentca-manifest-v1", server_default="agentca-manifest-v1"
    )
    # the OMS signature that admitted the entry (migration 0014, decision 0052); None: unsigned
    signed_by: Mapped[str | None] = mapped_column(String(128))
    signature_method: Mapped[str | None] = mapped_column(String(16))  # key | certificate
    signer: Mapped[str | None] = mapped_column(Text)
    signature_sha256: Mapped[str | None] = mapped_column(String(64))
    signature_bundle: Mapped[str | None] = mapped_column(Text)


class ScopeDefinition(Base):
    """The scope catalogue: a registration may only allow scopes listed here."""

    __tablename__ = "scopes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EnrollmentToken(Base):
    """A one-time, short-lived enrollment secret bound to one registration (stored hashed)."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # migration 0011
    revoked_by: Mapped[str | None] = mapped_column(String(128))


class ApiToken(Base):
    """An operator/auditor/read-only API credential (stored as a SHA-256 hash only)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # operator | auditor | read-only
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(160))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # revoked at
    revoked_by: Mapped[str | None] = mapped_column(String(160))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # about once a minute


class CrlState(Base):
    """Per-issuer CRL numbering: ``UPDATE ... RETURNING`` keeps numbers strictly increasing
    and unique across concurrent publishers."""

    __tablename__ = "crl_state"

    issuer_id: Mapped[int] = mapped_column(ForeignKey("issuers.id"), primary_key=True)
    crl_number: Mapped[int] = mapped_column(Integer, default=0)
    last_full_number: Mapped[int | None] = mapped_column(Integer)
    last_full_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_change_id: Mapped[int] = mapped_column(Integer, default=0)


class OcspSigner(Base):
    """A delegated OCSP responder certificate for one issuer; its key lives in the HSM."""

    __tablename__ = "ocsp_signers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("issuers.id"), index=True)
    key_label: Mapped[str] = mapped_column(String(128), unique=True)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # set by a rotation that retires it (``agentca ocsp rotate-signer --retire-previous``,
    # decision 0047): no responder signs with it or serves an answer it signed any more
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class LedgerEntryRow(Base):
    """One append-only ledger entry; PostgreSQL and SQLite triggers refuse UPDATE and DELETE."""

    __tablename__ = "ledger_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(160))
    event: Mapped[str] = mapped_column(String(64), index=True)
    agent: Mapped[str | None] = mapped_column(String(64), index=True)  # copied from body
    officer: Mapped[str | None] = mapped_column(String(254), index=True)  # copied from body
    body: Mapped[str] = mapped_column(Text)  # canonical JSON
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerHead(Base):
    """A single row holding the ledger size: appends take the next number under its row lock,
    so sequence numbers stay gap-free under concurrent writers."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class CheckpointColumns:
    """The columns of a signed tree head, shared by both ledgers' checkpoint tables."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    timestamp: Mapped[str] = mapped_column(String(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    signer_id: Mapped[int] = mapped_column(ForeignKey("audit_signers.id"))


class LedgerCheckpointRow(CheckpointColumns, Base):
    """A signed tree head."""

    __tablename__ = "ledger_checkpoints"


class AuditSigner(Base):
    """The audit key (in the HSM) and its certificate, used to sign checkpoints."""

    __tablename__ = "audit_signers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_label: Mapped[str] = mapped_column(String(128), unique=True)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---------------------------------------------------------------- the action ledger (0056)


class GatewayRow(Base):
    """A gateway registered to ship its decisions (``agentca gateway add``): the key that signs
    its local log's checkpoints, named by ``key_id`` (hex SHA-256 of the SPKI DER)."""

    __tablename__ = "gateways"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key_der: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ActionRecordRow(Base):
    """One gateway decision in the action ledger; append-only (database triggers), numbered
    ``seq`` gap-free across all gateways, identified by ``(gateway, gateway_seq)``. ``record``
    is the record's canonical JSON (its leaf bytes); the other columns are copies for the
    export filters and the drift analyser."""

    __tablename__ = "action_records"
    __table_args__ = (
        UniqueConstraint("gateway", "gateway_seq", name="uq_action_records_gateway_seq"),
        # equality filters on long strings: hash indexes on PostgreSQL (no B-tree size limit)
        Index("ix_action_records_agent", "agent", postgresql_using="hash"),
        Index("ix_action_records_officer", "officer", postgresql_using="hash"),
        Index("ix_action_records_route", "route", postgresql_using="hash"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    gateway: Mapped[str] = mapped_column(String(64))
    gateway_seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[str] = mapped_column(String(32), index=True)
    agent: Mapped[str | None] = mapped_column(String(1024))
    serial: Mapped[str | None] = mapped_column(String(1024))
    officer: Mapped[str | None] = mapped_column(String(1024))
    method: Mapped[str] = mapped_column(String(1024))
    route: Mapped[str] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(8), index=True)
    scope: Mapped[str | None] = mapped_column(String(1024))
    failed_check: Mapped[str | None] = mapped_column(String(1024))  # a denial's check
    record: Mapped[str] = mapped_column(Text)  # canonical JSON: the leaf bytes
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class ActionLedgerHead(Base):
    """The action ledger's size: its row lock serialises batches (gap-free ``seq``)."""

    __tablename__ = "action_ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class ActionCheckpointRow(CheckpointColumns, Base):
    """A signed tree head of the action ledger (ledger name ``agentca-actions``)."""

    __tablename__ = "action_checkpoints"


class GatewayCheckpointRow(Base):
    """A checkpoint of a gateway's local log, as received (signature verified): ``status``
    ``pending`` until the CA holds its records, then ``consistent`` or ``inconsistent`` for
    good (a trigger refuses any other change)."""

    __tablename__ = "gateway_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), index=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    timestamp: Mapped[str] = mapped_column(String(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ConsoleSession(Base):
    """A web console session (decision 0054): the random id is stored as its SHA-256 only,
    and bound to the API token it was exchanged for, so revoking the token ends it."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(32))


class ConsoleVerifyJob(Base):
    """A whole-ledger verification the console runs in a worker's background thread
    (decision 0054): its progress, then its verdict, readable by every worker. The job id
    is stored as its SHA-256 only and shown only to the session that started it; rows are
    deleted 10 minutes after the start (a job still running then stops)."""

    __tablename__ = "console_verify_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("console_sessions.id"), index=True)
    ledger: Mapped[str] = mapped_column(String(32))  # the checkpoints' ledger name
    tree_size: Mapped[int] = mapped_column(BigInteger)
    checked: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # running | done | failed
    ok: Mapped[bool | None] = mapped_column(Boolean)
    message: Mapped[str | None] = mapped_column(Text)
    failed_seq: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
