"""The agent: enroll, renew, staple, and sign every outgoing request (docs/architecture.md).

Headers it adds to a request::

    Client-Cert:        :<leaf DER, base64>:                (RFC 9440)
    Client-Cert-Chain:  :<issuing CA DER>:                  (RFC 9440, trust anchor omitted)
    Agentca-OCSP:       :<OCSP response DER>:               (stapled status, when available)
    Agentca-Provenance: model=:<sha256>:, prompt=:<sha256>:[, config=:<sha256>:]
    Content-Digest:     sha-256=:<sha256 of the body>:      (RFC 9530, when there is a body)
    Signature-Input:    agentca=("@method" "@authority" "@path" "@query" ...);created=..;
                        expires=..;nonce="..";wimse-aud="<audience>";tag="agentca";alg=".."
    Signature:          agentca=:<signature>:               (RFC 9421)

With ``profile="wimse"`` (draft-ietf-wimse-http-signature, docs/wimse.md) the signature is
labelled ``wimse``, covers ``@method`` ``@path`` ``@query`` (+ the headers the draft lists, +
the identity headers above), carries ``tag="wimse-workload-to-workload"`` and no ``alg``, and
``wimse-aud`` defaults to the target URI without query; ``use_wit=True`` also sends a
``Workload-Identity-Token`` from the CA (``POST /v1/wit``), fetched and refreshed as needed.

Why one module of this size: it is the SDK's one public class; enrollment, renewal, stapling and
signing share one credential under one lock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent import httpsig, wimse
from agent.attestation import AttestationSource
from agent.csr import build_csr, renewal_statement, sign_statement
from agent.errors import (
    AgentError,
    CAResponseError,
    CertificateExpired,
    CertificateRevoked,
    NotEnrolled,
    ProvenanceDrift,
    StapleError,
)
from agent.keys import AgentKey
from agent.provenance import Provenance, RuntimeProvenance
from agent.staple import Staple, fetch_staple
from wire.ca_metadata import MetadataError, arcs_from_metadata
from wire.oids import DEFAULT_ACCEPTED_ARCS, DEFAULT_ARC, OidArc, parse_arc, parse_arcs
from wire.refresh import Refresher

if TYPE_CHECKING:
    from agent.httpx_auth import AgentHttpxAuth

LABEL = "agentca"
TAG = "agentca"
AUDIENCE_PARAM = "wimse-aud"  # draft-ietf-wimse-http-signature: names the intended recipient
MAX_EXPIRES = 60
PROFILES = ("agentca", "wimse")


@dataclass(frozen=True)
class Credential:
    """The agent's certificate and its chain (issuing CA first, as the CA returns it)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def not_before(self) -> float:
        return self.certificate.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()

    @property
    def issuer(self) -> x509.Certificate:
        return self.chain[0]

    def to_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain)
        )

    @classmethod
    def from_pem(cls, data: bytes) -> Credential:
        certs = x509.load_pem_x509_certificates(data)
        if len(certs) < 2:
            raise AgentError("a credential needs the certificate and its issuing CA")
        return cls(certs[0], tuple(certs[1:]))


@dataclass(frozen=True)
class SignedHeaders:
    """Everything the signer adds to one request."""

    headers: dict[str, str]
    nonce: str
    created: int


def _b64_der(cert: x509.Certificate) -> str:
    return httpsig.sf_bytes(cert.public_bytes(serialization.Encoding.DER))


class Agent:
    """An agent identity: key, running provenance, certificate, staple; signs requests.

    ``ca_url`` is the CA API base (``http://127.0.0.1:8400``). ``renew_fraction`` of the
    lifetime after notBefore the agent renews; ``staple_max_age`` is how old (from the
    response's thisUpdate) a staple may get before it is fetched again. ``audience`` is the
    ``wimse-aud`` every request carries (default: the origin of each request's URL; set it
    when the gateway knows itself by another name); ``cover_authority=False`` leaves
    ``@authority`` out of the signature, for proxies that rewrite ``Host``. ``profile``:
    ``"agentca"`` or ``"wimse"`` (docs/wimse.md); ``use_wit`` (WIMSE only) sends a Workload
    Identity Token from the CA with every request.
    """

    def __init__(
        self,
        name: str,
        key: AgentKey,
        provenance: RuntimeProvenance,
        ca_url: str,
        organization: str | None = None,
        credential: Credential | None = None,
        renew_fraction: float = 2 / 3,
        staple_max_age: float = 0.9,
        expires_in: int = 30,
        http_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        audience: str | None = None,
        cover_authority: bool = True,
        profile: str = "agentca",
        use_wit: bool = False,
        oid_arc: str | OidArc = DEFAULT_ARC,
        oid_arcs: Iterable[str | OidArc] | None = None,
        attestation: AttestationSource | str | Path | None = None,
    ) -> None:
        """``oid_arc``: the CA's arc, which the CSR's provenance attribute is put under;
        ``oid_arcs``: the arcs accepted when reading the agent's own certificate (default
        ``oid_arc``, the example arc and the legacy arc). :meth:`use_ca_metadata` sets both
        from the CA's ``/ca/metadata.json``. ``attestation``: the file where the agent's
        launcher leaves its runtime attestation (decision 0051), read afresh for every
        enrollment and renewal; default ``$AGENTCA_ATTESTATION_FILE``, else none is sent."""
        if not 0 < expires_in <= MAX_EXPIRES:
            raise AgentError(f"expires_in must be 1..{MAX_EXPIRES} seconds")
        if profile not in PROFILES:
            raise AgentError(f"profile must be one of {', '.join(PROFILES)}")
        if use_wit and profile != "wimse":
            raise AgentError("use_wit needs profile='wimse'")
        self.profile = profile
        self.use_wit = use_wit
        self.wit: str | None = None
        self.wit_expires = 0.0
        self.name = name
        self.key = key
        self.provenance = provenance
        self.ca_url = ca_url.rstrip("/")
        self.organization = organization
        self.renew_fraction = renew_fraction
        self.staple_max_age = staple_max_age
        self.expires_in = expires_in
        self.http_timeout = http_timeout
        self.clock = clock
        self.audience = audience
        self.cover_authority = cover_authority
        self.attestation = (
            AttestationSource.from_env()
            if attestation is None
            else attestation
            if isinstance(attestation, AttestationSource)
            else AttestationSource(Path(attestation))
        )
        self.oid_arc = parse_arc(oid_arc)
        self.oid_arcs = parse_arcs(
            [self.oid_arc, *(DEFAULT_ACCEPTED_ARCS if oid_arcs is None else oid_arcs)]
        )
        self.algorithm = httpsig.algorithm_for(key)
        self._lock = threading.RLock()
        self._credential: Credential | None = None
        self._installed_at = 0.0
        self._cert_headers: dict[str, str] = {}
        self._cert_provenance: Provenance | None = None
        self.staple: Staple | None = None
        self.last_error: AgentError | None = None
        self._upkeep = Refresher(
            "agentca-agent",
            self._upkeep_step,
            self._upkeep_delay,
            expected=(AgentError,),
            on_error=self._note_error,
        )
        self._upkeep_task: asyncio.Task[None] | None = None
        if credential is not None:
            self._install(credential, fresh=False)

    def use_ca_metadata(self, document: bytes | str | Mapping[str, Any]) -> None:
        """Take ``oid_arc`` and the accepted arcs from the CA's ``/ca/metadata.json`` (JSON
        text or the parsed object; fetching it is the caller's job)."""
        try:
            arcs = arcs_from_metadata(document)
        except MetadataError as exc:
            raise AgentError(str(exc)) from None
        with self._lock:
            self.oid_arc, self.oid_arcs = arcs.oid_arc, arcs.accepted_oid_arcs

    # -- credential -----------------------------------------------------------------------
    @property
    def credential(self) -> Credential:
        if self._credential is None:
            raise NotEnrolled("the agent has no certificate yet: enroll first")
        return self._credential

    def _install(self, credential: Credential, fresh: bool = True) -> None:
        intermediates = [c for c in credential.chain if c.subject != c.issuer]
        headers = {"Client-Cert": _b64_der(credential.certificate)}
        if intermediates:
            headers["Client-Cert-Chain"] = ", ".join(_b64_der(c) for c in intermediates)
        with self._lock:
            self._credential = credential
            self._installed_at = self.clock() if fresh else 0.0
            self._cert_headers = headers
            self._cert_provenance = Provenance.of_certificate(credential.certificate, self.oid_arcs)
            self.staple = None
            self.wit, self.wit_expires = None, 0.0  # a WIT is bound to the previous certificate

    def save(self, path: str | Path) -> None:
        """Write the credential (certificate then chain, PEM)."""
        Path(path).write_bytes(self.credential.to_pem())

    def _post_json(self, path: str, body: Mapping[str, Any], token: str | None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            self.ca_url + path, data=json.dumps(body).encode(), method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"detail": raw[:200].decode("utf-8", "replace")}
            detail = problem.get("detail") or problem.get("title") or f"HTTP {err.code}"
            raise CAResponseError(
                f"{path} refused ({err.code}): {detail}", err.code, problem
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CAResponseError(f"{path} failed: {exc}") from None

    def _credential_from(self, answer: Any) -> Credential:
        try:
            cert = x509.load_pem_x509_certificate(answer["certificate_pem"].encode())
            chain = tuple(x509.load_pem_x509_certificate(p.encode()) for p in answer["chain_pem"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CAResponseError(f"the CA answered an unusable certificate: {exc}") from None
        return Credential(cert, chain)

    def _csr_pem(self) -> tuple[str, bytes]:
        csr = build_csr(
            self.key, self.name, self.provenance.refresh(), self.organization, self.oid_arc
        )
        return (
            csr.public_bytes(serialization.Encoding.PEM).decode(),
            csr.public_bytes(serialization.Encoding.DER),
        )

    def enroll(
        self,
        token: str,
        scopes: list[str] | None = None,
        validity_seconds: int | None = None,
    ) -> Credential:
        """Enroll with a one-time token: CSR with the running provenance to POST /v1/enroll."""
        pem, _ = self._csr_pem()
        body: dict[str, Any] = {"csr": pem}
        if self.attestation is not None:
            body["attestation"] = self.attestation.read()
        if scopes is not None:
            body["scopes"] = scopes
        if validity_seconds is not None:
            body["validity_seconds"] = validity_seconds
        credential = self._credential_from(self._post_json("/v1/enroll", body, token))
        self._install(credential)
        return credential

    def renew(
        self, validity_seconds: int | None = None, scopes: list[str] | None = None
    ) -> Credential:
        """Renew with the current key's proof of possession (POST /v1/renew), same key.

        The proof (``agentca-renew-v2``) covers the new CSR, the current certificate, the
        scopes and the validity asked for; the CA accepts it once, and revokes the current
        certificate (superseded) when it issues the new one, so the new one is installed at once.
        """
        current = self.credential
        pem, der = self._csr_pem()
        created = int(self.clock())
        current_der = current.certificate.public_bytes(serialization.Encoding.DER)
        statement = renewal_statement(created, der, current_der, scopes, validity_seconds)
        proof = sign_statement(self.key, statement)
        body: dict[str, Any] = {
            "certificate": current.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "csr": pem,
            "created": created,
            "proof": base64.b64encode(proof).decode(),
        }
        if self.attestation is not None:
            body["attestation"] = self.attestation.read()
        if scopes is not None:
            body["scopes"] = scopes
        if validity_seconds is not None:
            body["validity_seconds"] = validity_seconds
        credential = self._credential_from(self._post_json("/v1/renew", body, None))
        self._install(credential)
        return credential

    def renewal_due(self) -> bool:
        """True once ``renew_fraction`` of the certificate's lifetime has passed.

        The lifetime counts from when the agent received the certificate (the CA backdates
        notBefore for clock skew), or from notBefore for a credential loaded from disk.
        """
        cred = self.credential
        start = min(max(cred.not_before, self._installed_at), cred.not_after)
        return self.clock() >= start + self.renew_fraction * (cred.not_after - start)

    def renew_if_due(self) -> bool:
        """Renew when due; True if it renewed."""
        if self.renewal_due():
            self.renew()
            return True
        return False

    # -- Workload Identity Token ------------------------------------------------------------
    def fetch_wit(self, lifetime_seconds: int | None = None) -> str:
        """Get a Workload Identity Token for the current certificate (POST /v1/wit), proving
        possession of its key with the renewal-statement format (agent/wimse.py)."""
        current = self.credential
        created = int(self.clock())
        der = current.certificate.public_bytes(serialization.Encoding.DER)
        proof = sign_statement(
            self.key, wimse.wit_request_statement(created, der, lifetime_seconds)
        )
        body: dict[str, Any] = {
            "certificate": current.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "created": created,
            "proof": base64.b64encode(proof).decode(),
        }
        if lifetime_seconds is not None:
            body["lifetime_seconds"] = lifetime_seconds
        answer = self._post_json("/v1/wit", body, None)
        try:
            token, expires = str(answer["token"]), float(answer["expires_at_unix"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CAResponseError(f"the CA answered an unusable WIT: {exc}") from None
        with self._lock:
            if self._credential is current:
                self.wit, self.wit_expires = token, expires
        return token

    def _ensure_wit(self) -> str | None:
        if not self.use_wit:
            return None
        if self.wit is None or self.clock() > self.wit_expires - 60:
            self.fetch_wit()
        return self.wit

    # -- OCSP staple ----------------------------------------------------------------------
    def staple_age(self) -> float | None:
        """Seconds since the staple's thisUpdate (None without a staple)."""
        staple = self.staple
        return None if staple is None else self.clock() - staple.this_update.timestamp()

    def refresh_staple(self) -> Staple:
        """Fetch a fresh OCSP response from the certificate's AIA OCSP URL."""
        cred = self.credential
        staple = fetch_staple(cred.certificate, cred.issuer, self.clock(), timeout=5.0)
        with self._lock:
            if self._credential is cred:
                self.staple = staple
        return staple

    def _ensure_staple(self) -> None:
        age = self.staple_age()
        if age is None or age > self.staple_max_age:
            try:
                self.refresh_staple()
            except StapleError as exc:  # the gateway can still fetch the status itself
                self.last_error = exc

    def start(self) -> None:
        """Background upkeep: renew when due; fetch a staple just after each whole second."""
        if self._task_running():
            raise AgentError("the asyncio upkeep task runs: stop_async() it first")
        self._upkeep.start()

    async def start_async(self) -> asyncio.Task[None]:
        """The upkeep as an asyncio task in the running loop (instead of the thread): the same
        schedule and error handling, the CA and OCSP calls in worker threads. Returns the
        task (the running one if already started); :meth:`stop_async` or cancelling it ends it.
        """
        if self._upkeep.running:
            raise AgentError("the upkeep thread runs: stop() it first")
        task = self._upkeep_task
        if task is not None and self._task_running():
            return task
        task = asyncio.create_task(self.run_upkeep(), name="agentca-agent-upkeep")
        self._upkeep_task = task
        return task

    async def stop_async(self, timeout: float = 20.0) -> None:
        """Cancel the upkeep task and wait (up to ``timeout`` s) for a step in flight."""
        task, self._upkeep_task = self._upkeep_task, None
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)

    async def run_upkeep(self) -> None:
        """The upkeep loop as a coroutine, until cancelled (run it in a task group of your
        own, or let :meth:`start_async` start it); signing skips its own renewal and staple
        fetches only while :meth:`start_async`'s task runs."""
        await self._upkeep.run_async()

    def _task_running(self) -> bool:
        task = self._upkeep_task
        return task is not None and not task.done() and not task.get_loop().is_closed()

    def stop(self) -> None:
        """Stop the background upkeep (requests then renew and staple as they sign)."""
        self._upkeep.stop()

    def _upkeep_step(self) -> None:
        self.renew_if_due()
        self.refresh_staple()

    def _upkeep_delay(self) -> float:
        # OCSP times have one-second resolution: fetching right after a second starts
        # gives a staple whose thisUpdate is as recent as it can be.
        now = self.clock()
        return max(0.05, (int(now) + 1.02) - now)

    def _note_error(self, exc: Exception) -> None:
        if isinstance(exc, AgentError):
            self.last_error = exc

    # -- signing --------------------------------------------------------------------------
    def check_ready(self) -> Provenance:
        """Raise unless the agent may sign now (enrolled, valid, not revoked, no drift)."""
        cred = self.credential
        now = self.clock()
        if now >= cred.not_after:
            raise CertificateExpired(f"certificate {cred.serial_hex} expired")
        staple = self.staple
        if staple is not None and staple.status == "revoked":
            raise CertificateRevoked(f"certificate {cred.serial_hex} is revoked")
        running = self.provenance.current()
        certified = self._cert_provenance
        assert certified is not None
        diff = running.differences(certified)
        if running.model_type != certified.model_type:
            diff.insert(0, "model type")
        if diff:
            raise ProvenanceDrift(
                f"running {', '.join(diff)} digest differs from certificate "
                f"{cred.serial_hex}: refusing to sign (re-enroll with the new provenance)",
                differs=diff,
            )
        return running

    def sign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        auto_staple: bool = True,
        auto_renew: bool = True,
        audience: str | None = None,
    ) -> SignedHeaders:
        """The headers that sign this request; refuses on drift, expiry or revocation.

        ``audience`` overrides the agent's ``wimse-aud`` for this request."""
        self._prepare(auto_staple, auto_renew)  # check_ready, then a WIT fetch if needed
        return self._sign_prepared(method, url, headers, body, audience)

    async def asign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        auto_staple: bool = True,
        auto_renew: bool = True,
        audience: str | None = None,
    ) -> SignedHeaders:
        """:meth:`sign` for an event loop: the CA and OCSP calls (and a provenance recheck)
        it may need first run in a worker thread, only when due; the signing itself runs
        inline (one ECDSA or Ed25519 signature)."""
        if self.prepare_due(auto_staple, auto_renew):
            await asyncio.to_thread(self.prepare, auto_staple, auto_renew)
        return self._sign_prepared(method, url, headers, body, audience)

    @property
    def upkeep_running(self) -> bool:
        """True while the upkeep thread or the asyncio upkeep task runs."""
        return self._upkeep.running or self._task_running()

    def prepare_due(self, auto_staple: bool = True, auto_renew: bool = True) -> bool:
        """True if :meth:`prepare` would do I/O now: a renewal or a staple fetch (no
        background upkeep), a WIT fetch, or a provenance recheck (file stat, maybe hashing)."""
        if self._credential is not None and not self.upkeep_running:
            if auto_renew and self.renewal_due():
                return True
            age = self.staple_age()
            if auto_staple and (age is None or age > self.staple_max_age):
                return True
        if self.use_wit and (self.wit is None or self.clock() > self.wit_expires - 60):
            return True
        return self.provenance.recheck_due()

    def prepare(self, auto_staple: bool = True, auto_renew: bool = True) -> None:
        """The blocking part of signing: renew when due and refresh a stale staple (unless
        the upkeep runs), recheck the running provenance, fetch a WIT when needed (only for
        an agent that may sign: :meth:`check_ready` first)."""
        self._prepare(auto_staple, auto_renew)
        self.provenance.current()
        if self.use_wit and self._credential is not None:
            self.check_ready()
            self._ensure_wit()

    def _prepare(self, auto_staple: bool, auto_renew: bool) -> None:
        background = self.upkeep_running
        if auto_renew and not background and self._credential is not None:
            self.renew_if_due()
        if auto_staple and not background and self._credential is not None:
            self._ensure_staple()

    def _sign_prepared(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        audience: str | None,
    ) -> SignedHeaders:
        wimse_profile = self.profile == "wimse"
        default_aud = wimse.audience_of if wimse_profile else httpsig.audience_of
        aud = audience or self.audience or default_aud(url)
        running = self.check_ready()
        wit = self._ensure_wit() if wimse_profile else None
        with self._lock:
            out = dict(self._cert_headers)
            staple = self.staple
        if staple is not None:
            out["Agentca-OCSP"] = httpsig.sf_bytes(staple.der)
        if wit is not None:
            out[wimse.WIT_HEADER] = wit
        declared = (
            f"model={httpsig.sf_bytes(running.model_digest)}, "
            f"prompt={httpsig.sf_bytes(running.prompt_digest)}"
        )
        if running.config_digest is not None:
            declared += f", config={httpsig.sf_bytes(running.config_digest)}"
        out["Agentca-Provenance"] = declared
        if body:
            out["Content-Digest"] = httpsig.content_digest(body)
        all_headers = {k.lower(): v for k, v in (headers or {}).items()}
        all_headers.update({k.lower(): v for k, v in out.items()})
        identity = ["client-cert", "client-cert-chain", "agentca-ocsp", "agentca-provenance"]
        identity.append("agentca-subject")  # the delegated subject, when sent: always signed
        created = int(self.clock())
        nonce = secrets.token_urlsafe(18)
        if wimse_profile:
            covered = wimse.covered_components(all_headers, identity)
            if self.cover_authority:
                covered.insert(1, "@authority")
            label = wimse.LABEL
            params: list[tuple[str, httpsig.ParamValue]] = [
                ("created", created),
                ("expires", created + self.expires_in),
                ("nonce", nonce),
                ("tag", wimse.TAG),
                (AUDIENCE_PARAM, aud),
            ]
        else:
            covered = ["@method", "@authority", "@path", "@query"]
            if not self.cover_authority:
                covered.remove("@authority")
            if body:
                covered.append("content-digest")
            if "content-type" in all_headers:
                covered.append("content-type")
            covered += [h for h in identity if h in all_headers]
            label = LABEL
            params = [
                ("created", created),
                ("expires", created + self.expires_in),
                ("nonce", nonce),
                (AUDIENCE_PARAM, aud),
                ("tag", TAG),
                ("alg", self.algorithm),
            ]
        params_value = httpsig.signature_params(covered, params)
        base = httpsig.signature_base(method, url, all_headers, covered, params_value)
        signature = httpsig.sign_base(self.key, base)
        out["Signature-Input"] = f"{label}={params_value}"
        out["Signature"] = f"{label}={httpsig.sf_bytes(signature)}"
        return SignedHeaders(out, nonce, created)

    def auth(self) -> AgentAuth:
        """An auth hook for ``requests`` (``auth=agent.auth()``); httpx: :meth:`httpx_auth`."""
        return AgentAuth(self)

    def httpx_auth(self, max_body: int | None = None) -> AgentHttpxAuth:
        """An ``httpx.Auth`` for ``httpx.Client`` and ``httpx.AsyncClient`` (needs httpx;
        agent/httpx_auth.py). ``max_body``: the largest streamed body it reads to sign."""
        from agent.httpx_auth import AgentHttpxAuth

        return AgentHttpxAuth(self) if max_body is None else AgentHttpxAuth(self, max_body)

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> HttpReply:
        """Send one signed request with urllib; never raises on HTTP error statuses.

        ``tls_context`` (for ``https``): e.g. :func:`agent.tls.agent_tls_context` to present
        the agent certificate in TLS as well (mutual TLS, docs/mtls.md)."""
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if body and not any(k.lower() == "content-type" for k in hdrs):
            # urllib would add an unsigned x-www-form-urlencoded one after signing
            hdrs["Content-Type"] = "application/octet-stream"
        hdrs.update(self.sign(method, url, hdrs, body).headers)
        return send(method, url, hdrs, body, timeout, tls_context)


@dataclass
class HttpReply:
    """An HTTP answer: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float = 10.0,
    tls_context: ssl.SSLContext | None = None,
) -> HttpReply:
    """One plain urllib request (already signed headers included; ``tls_context`` for
    ``https``, e.g. mutual TLS with :func:`agent.tls.agent_tls_context`)."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls_context) as resp:
            return HttpReply(
                resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
            )
    except urllib.error.HTTPError as err:
        return HttpReply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


class AgentAuth:
    """Callable auth hook: signs a ``requests.PreparedRequest`` or an ``httpx.Request``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def __call__(self, request: Any) -> Any:
        body = getattr(request, "body", None)
        if body is None and hasattr(request, "read"):  # httpx
            body = request.read()
        if isinstance(body, str):
            body = body.encode()
        signed = self.agent.sign(
            str(request.method), str(request.url), dict(request.headers), body or None
        )
        for name, value in signed.headers.items():
            request.headers[name] = value
        return request
