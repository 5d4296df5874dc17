"""Builders shared by the agent/gateway unit tests: a software PKI (root, issuing CA,
delegated OCSP responder) made with the CA's own profile code, agent certificates, OCSP
staples made with the responder's own response builder, and signed requests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.client import Agent, Credential
from agent.provenance import RuntimeProvenance
from ca.extensions import Accountability, AgentExtensions, Authorization, Digest, Provenance
from ca.profile import AgentCertificateSpec, CertificateUrls, build_agent_certificate
from ca.responder_certs import build_responder_certificate
from gateway.httpsig import RequestView
from ocsp.decision import CertState, SerialStatus
from ocsp.request import parse_request
from ocsp.response import Signer, SingleAnswer, build_basic_response
from tests.unit.helpers import software_hierarchy
from wire.extensions import ModelDigestScheme
from wire.oids import OidArc

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW = T0.timestamp() + 600
PROMPT = b"You are an execution agent. Only place limit orders.\n"
MODEL_FILE = b"fake weights"
SCOPES = ("query_anonymized_order_book", "submit_limit_order")
OCSP_URL = "http://127.0.0.1:9/ocsp"


class Clock:
    """A settable clock."""

    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate
    responder_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    responder: x509.Certificate | None = None
    serial: int = 1 << 80

    @classmethod
    def create(cls) -> Pki:
        rk, root, ik, issuing = software_hierarchy()
        pki = cls(rk, root, ik, issuing)
        pki.responder = build_responder_certificate(
            pki.responder_key.public_key(),
            (1 << 90) + 7,
            T0 - timedelta(hours=1),
            T0 + timedelta(days=2),
            issuing,
            ik,
        )
        return pki

    def issue(
        self,
        key: ec.EllipticCurvePrivateKey | None = None,
        name: str = "ExecutionAgent-ETH-01",
        scopes: tuple[str, ...] = SCOPES,
        model: bytes | None = None,
        prompt: bytes | None = None,
        not_before: datetime = T0,
        lifetime: timedelta = timedelta(hours=12),
        environment: str = "production",
        scheme: ModelDigestScheme = ModelDigestScheme.AGENTCA_MANIFEST,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        self.serial += 1
        ext = AgentExtensions(
            Provenance(
                "claude-3.5-sonnet-v2",
                Digest(model or model_digest()),
                Digest(prompt or hashlib.sha256(PROMPT).digest()),
                model_digest_scheme=scheme,
            ),
            Authorization(scopes),
            Accountability("compliance-officer@enterprise.io", environment, "Enterprise Inc"),
        )
        spec = AgentCertificateSpec(
            self.serial,
            name,
            "Enterprise Inc",
            "agentca.local",
            key.public_key(),
            ext,
            not_before,
            not_before + lifetime,
        )
        cert = build_agent_certificate(
            spec,
            self.issuing,
            self.issuing_key,
            CertificateUrls(OCSP_URL, "http://127.0.0.1:9/ca/issuing.der", "http://x/crl"),
        )
        return key, cert

    def ocsp_response(
        self,
        cert: x509.Certificate,
        state: CertState = CertState.GOOD,
        this_update: float = NOW,
        validity: float = 3600,
        nonce: bytes | None = None,
        signer_key: ec.EllipticCurvePrivateKey | None = None,
        signer_cert: x509.Certificate | None = None,
    ) -> bytes:
        """A DER OCSP response about ``cert`` built by the responder's own code."""
        builder = x509.ocsp.OCSPRequestBuilder().add_certificate(
            cert, self.issuing, hashes.SHA256()
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        req = parse_request(builder.build().public_bytes(serialization.Encoding.DER))
        responder = signer_cert or self.responder
        assert responder is not None
        signer = Signer(
            responder.public_bytes(serialization.Encoding.DER),
            signer_key or self.responder_key,
            responder.not_valid_after_utc,
        )
        status = (
            SerialStatus(CertState.REVOKED, datetime.fromtimestamp(this_update - 5, UTC), 1)
            if state is CertState.REVOKED
            else SerialStatus(state)
        )
        tu = datetime.fromtimestamp(int(this_update), UTC)
        return build_basic_response(
            [SingleAnswer(req.cert_ids[0].der, status)],
            signer,
            produced_at=tu,
            this_update=tu,
            next_update=tu + timedelta(seconds=validity),
            nonce=req.nonce,
        )


def model_digest() -> bytes:
    """The manifest digest of a one-file model ``model.bin`` holding MODEL_FILE."""
    h = hashlib.sha256(MODEL_FILE).hexdigest()
    return hashlib.sha256(f"{h}  {len(MODEL_FILE)}  model.bin\n".encode()).digest()


def make_agent(
    tmp_path: object,
    pki: Pki,
    clock: Clock,
    cert: x509.Certificate | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    prompt: bytes = PROMPT,
    oid_arcs: tuple[OidArc, ...] | None = None,
    model_scheme: ModelDigestScheme = ModelDigestScheme.AGENTCA_MANIFEST,
) -> Agent:
    """An enrolled (offline) agent whose model file and prompt match its certificate."""
    from pathlib import Path

    base = Path(str(tmp_path))
    base.mkdir(parents=True, exist_ok=True)
    (base / "model.bin").write_bytes(MODEL_FILE)
    if key is None or cert is None:
        key, cert = pki.issue(key)
    runtime = RuntimeProvenance(
        "claude-3.5-sonnet-v2",
        base / "model.bin",
        prompt_bytes=prompt,
        clock=clock,
        model_scheme=model_scheme,
    )
    return Agent(
        "ExecutionAgent-ETH-01",
        key,
        runtime,
        "http://127.0.0.1:9",
        credential=Credential(cert, (pki.issuing, pki.root)),
        clock=clock,
        oid_arcs=oid_arcs,
    )


def view(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> RequestView:
    """The gateway's view of a request as the agent sent it."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return RequestView(
        method=method,
        path=parts.path or "/",
        query=parts.query,
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        authority=parts.netloc,
        scheme=parts.scheme,
    )


def signed_view(
    agent: Agent,
    method: str = "POST",
    url: str = "http://gw.local/orders?venue=x",
    body: bytes = b'{"side":"buy","price":"101.5","qty":"2"}',
    staple: bytes | None = None,
    content_type: str | None = "application/json",
) -> tuple[RequestView, dict[str, str]]:
    """Sign a request with ``agent`` (stapling ``staple``; ``b""``: none) and view it."""
    if staple == b"":
        agent.staple = None
    elif staple is not None:
        from agent.staple import Staple

        agent.staple = Staple(staple, "good", T0, None, agent.clock())
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    signed = agent.sign(method, url, headers, body or None, auto_staple=False, auto_renew=False)
    headers.update(signed.headers)
    return view(method, url, headers, body), headers
