"""SQLAlchemy 2 typed models: CAs, certificates, registrations, inventory, tokens, CRL/OCSP.

Serial numbers are stored as lowercase hexadecimal without leading zeros (``serial_hex``):
they exceed 64-bit integers, and text compares and indexes identically on both backends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ca.oids import DEFAULT_ARC
from ca.records import CertStatus as CertStatus  # re-exported; its home is ca.records
from ca.store.types import UTCDateTime


class Base(DeclarativeBase):
    """Declarative base holding the metadata Alembic migrates."""


CERT_STATUS = Enum(
    CertStatus,
    native_enum=False,  # a VARCHAR(16) with a CHECK, the same on PostgreSQL and SQLite
    length=16,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
    create_constraint=True,
    name="ck_certificates_status",
)


class Issuer(Base):
    """A CA certificate whose private key lives in the HSM under ``key_label``."""

    __tablename__ = "issuers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # "root" | "issuing"
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("issuers.id"))
    subject: Mapped[str] = mapped_column(Text)
    key_label: Mapped[str] = mapped_column(String(128), unique=True)
    key_type: Mapped[str] = mapped_column(String(16))
    serial_hex: Mapped[str] = mapped_column(String(42))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    name_hash_sha1: Mapped[bytes] = mapped_column(LargeBinary(20))
    key_hash_sha1: Mapped[bytes] = mapped_column(LargeBinary(20))
    name_hash_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    key_hash_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # the CA's OID arc (ca.arcs, decision 0022): what it issues under now, and the arcs it
    # issued under before with how long they stay accepted (JSON, "" for none)
    oid_arc: Mapped[str] = mapped_column(String(200), default=DEFAULT_ARC.dotted)
    previous_oid_arcs: Mapped[str] = mapped_column(Text, default="")

    parent: Mapped[Issuer | None] = relationship(remote_side=[id])


class Certificate(Base):
    """An agent certificate record, written before the certificate is signed."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("issuer_id", "serial_hex", name="uq_certificates_issuer_serial"),
        Index("ix_certificates_model_digest", "model_digest"),
        Index("ix_certificates_prompt_digest", "prompt_digest"),
        Index("ix_certificates_officer", "officer"),
        Index("ix_certificates_agent_name", "agent_name"),
        Index("ix_certificates_status_not_after", "status", "not_after"),
        # a token yields at most one certificate: one reservation that has not failed
        Index(
            "uq_certificates_enrollment_token_live",
            "enrollment_token_id",
            unique=True,
            postgresql_where=text("status <> 'failed'"),
            sqlite_where=text("status <> 'failed'"),
        ),
        Index("ix_certificates_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("issuers.id"))
    serial_hex: Mapped[str] = mapped_column(String(42))
    status: Mapped[CertStatus] = mapped_column(CERT_STATUS, default=CertStatus.PENDING)
    agent_name: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    public_key_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    model_type: Mapped[str] = mapped_column(String(128))
    model_digest: Mapped[str] = mapped_column(String(128))
    prompt_digest: Mapped[str] = mapped_column(String(128))
    config_digest: Mapped[str | None] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(Text)  # space-separated, sorted
    officer: Mapped[str] = mapped_column(String(254))
    environment: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    certificate_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    fingerprint_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[int | None] = mapped_column(Integer)
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    failure: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True)
    # renewal lineage (migration 0006): the certificate this one renewed, the first certificate
    # of the chain of renewals (NULL for a certificate that renewed nothing: it is its own
    # root), and the SHA-256 of the renewal statement, unique so a proof is accepted once
    renewed_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificates.id", name="fk_certificates_renewed_from_id"), index=True
    )
    lineage_id: Mapped[int | None] = mapped_column(
        ForeignKey("certificates.id", name="fk_certificates_lineage_id"), index=True
    )
    renewal_proof_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # the enrollment token this reservation consumed (migration 0008): a reservation that
    # fails releases it (docs/decisions/0014-crash-safe-enrollment.md)
    enrollment_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollment_tokens.id", name="fk_certificates_enrollment_token_id")
    )

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


class LedgerCheckpointRow(Base):
    """A signed tree head."""

    __tablename__ = "ledger_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    timestamp: Mapped[str] = mapped_column(String(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    signer_id: Mapped[int] = mapped_column(ForeignKey("audit_signers.id"))


class AuditSigner(Base):
    """The audit key (in the HSM) and its certificate, used to sign checkpoints."""

    __tablename__ = "audit_signers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_label: Mapped[str] = mapped_column(String(128), unique=True)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
