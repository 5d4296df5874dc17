"""The ``issuers`` and ``certificates`` tables as SQLAlchemy Core, without the ORM.

The ORM classes in :mod:`ca.store.models` map these very ``Table`` objects (one schema, one
metadata that Alembic migrates); read paths that must start fast, such as ``agentca list``,
query them through Core and never import ``sqlalchemy.orm`` (decision 0030).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from ca.oids import DEFAULT_ARC
from ca.records import CertStatus
from ca.store.types import UTCDateTime

metadata = MetaData()

CERT_STATUS = Enum(
    CertStatus,
    native_enum=False,  # a VARCHAR(16) with a CHECK, the same on PostgreSQL and SQLite
    length=16,
    values_callable=lambda members: [m.value for m in members],
    validate_strings=True,
    create_constraint=True,
    name="ck_certificates_status",
)


# A CA certificate whose private key lives in the HSM under ``key_label``.
issuers = Table(
    "issuers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), unique=True, nullable=False),
    Column("role", String(16), nullable=False),  # "root" | "issuing"
    Column("parent_id", ForeignKey("issuers.id")),
    Column("subject", Text, nullable=False),
    Column("key_label", String(128), unique=True, nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("serial_hex", String(42), nullable=False),
    Column("certificate_der", LargeBinary, nullable=False),
    Column("name_hash_sha1", LargeBinary(20), nullable=False),
    Column("key_hash_sha1", LargeBinary(20), nullable=False),
    Column("name_hash_sha256", LargeBinary(32), nullable=False),
    Column("key_hash_sha256", LargeBinary(32), nullable=False),
    Column("not_before", UTCDateTime(), nullable=False),
    Column("not_after", UTCDateTime(), nullable=False),
    Column("active", Boolean, default=True, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # the CA's OID arc (ca.arcs, decision 0022): what it issues under now, and the arcs it
    # issued under before with how long they stay accepted (JSON, "" for none)
    Column("oid_arc", String(200), default=DEFAULT_ARC.dotted, nullable=False),
    Column("previous_oid_arcs", Text, default="", nullable=False),
)

# An agent certificate record, written before the certificate is signed.
certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issuer_id", ForeignKey("issuers.id"), nullable=False),
    Column("serial_hex", String(42), nullable=False),
    Column("status", CERT_STATUS, default=CertStatus.PENDING, nullable=False),
    Column("agent_name", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("public_key_sha256", LargeBinary(32), nullable=False),
    Column("model_type", String(128), nullable=False),
    Column("model_digest", String(128), nullable=False),
    Column("prompt_digest", String(128), nullable=False),
    Column("config_digest", String(128)),
    Column("scopes", Text, nullable=False),  # space-separated, sorted
    Column("officer", String(254), nullable=False),
    Column("environment", String(64), nullable=False),
    Column("not_before", UTCDateTime(), nullable=False),
    Column("not_after", UTCDateTime(), nullable=False),
    Column("certificate_der", LargeBinary),
    Column("fingerprint_sha256", String(64), unique=True),
    Column("requested_by", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("issued_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
    Column("revocation_reason", Integer),
    Column("revoked_by", String(128)),
    Column("failure", Text),
    Column("agent_id", ForeignKey("agents.id"), index=True),
    # renewal lineage (migration 0006): the certificate this one renewed, the first certificate
    # of the chain of renewals (NULL for a certificate that renewed nothing: it is its own
    # root), and the SHA-256 of the renewal statement, unique so a proof is accepted once
    Column(
        "renewed_from_id",
        ForeignKey("certificates.id", name="fk_certificates_renewed_from_id"),
        index=True,
    ),
    Column(
        "lineage_id", ForeignKey("certificates.id", name="fk_certificates_lineage_id"), index=True
    ),
    Column("renewal_proof_sha256", String(64), unique=True),
    # the SHA-256 (hex) of the runtime attestation statement the certificate was issued on
    # (migration 0021, decision 0051): a statement yields one certificate that has not failed
    Column("attestation_sha256", String(64)),
    # the enrollment token this reservation consumed (migration 0008): a reservation that
    # fails releases it (docs/decisions/0014-crash-safe-enrollment.md)
    Column(
        "enrollment_token_id",
        ForeignKey("enrollment_tokens.id", name="fk_certificates_enrollment_token_id"),
    ),
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
    Index(
        "uq_certificates_attestation_live",
        "attestation_sha256",
        unique=True,
        postgresql_where=text("status <> 'failed'"),
        sqlite_where=text("status <> 'failed'"),
    ),
    Index("ix_certificates_status_created_at", "status", "created_at"),
    Index("ix_certificates_issued_at", "issued_at"),  # the dashboard's enrollments per hour
)

# An OCSP answer signed ahead of demand (decision 0038): one per certificate, for its canonical
# SHA-1 CertID, written by the CA side's presigner (``ocsp.presigner``) and read by every
# responder. A row is served only while the status it was signed for (cert_status, revoked_at,
# revocation_reason) is still the certificate's, so a revocation is never answered "good"
# from here, whatever the presigner's delay.
ocsp_responses = Table(
    "ocsp_responses",
    metadata,
    Column("issuer_id", ForeignKey("issuers.id"), primary_key=True),
    Column("serial_hex", String(42), primary_key=True),
    Column("cert_id_der", LargeBinary, nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("cert_status", String(16), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("revocation_reason", Integer),
    Column("signer_id", Integer, nullable=False),
    # epoch seconds: thisUpdate, nextUpdate, and when the answer is to be signed again
    Column("this_update", BigInteger, nullable=False),
    Column("next_update", BigInteger, nullable=False),
    Column("refresh_at", BigInteger, nullable=False),
    Index("ix_ocsp_responses_refresh_at", "refresh_at"),
)
