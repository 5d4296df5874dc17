"""Object identifiers of agentca, in one place.

The default arc sits under the IANA Private Enterprise Number 32473, which RFC 5612 reserves
for documentation and examples; every component fits in 31 bits, so Go's crypto/x509 and
GnuTLS parse it. :data:`LEGACY_ARC` is the UUID arc of wave-1 certificates, whose 128-bit
component those libraries refuse. See ``docs/oids.md`` for the table and the ASN.1 module.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509

#: The default agentca arc (RFC 5612 example PEN). Every agentca OID below is derived from it.
ARC: Final = "1.3.6.1.4.1.32473.2026"
#: The UUID-derived arc (ITU-T X.667) that wave-1 certificates carry.
LEGACY_ARC: Final = "2.25.40108673889173621464063845417476256764"

#: Module identifier of the ASN.1 module ``AgentCA-Extensions-2026``.
MODULE_DOTTED: Final = f"{ARC}.0.1"

PROVENANCE_DOTTED: Final = f"{ARC}.1.1"
AUTHORIZATION_DOTTED: Final = f"{ARC}.1.2"
ACCOUNTABILITY_DOTTED: Final = f"{ARC}.1.3"
POLICY_AGENT_V1_DOTTED: Final = f"{ARC}.2.1"
KP_AGENT_REQUEST_SIGNING_DOTTED: Final = f"{ARC}.3.1"
KP_LEDGER_SIGNING_DOTTED: Final = f"{ARC}.3.2"
CSR_PROVENANCE_DOTTED: Final = f"{ARC}.4.1"

#: Extension: model type, model digest, system-prompt digest, optional config digest.
PROVENANCE: Final = x509.ObjectIdentifier(PROVENANCE_DOTTED)
#: Extension: authorized scopes.
AUTHORIZATION: Final = x509.ObjectIdentifier(AUTHORIZATION_DOTTED)
#: Extension: officer of record, environment, owner organisation.
ACCOUNTABILITY: Final = x509.ObjectIdentifier(ACCOUNTABILITY_DOTTED)
#: Certificate policy for agent certificates, version 1.
POLICY_AGENT_V1: Final = x509.ObjectIdentifier(POLICY_AGENT_V1_DOTTED)
#: Extended key usage: signing outgoing agent HTTP requests.
KP_AGENT_REQUEST_SIGNING: Final = x509.ObjectIdentifier(KP_AGENT_REQUEST_SIGNING_DOTTED)
#: Extended key usage of the audit key that signs ledger checkpoints.
KP_LEDGER_SIGNING: Final = x509.ObjectIdentifier(KP_LEDGER_SIGNING_DOTTED)
#: CSR attribute: the agent's claimed provenance (an ``AgentProvenance`` value).
CSR_PROVENANCE: Final = x509.ObjectIdentifier(CSR_PROVENANCE_DOTTED)

#: The three agent certificate extensions, in the order they are added to certificates.
AGENT_EXTENSION_OIDS: Final = (PROVENANCE, AUTHORIZATION, ACCOUNTABILITY)

#: Human-readable names, e.g. for logs and ``docs/oids.md``.
NAMES: Final[dict[str, str]] = {
    PROVENANCE_DOTTED: "id-agentca-provenance",
    AUTHORIZATION_DOTTED: "id-agentca-authorization",
    ACCOUNTABILITY_DOTTED: "id-agentca-accountability",
    POLICY_AGENT_V1_DOTTED: "id-agentca-policy-agent-v1",
    KP_AGENT_REQUEST_SIGNING_DOTTED: "id-kp-agentRequestSigning",
    CSR_PROVENANCE_DOTTED: "id-agentca-csr-provenance",
}

#: Supported digest algorithms: name -> (dotted OID, digest length in bytes).
DIGEST_ALGORITHMS: Final[dict[str, tuple[str, int]]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
#: dotted OID -> (name, digest length in bytes).
DIGEST_BY_OID: Final[dict[str, tuple[str, int]]] = {
    oid: (name, size) for name, (oid, size) in DIGEST_ALGORITHMS.items()
}

#: Signature algorithms the agent SDK writes into a CSR.
ECDSA_WITH_SHA256: Final = "1.2.840.10045.4.3.2"
ECDSA_WITH_SHA384: Final = "1.2.840.10045.4.3.3"
SHA256_WITH_RSA: Final = "1.2.840.113549.1.1.11"
ED25519: Final = "1.3.101.112"
