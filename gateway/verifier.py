"""The gateway's decision for one request, in the order of docs/verifiers.md:

chain (cached) -> status (stapled or cached; no network) -> signature and covered components
(window, audience, Content-Digest, RFC 9421) -> what the request brought is now authentic:
cache its chain and staple; status still unknown? fetch it or use the CRL -> nonce not
replayed -> provenance (inventory, and equal to what the agent declares) -> scope of the
route. Every decision is logged as one JSON line on the ``agentca.gateway.decisions`` logger,
with the HTTP status actually sent (the WSGI and Flask shells log once the response is known);
the line is formatted and written off the request path (``gateway.decision_log``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509

from gateway import httpsig
from gateway.chain import AgentIdentity, ChainEntry, ChainVerifier
from gateway.client_cert import TlsClientCert, check_binding
from gateway.decision_log import decision_log, decisions
from gateway.httpsig import RequestView
from gateway.inventory import Inventory
from gateway.problems import Check, Denied
from gateway.profiles import AGENTCA, WIT_HEADER, Profile, profiles_named, refusal_status
from gateway.replay import ReplayCache, ReplayStore, ReplayUnavailable
from gateway.status import StatusChecker
from wire import sf
from wire.ca_metadata import arcs_from_metadata
from wire.oids import DEFAULT_ACCEPTED_ARCS, OidArc

if TYPE_CHECKING:  # joserfc is needed only by deployments that verify WITs
    from gateway.action_log import ActionLog
    from gateway.wit import WitVerifier


TAG: Final = "agentca"
MAX_WINDOW: Final = 60
AUDIENCE_PARAM: Final = "wimse-aud"  # draft-ietf-wimse-http-signature, section 3.1
SUBJECT_HEADER: Final = "agentca-subject"
"""The delegated subject a request acts for; recorded only when its signature covers it."""
BASE_COMPONENTS: Final = AGENTCA.base  # the agentca profile (gateway/profiles.py)
IF_PRESENT: Final = AGENTCA.if_present


#: A route's attestation rule: False (none), True (any attestor), or the attestors accepted.
Attested = bool | frozenset[str] | tuple[str, ...]


def check_attested(entry: ChainEntry, required: Attested) -> None:
    """Deny (``provenance-not-attested``) a certificate whose provenance is only declared by
    the agent, or attested by an attestor not in ``required`` (when it names attestors)."""
    attestation = entry.extensions.attestation
    if attestation is None:
        raise Denied(
            Check.NOT_ATTESTED,
            f"certificate {entry.identity.serial} carries self-declared provenance; this "
            "route requires provenance attested at enrollment",
        )
    if not isinstance(required, bool) and attestation.attestor not in required:
        raise Denied(
            Check.NOT_ATTESTED,
            f"the provenance of certificate {entry.identity.serial} was attested by "
            f"{attestation.attestor!r}, not by an attestor this route accepts",
        )


@dataclass
class Decision:
    """The outcome for one request."""

    allowed: bool
    identity: AgentIdentity | None = None
    denial: Denied | None = None
    status_source: str | None = None
    scope: str | None = None
    nonce: str | None = None
    elapsed_us: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    profile: str | None = None  # the profile the request presents itself in (by its tag)
    chain: ChainEntry | None = None  # the certificate chain it presented (issuer, for records)
    subject: str | None = None  # the signed Agentca-Subject (delegated subject), if any

    @property
    def http_status(self) -> int | None:
        """The status a shell answers a refusal with (None while allowed)."""
        if self.denial is None:
            return None
        return refusal_status(self.denial.check.status, self.profile)


_quote: Final[Callable[[str], str]] = encode_basestring_ascii  # json.dumps's own (C) quoting


def _json(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return _quote(value)
    return json.dumps(value, separators=(",", ":"))


@lru_cache(maxsize=4096)
def _identity_json(ident: AgentIdentity | None) -> str:
    """The members naming the agent: the same for every request of one certificate."""
    if ident is None:
        return ',"agent":null,"spiffe_id":null,"serial":null,"officer":null'
    return (
        f',"agent":{_quote(ident.name)},"spiffe_id":{_quote(ident.spiffe_id)}'
        f',"serial":{_quote(ident.serial)},"officer":{_quote(ident.officer)}'
    )


class _LogLine:
    """A decision as the log records it; formatted as JSON by the decision-log writer only
    (the same text ``json.dumps(..., separators=(",", ":"))`` gives, built from its parts)."""

    __slots__ = ("decision", "http_status", "method", "path", "req", "route", "ts")

    def __init__(
        self,
        decision: Decision,
        req: RequestView,
        ts: float,
        http_status: int | None,
        route: str | None = None,
    ) -> None:
        self.decision = decision
        self.req = req  # the action log's record reads a few headers (gateway.action_record)
        self.method = req.method
        self.path = req.path
        self.ts = ts
        self.http_status = http_status
        self.route = route

    def __str__(self) -> str:
        d = self.decision
        denial = d.denial
        status = self.http_status
        return "".join(
            (
                '{"ts":',
                repr(round(self.ts, 6)),
                ',"decision":"allow"' if d.allowed else ',"decision":"deny"',
                ',"check":',
                "null" if denial is None else _quote(denial.check.value),
                ',"http_status":',
                "null" if status is None else str(int(status)),
                ',"method":',
                _quote(self.method),
                ',"path":',
                _quote(self.path),
                ',"scope":',
                _json(d.scope),
                _identity_json(d.identity),
                ',"profile":',
                _json(d.profile),
                ',"status_source":',
                _json(d.status_source),
                ',"tls_client_cert":',
                _json(d.extra.get("tls_client_cert")),
                ',"nonce":',
                _json(d.nonce),
                ',"detail":',
                "null" if denial is None else _json(denial.detail),
                ',"elapsed_us":',
                repr(round(d.elapsed_us, 1)),
                "}",
            )
        )


def _parse_declared(header: str | None) -> dict[str, bytes]:
    if not header:
        raise Denied(Check.PROVENANCE, "the request does not declare its running provenance")
    try:
        members = sf.parse_dictionary(header)
    except sf.SFError as exc:
        raise Denied(Check.MALFORMED, f"Agentca-Provenance: {exc}") from None
    out = {}
    for key, member in members.items():
        if not isinstance(member, sf.Item) or not isinstance(member.value, bytes):
            raise Denied(Check.MALFORMED, "Agentca-Provenance members must be byte sequences")
        out[key] = member.value
    return out


def oid_arcs_from_metadata(document: bytes | str | Mapping[str, Any]) -> tuple[OidArc, ...]:
    """The ``oid_arcs`` a :class:`Verifier` takes, from the CA's ``/ca/metadata.json`` (its
    JSON text or the parsed object; fetching it is the caller's job);
    ``wire.ca_metadata.MetadataError`` if the document is not one."""
    return arcs_from_metadata(document).accepted_oid_arcs


class Verifier:
    """Verifies signed agent requests. Thread-safe; one per process (caches are shared)."""

    def __init__(
        self,
        trust_anchors: Iterable[x509.Certificate],
        inventory: Inventory,
        status: StatusChecker | None = None,
        intermediates: Iterable[x509.Certificate] = (),
        replay: ReplayStore | None = None,
        window: int = MAX_WINDOW,
        skew: int = 5,
        clock: Callable[[], float] = time.time,
        *,
        audience: str | Iterable[str],
        trust_domain: str | Iterable[str],
        profiles: str | Iterable[str] = ("agentca",),
        wit: WitVerifier | None = None,
        require_wit: bool = False,
        oid_arcs: Iterable[str | OidArc] = DEFAULT_ACCEPTED_ARCS,
        actions: ActionLog | None = None,
    ) -> None:
        """``audience``: the value(s) of ``wimse-aud`` this service answers to, e.g. its own
        origin ``https://orders.example``; ``trust_domain``: the SPIFFE trust domain(s) of
        the agents (both required: there is no default that would accept anything).
        ``profiles``: the signature profiles accepted by default (``agentca``, ``wimse``;
        a route may narrow or widen them, see :meth:`evaluate`); ``wit`` verifies
        ``Workload-Identity-Token`` headers (a WIMSE request carrying one is refused without
        it; the agentca profile ignores the header, which it does not cover),
        ``require_wit`` refuses WIMSE-profile requests that carry none; ``oid_arcs``: the
        agent OID arcs accepted, the CA's ``accepted_oid_arcs`` (see
        :func:`wire.ca_metadata.arcs_from_metadata`; default: the example and legacy arcs).
        ``actions``: the gateway's action log (``gateway.action_log``): every logged decision
        also becomes an action record, and while the log cannot take records every request
        is refused (503 ``action-log-unavailable``)."""
        if not 0 < window <= MAX_WINDOW:
            raise ValueError(f"window must be 1..{MAX_WINDOW} seconds")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(isinstance(a, str) and a.strip() for a in audiences):
            raise ValueError("audience: the service's own audience value(s) are required")
        self.audiences = frozenset(httpsig.normal_audience(a.strip()) for a in audiences)
        trust_domains = [trust_domain] if isinstance(trust_domain, str) else list(trust_domain)
        self.chains = ChainVerifier(
            trust_anchors, intermediates, trust_domains=trust_domains, oid_arcs=oid_arcs
        )
        self.status = status or StatusChecker(clock=clock)
        self.inventory = inventory
        self.replay: ReplayStore = replay or ReplayCache()
        self.window = window
        self.skew = skew
        self.clock = clock
        self._declared: dict[str, dict[str, bytes]] = {}
        self.profiles = profiles_named(tuple([profiles] if isinstance(profiles, str) else profiles))
        if require_wit and wit is None:
            raise ValueError("require_wit needs a WitVerifier (wit=)")
        self.wit = wit
        self.require_wit = require_wit
        self.actions = actions

    def verify(
        self,
        req: RequestView,
        scope: str | None,
        profiles: Iterable[str] | None = None,
        *,
        tls_client_cert: TlsClientCert | None = None,
        require_tls_client_cert: bool = False,
        require_attestation: Attested = False,
    ) -> AgentIdentity:
        """The verified identity; raises :class:`Denied` naming the failed check.

        ``scope`` is the route's required scope; ``None`` means the route declares none,
        which is refused (``scope-denied``) once the request is otherwise verified.
        ``profiles`` overrides the accepted profiles for this route.
        ``require_tls_client_cert``: the request must have come over mutual TLS with the
        certificate that signs it (``tls_client_cert``, see ``gateway.client_cert``).
        ``require_attestation``: the certificate must record attested provenance
        (``AgentAttestation``, decision 0051): ``True`` by any attestor the CA trusts, or a
        collection of attestor names; a self-declared one is denied ``provenance-not-attested``.
        """
        d = Decision(False)
        return self._verify(
            req,
            scope,
            d,
            self._accepted(profiles),
            tls_client_cert,
            require_tls_client_cert,
            require_attestation,
        )

    def _accepted(self, profiles: Iterable[str] | None) -> tuple[Profile, ...]:
        return self.profiles if profiles is None else profiles_named(tuple(profiles))

    def _signature(
        self, headers: Mapping[str, str], accepted: tuple[Profile, ...]
    ) -> tuple[Profile, httpsig.ParsedSignature]:
        """The one signature of an accepted profile (selected by its ``tag``)."""
        raw_input = headers.get("signature-input", "")
        for profile in accepted:
            # a tag of plain characters has one serialisation: skip parsing for absent ones
            if f'tag="{profile.tag}"' not in raw_input:
                continue
            try:
                return profile, httpsig.parse_signature(headers, profile.tag)
            except Denied as denied:
                if denied.check is not Check.CREDENTIALS_MISSING:
                    raise
        raise Denied(
            Check.CREDENTIALS_MISSING,
            "no signature with tag " + " or ".join(repr(p.tag) for p in accepted),
        )

    def _verify(
        self,
        req: RequestView,
        scope: str | None,
        d: Decision,
        accepted: tuple[Profile, ...] = (AGENTCA,),
        tls: TlsClientCert | None = None,
        require_tls: bool = False,
        require_attestation: Attested = False,
    ) -> AgentIdentity:
        headers = req.headers
        raw_input = headers.get("signature-input", "")
        d.profile = next((p.name for p in accepted if f'tag="{p.tag}"' in raw_input), None)
        cert_header = headers.get("client-cert")
        if not cert_header:
            raise Denied(Check.CREDENTIALS_MISSING, "no Client-Cert header (RFC 9440)")
        if "signature" not in headers or "signature-input" not in headers:
            raise Denied(Check.CREDENTIALS_MISSING, "Signature and Signature-Input are required")
        now = self.clock()
        # 1. chain (nothing is cached before step 4)
        entry = self.chains.lookup(cert_header, headers.get("client-cert-chain", ""), now)
        d.identity = entry.identity
        d.chain = entry
        if tls is not None:
            d.extra["tls_client_cert"] = tls.source
        if require_tls:  # channel binding: the TLS certificate is the one that signs
            check_binding(tls, entry.fingerprint)
        # 2. status from what is at hand, bound to this certificate (issuer key hash, serial)
        status = self.status.check(entry, headers.get("agentca-ocsp"), now)
        d.status_source = status.source
        # 3. signature and covered components (the WIT, if any, before the signature)
        profile, sig = self._signature(headers, accepted)
        d.profile = profile.name
        nonce, created, keep_until = self._check_params(sig, entry, now, profile, req)
        d.nonce = nonce
        self._check_covered(sig, req, profile)
        self._check_wit(headers, entry, now, profile, d)
        if req.body or "content-digest" in headers:
            digest_header = headers.get("content-digest")
            if digest_header is None:
                raise Denied(Check.COVERED_COMPONENTS, "a request body needs Content-Digest")
            if not httpsig.content_digest_ok(digest_header, req.body):
                raise Denied(Check.CONTENT_DIGEST, "the body does not match its Content-Digest")
        base = httpsig.signature_base(sig, req)
        if not httpsig.verify(entry.public_key, entry.algorithm, sig.signature, base):
            raise Denied(Check.SIGNATURE, "the signature does not verify over the request")
        if SUBJECT_HEADER in headers and SUBJECT_HEADER in sig.covered:
            d.subject = headers[SUBJECT_HEADER]
        # 4. the certificate holder sent this: what it brought may now be cached
        self.chains.remember(entry, cert_header)
        self.status.commit(entry, status)
        if status.source is None:  # network I/O only for authentic requests
            d.status_source = self.status.resolve(entry, self.clock())
        # 5. nonce: per certificate (agentca); WIMSE, whoever sends it (-07, WGLC #297)
        replay_key = (entry.status_key if profile is AGENTCA else profile.name, nonce)
        try:
            fresh = self.replay.add(replay_key, created, keep_until, now)
        except ReplayUnavailable as exc:
            raise Denied(Check.REPLAY_UNAVAILABLE, str(exc) or "replay cache unreachable") from exc
        if not fresh:
            raise Denied(Check.REPLAY, "this nonce was already used")
        # 6. provenance
        self._check_provenance(entry, headers.get("agentca-provenance"))
        if require_attestation is not False:
            check_attested(entry, require_attestation)
        # 7. scope
        if scope is None:
            raise Denied(Check.SCOPE, f"no scope is declared for {req.method} {req.path}")
        if scope not in entry.extensions.scopes:
            raise Denied(
                Check.SCOPE,
                f"scope {scope!r} is not granted to {entry.identity.name} "
                f"(granted: {', '.join(entry.identity.scopes)})",
            )
        return entry.identity

    def _check_wit(
        self,
        headers: Mapping[str, str],
        entry: ChainEntry,
        now: float,
        profile: Profile,
        d: Decision,
    ) -> None:
        if profile is AGENTCA:  # the agentca profile does not cover a WIT: not a credential
            return
        token = headers.get(WIT_HEADER)
        if token is None:
            if self.require_wit:
                raise Denied(Check.CREDENTIALS_MISSING, "a Workload-Identity-Token is required")
            return
        if self.wit is None:
            raise Denied(Check.MALFORMED, "this gateway verifies no Workload-Identity-Token")
        claims = self.wit.verify(token.strip(), now)
        self.wit.bind(
            claims, entry.identity.spiffe_id, entry.fingerprint, entry.public_key, entry.algorithm
        )
        d.extra["wit_jti"] = claims.jti

    def _check_params(
        self,
        sig: httpsig.ParsedSignature,
        entry: ChainEntry,
        now: float,
        profile: Profile = AGENTCA,
        req: RequestView | None = None,
    ) -> tuple[str, int, float]:
        p = sig.params
        for name in profile.forbidden:
            if name in p:
                raise Denied(
                    Check.MALFORMED, f"the {profile.name} profile forbids the {name!r} parameter"
                )
        if profile is not AGENTCA and p.get("wimse-sign-response") is True:
            # -07 3.4: required to sign the response, and this gateway signs none: an error,
            # never a successful unsigned response
            raise Denied(Check.MALFORMED, "this gateway does not sign responses")
        created, expires, nonce = p.get("created"), p.get("expires"), p.get("nonce")
        if not isinstance(created, int) or isinstance(created, bool):
            raise Denied(Check.MALFORMED, "signature parameter 'created' (integer) is required")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise Denied(Check.MALFORMED, "signature parameter 'expires' (integer) is required")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            raise Denied(Check.MALFORMED, "signature parameter 'nonce' (16..128 chars) is required")
        alg = p.get("alg")
        if alg is not None and alg != entry.algorithm:
            raise Denied(Check.SIGNATURE, f"alg {alg!r} does not match the certificate key")
        audience = p.get(AUDIENCE_PARAM)
        if not isinstance(audience, str):
            raise Denied(
                Check.AUDIENCE, f"signature parameter {AUDIENCE_PARAM!r} (string) is required"
            )
        if (
            audience not in self.audiences
            and httpsig.normal_audience(audience) not in self.audiences
            and not (profile.audience_may_name_path and self._names_target(audience, req))
        ):
            raise Denied(
                Check.AUDIENCE, f"the request is signed for {audience!r}, not for this service"
            )
        if not 0 < expires - created <= self.window:
            raise Denied(
                Check.SIGNATURE_EXPIRED, f"expires - created must be 1..{self.window} seconds"
            )
        if created > now + self.skew:
            raise Denied(Check.SIGNATURE_EXPIRED, "signature 'created' is in the future")
        if now > expires + self.skew or now - created > self.window + self.skew:
            raise Denied(Check.SIGNATURE_EXPIRED, "signature has expired ('created' too old)")
        return nonce, created, float(min(expires, created + self.window) + self.skew)

    def _names_target(self, audience: str, req: RequestView | None) -> bool:
        """WIMSE default audience: this service's origin followed by the request path."""
        if req is None or not req.path.startswith("/") or not audience.endswith(req.path):
            return False
        origin = audience[: len(audience) - len(req.path)]
        return bool(origin) and httpsig.normal_audience(origin) in self.audiences

    @staticmethod
    def _check_covered(
        sig: httpsig.ParsedSignature, req: RequestView, profile: Profile = AGENTCA
    ) -> None:
        covered = sig.covered
        missing = [c for c in profile.base if c not in covered]
        missing += [c for c in profile.if_present if c in req.headers and c not in covered]
        if req.body and "content-digest" not in covered:
            missing.append("content-digest")
        if missing:
            raise Denied(
                Check.COVERED_COMPONENTS,
                f"the signature must cover {', '.join(dict.fromkeys(missing))}",
            )

    def _check_provenance(self, entry: ChainEntry, header: str | None) -> None:
        ident = entry.identity
        if not self.inventory.authorised(ident.model_digest, ident.environment):
            raise Denied(
                Check.MODEL_NOT_AUTHORISED,
                f"model {ident.model_digest} is not authorised in {ident.environment!r} "
                "(retired or unknown)",
            )
        declared = self._declared.get(header or "")
        if declared is None:
            declared = _parse_declared(header)
            if len(self._declared) >= 10_000:
                self._declared.clear()
            self._declared[header or ""] = declared
        prov = entry.extensions.provenance
        differs = []
        if declared.get("model") != prov.model_digest.value:
            differs.append("model")
        if declared.get("prompt") != prov.prompt_digest.value:
            differs.append("prompt")
        config = None if prov.config_digest is None else prov.config_digest.value
        if declared.get("config") != config:
            differs.append("config")
        if differs:
            raise Denied(
                Check.PROVENANCE,
                f"declared {', '.join(differs)} digest differs from certificate {ident.serial}",
            )

    def evaluate(
        self,
        req: RequestView,
        scope: str | None,
        profiles: Iterable[str] | None = None,
        *,
        tls_client_cert: TlsClientCert | None = None,
        require_tls_client_cert: bool = False,
        require_attestation: Attested = False,
    ) -> Decision:
        """Verify without logging; never raises (unexpected errors deny with
        ``verification-error``). Shells log with :meth:`log` once they know the response.
        ``profiles`` overrides the accepted profiles for this route (None: the verifier's);
        the TLS and attestation arguments are those of :meth:`verify`."""
        started = time.perf_counter()
        decision = Decision(False, scope=scope)
        actions = self.actions
        if actions is not None and actions.refusing is not None:  # fail closed: unrecorded
            decision.denial = Denied(Check.ACTION_LOG_UNAVAILABLE, actions.refusing)
            return decision
        try:
            accepted = self._accepted(profiles)
            self._verify(
                req,
                scope,
                decision,
                accepted,
                tls_client_cert,
                require_tls_client_cert,
                require_attestation,
            )
            decision.allowed = True
        except Denied as denied:
            decision.denial = denied
        except Exception as exc:  # never a 500: fail closed and log it
            decision_log.exception("gateway verification error")
            decision.denial = Denied(Check.ERROR, type(exc).__name__)
        decision.elapsed_us = (time.perf_counter() - started) * 1e6
        return decision

    def log(
        self,
        decision: Decision,
        req: RequestView,
        http_status: int | None,
        route: str | None = None,
    ) -> None:
        """Queue the decision line with the HTTP status actually sent (None: not known); it
        is formatted and written off the request path (``gateway.decision_log.flush`` waits).
        ``route``: the route template the shell matched (the action record's normalised
        route; None: no template, see ``gateway.action_record.UNMATCHED``). With an action
        log, the same queued line becomes its record, built off the request path too."""
        actions = self.actions
        if actions is None:
            if decisions.enabled():
                decisions.append(_LogLine(decision, req, self.clock(), http_status))
            return
        line = _LogLine(decision, req, self.clock(), http_status, route)
        if decisions.enabled():
            decisions.append(line)
        actions.append(line)

    def decide(
        self,
        req: RequestView,
        scope: str | None,
        profiles: Iterable[str] | None = None,
        *,
        require_attestation: Attested = False,
        route: str | None = None,
    ) -> Decision:
        """Verify and log (a refusal with its problem status; an allowed request with
        ``http_status`` null, since the application answers it)."""
        decision = self.evaluate(req, scope, profiles, require_attestation=require_attestation)
        self.log(decision, req, decision.http_status, route)
        return decision
