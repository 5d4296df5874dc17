"""agentca agent SDK: key, provenance digests, CSR, enrollment, renewal, OCSP staple, and
RFC 9421 signing of outgoing requests. Depends on ``cryptography`` only (HTTP via urllib).
Mutual TLS with the agent certificate: ``agent.tls`` (docs/mtls.md).

    agent = Agent("ExecutionAgent-ETH-01", load_or_create_key("agent.key"),
                  RuntimeProvenance("claude-3.5-sonnet-v2", "weights/", prompt_path="prompt.txt"),
                  ca_url="http://127.0.0.1:8400")
    agent.enroll(token)
    agent.start()                                  # renew at 2/3 of the lifetime, keep a staple
    agent.request("POST", url, json_body=order)    # or requests.post(url, auth=agent.auth())
"""

from agent.attestation import AttestationSource
from agent.client import Agent, AgentAuth, Credential, HttpReply, SignedHeaders, send
from agent.csr import build_csr
from agent.digests import (
    config_digest,
    model_digest,
    oms_model_digest,
    prompt_digest,
    prompt_digest_file,
)
from agent.errors import (
    AgentError,
    BodyTooLarge,
    CAResponseError,
    CertificateExpired,
    CertificateRevoked,
    DigestError,
    NotEnrolled,
    ProvenanceDrift,
    StapleError,
)
from agent.keys import generate_key, load_key, load_or_create_key, pkcs11_key, save_key
from agent.provenance import Provenance, RuntimeProvenance
from agent.staple import Staple, fetch_staple
from agent.tls import agent_tls_context, client_tls_context
from wire.extensions import ModelDigestScheme

__all__ = [
    "Agent",
    "AgentAuth",
    "AgentError",
    "AttestationSource",
    "BodyTooLarge",
    "CAResponseError",
    "CertificateExpired",
    "CertificateRevoked",
    "Credential",
    "DigestError",
    "HttpReply",
    "ModelDigestScheme",
    "NotEnrolled",
    "Provenance",
    "ProvenanceDrift",
    "RuntimeProvenance",
    "SignedHeaders",
    "Staple",
    "StapleError",
    "agent_tls_context",
    "build_csr",
    "client_tls_context",
    "config_digest",
    "fetch_staple",
    "generate_key",
    "load_key",
    "load_or_create_key",
    "model_digest",
    "oms_model_digest",
    "pkcs11_key",
    "prompt_digest",
    "prompt_digest_file",
    "save_key",
    "send",
]
