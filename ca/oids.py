"""Object identifiers of agentca.

The arc is UUID-derived (ITU-T X.667, ``2.25.<uuid-as-integer>``) and needs no registration.
See ``docs/oids.md`` for the table and the ASN.1 module.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509

ARC: Final = "2.25.40108673889173621464063845417476256764"

#: Module identifier of the ASN.1 module ``AgentCA-Extensions-2026``.
MODULE_DOTTED: Final = f"{ARC}.0.1"

PROVENANCE_DOTTED: Final = f"{ARC}.1.1"
AUTHORIZATION_DOTTED: Final = f"{ARC}.1.2"
ACCOUNTABILITY_DOTTED: Final = f"{ARC}.1.3"
POLICY_AGENT_V1_DOTTED: Final = f"{ARC}.2.1"
KP_AGENT_REQUEST_SIGNING_DOTTED: Final = f"{ARC}.3.1"
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

#: Extended key usage of the audit key that signs ledger checkpoints.
KP_LEDGER_SIGNING_DOTTED = ARC + ".3.2"
KP_LEDGER_SIGNING = x509.ObjectIdentifier(KP_LEDGER_SIGNING_DOTTED)
