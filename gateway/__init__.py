"""agentca gateway SDK: verify signed agent requests (chain, status, signature, replay,
provenance, scope) as WSGI middleware or a Flask extension. Depends on ``cryptography``
only (HTTP via urllib); imports nothing of the agentca server.
"""

from gateway.chain import AgentIdentity, ChainVerifier
from gateway.client_cert import ClientCertSource, TlsClientCert
from gateway.httpsig import RequestView
from gateway.inventory import CAInventory, StaticInventory
from gateway.problems import PROBLEM_BASE, Check, Denied
from gateway.replay import ReplayCache
from gateway.status import CrlSet, StatusChecker
from gateway.verifier import Decision, Verifier
from gateway.wsgi import ENVIRON_KEY, AgentGatewayMiddleware

__all__ = [
    "ENVIRON_KEY",
    "PROBLEM_BASE",
    "AgentGatewayMiddleware",
    "AgentIdentity",
    "CAInventory",
    "ChainVerifier",
    "Check",
    "ClientCertSource",
    "CrlSet",
    "Decision",
    "Denied",
    "ReplayCache",
    "RequestView",
    "StaticInventory",
    "StatusChecker",
    "TlsClientCert",
    "Verifier",
]
