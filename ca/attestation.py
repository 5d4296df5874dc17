"""Runtime attestation at enrollment: who saw this key running this model (decision 0051).

An :class:`Attestor` turns evidence (bytes the agent brought from its launcher) into an
:class:`AttestedStatement` or an :class:`AttestationError` naming the reason. It never reads
a clock or a database: the caller passes ``now``. The enrollment policy (``ca.policy``) then
compares the statement with the CSR: key, model digest and scheme, prompt and config digests,
environment and agent.

The first attestor, :class:`JwsAttestor`, accepts a compact JWS (``typ``
``agentca-attestation+jwt``) signed by a configured orchestrator key (ES256 on P-256, or
Ed25519), selected by ``kid``; the algorithm is taken from the configured key, never from the
token, so ``alg: none``, HS256 with the public key as secret and an algorithm switch fail.
The second, ``ca.attestation_snp.SnpAttestor``, accepts an AMD SEV-SNP attestation report
whose report data carries the SPKI hash. :class:`AttestorSet` holds both and tells their
evidence apart by shape: docs/decisions/0051-runtime-attestation.md "TEE quotes".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.errors import CAError, ErrorCode
from wire.extensions import Digest, ModelDigestScheme

METHOD_JWS: Final = "orchestrator-jws-v1"
TYP: Final = "agentca-attestation+jwt"
#: the largest attestation accepted, before any parsing (a real one is well under 2 KiB)
MAX_EVIDENCE_BYTES: Final = 8 * 1024
DEFAULT_MAX_LIFETIME: Final = 900  # seconds between iat and exp, at most
DEFAULT_SKEW: Final = 30  # seconds of clock difference tolerated with the attestor
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HEX_DIGEST_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
_CLAIMS: Final = frozenset(
    {"iss", "sub", "iat", "exp", "jti", "cnf", "environment", "model", "prompt", "config"}
)


class AttestationError(Exception):
    """Evidence that is refused; ``reason`` is a stable slug, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AttestedStatement:
    """What an attestor vouches for: this key runs this provenance for this agent."""

    method: str
    attestor: str
    key_id: str
    #: SHA-256 of the subject public key's DER SubjectPublicKeyInfo
    spki_sha256: bytes
    agent: str
    environment: str
    model_digest: Digest
    model_digest_scheme: ModelDigestScheme
    prompt_digest: Digest
    config_digest: Digest | None
    issued_at: int
    expires_at: int
    #: SHA-256 of the signed payload (the claims), recorded in the certificate's
    #: ``AgentAttestation``: one value per statement, whatever its signature bytes
    statement_sha256: bytes


class Attestor(Protocol):
    """Verifies one kind of evidence; pure (``now`` is given), thread-safe."""

    method: str

    def verify(self, evidence: bytes, environment: str, now: int) -> AttestedStatement:
        """The statement ``evidence`` makes, for an agent of ``environment``; raises
        :class:`AttestationError` if it is not valid now or not from a trusted key."""
        ...


def spki_sha256(public_key: CertificatePublicKeyTypes) -> bytes:
    """SHA-256 of ``public_key``'s DER SubjectPublicKeyInfo (what a statement binds)."""
    return hashlib.sha256(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()


@dataclass(frozen=True)
class AttestorKey:
    """One configured orchestrator key: its ``kid``, the attestor it speaks for, and where."""

    key_id: str
    attestor: str
    environments: frozenset[str]
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    max_lifetime: int = DEFAULT_MAX_LIFETIME
    skew: int = DEFAULT_SKEW

    @property
    def algorithm(self) -> str:
        """The one JWS algorithm this key verifies (never the token's choice)."""
        return "Ed25519" if isinstance(self.public_key, ed25519.Ed25519PublicKey) else "ES256"


def _b64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise AttestationError("attestation-malformed", "not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AttestationError("attestation-malformed", "not base64url") from None


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object with no repeated member; bytes must be UTF-8 without a byte order mark
    (RFC 8259 section 8.1: ``json.loads`` of bytes would also read UTF-16 and UTF-32)."""
    if isinstance(raw, bytes):
        if raw.startswith(b"\xef\xbb\xbf"):
            raise AttestationError("attestation-malformed", f"{what} starts with a byte order mark")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AttestationError("attestation-malformed", f"{what} is not UTF-8") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise AttestationError("attestation-malformed", f"{what} repeats a member")
        return dict(pairs)

    try:
        value = json.loads(raw, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError):
        raise AttestationError("attestation-malformed", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise AttestationError("attestation-malformed", f"{what} is not a JSON object")
    return value


def _digest(value: object, what: str) -> Digest:
    if not isinstance(value, str) or not _HEX_DIGEST_RE.fullmatch(value):
        raise AttestationError("attestation-malformed", f"'{what}' must be 'sha256:<64 hex>'")
    return Digest(bytes.fromhex(value[7:]))


def _text(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or not value.isprintable():
        raise AttestationError("attestation-malformed", f"claim '{name}' must be a short string")
    return value


def _seconds(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**40:
        raise AttestationError("attestation-malformed", f"claim '{name}' must be Unix seconds")
    return value


@dataclass(frozen=True)
class ClaimedRun:
    """What a statement's claims say ran, and when the statement is valid (any attestor)."""

    agent: str
    environment: str
    model_digest: Digest
    model_digest_scheme: ModelDigestScheme
    prompt_digest: Digest
    config_digest: Digest | None
    issued_at: int
    expires_at: int

    def statement(
        self, method: str, attestor: str, key_id: str, spki: bytes, statement_sha256: bytes
    ) -> AttestedStatement:
        """The statement an attestor makes of this run: ``spki`` is SHA-256 of the key's
        SubjectPublicKeyInfo, ``statement_sha256`` one value per statement."""
        return AttestedStatement(
            method=method,
            attestor=attestor,
            key_id=key_id,
            spki_sha256=spki,
            agent=self.agent,
            environment=self.environment,
            model_digest=self.model_digest,
            model_digest_scheme=self.model_digest_scheme,
            prompt_digest=self.prompt_digest,
            config_digest=self.config_digest,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            statement_sha256=statement_sha256,
        )


def claimed_run(claims: Mapping[str, Any], max_lifetime: int, skew: int, now: int) -> ClaimedRun:
    """The claims ``sub``, ``environment``, ``model`` ``{digest, scheme}``, ``prompt``,
    ``config``, ``iat`` and ``exp`` read strictly, the statement valid at ``now`` (lifetime at
    most ``max_lifetime``, ``skew`` seconds either side); :class:`AttestationError` if not."""
    iat, exp = _seconds(claims, "iat"), _seconds(claims, "exp")
    if exp <= iat:
        raise AttestationError("attestation-malformed", "exp must be after iat")
    if exp - iat > max_lifetime:
        raise AttestationError(
            "attestation-lifetime", f"lives {exp - iat} s, more than the {max_lifetime} s allowed"
        )
    if iat > now + skew:
        raise AttestationError(
            "attestation-not-yet-valid",
            f"issued {iat - now} s in the future (more than {skew} s skew)",
        )
    if now >= exp + skew:
        raise AttestationError("attestation-expired", f"expired {now - exp} s ago (skew {skew} s)")
    model = claims.get("model")
    if not isinstance(model, dict) or set(model) != {"digest", "scheme"}:
        raise AttestationError("attestation-malformed", "model must be {digest, scheme}")
    try:
        scheme = ModelDigestScheme.parse(model["scheme"])
    except (ValueError, TypeError, AttributeError) as exc:
        raise AttestationError("attestation-malformed", str(exc)[:160]) from None
    config = claims.get("config")
    return ClaimedRun(
        agent=_text(claims, "sub"),
        environment=_text(claims, "environment"),
        model_digest=_digest(model["digest"], "model.digest"),
        model_digest_scheme=scheme,
        prompt_digest=_digest(claims.get("prompt"), "prompt"),
        config_digest=None if config is None else _digest(config, "config"),
        issued_at=iat,
        expires_at=exp,
    )


class JwsAttestor:
    """Compact JWS statements from the orchestrators' keys (``kid`` selects one)."""

    method = METHOD_JWS

    def __init__(self, keys: Iterable[AttestorKey]) -> None:
        self.keys: dict[str, AttestorKey] = {}
        for key in keys:
            if key.key_id in self.keys:
                raise CAError(ErrorCode.CONFIG, f"attestor key id {key.key_id!r} is repeated")
            self.keys[key.key_id] = key

    def verify(self, evidence: bytes, environment: str, now: int) -> AttestedStatement:
        """See :class:`Attestor`; the reasons are ``attestation-*`` slugs."""
        from joserfc import jwk, jws
        from joserfc.errors import JoseError

        if len(evidence) > MAX_EVIDENCE_BYTES:
            raise AttestationError(
                "attestation-too-large", f"over {MAX_EVIDENCE_BYTES} bytes ({len(evidence)})"
            )
        try:
            text = evidence.decode("ascii").strip()
        except UnicodeDecodeError:
            raise AttestationError("attestation-malformed", "not a compact JWS") from None
        parts = text.split(".")
        if len(parts) != 3 or not all(parts):
            raise AttestationError("attestation-malformed", "not a compact JWS (3 parts)")
        header = _json_object(_b64url(parts[0]), "the JWS header")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self.keys:
            shown = str(kid)[:64] if kid is not None else "none"
            raise AttestationError(
                "attestation-unknown-key", f"key id {shown!r} is not a configured attestor key"
            )
        key = self.keys[kid]
        if environment not in key.environments:
            raise AttestationError(
                "attestation-foreign-key",
                f"attestor key {kid!r} ({key.attestor}) is not trusted for environment "
                f"{environment!r}",
            )
        if header.get("alg") != key.algorithm:
            raise AttestationError(
                "attestation-algorithm",
                f"alg {str(header.get('alg'))[:16]!r} is not {key.algorithm}, the algorithm "
                f"of key {kid!r}",
            )
        if header.get("typ") != TYP:
            raise AttestationError("attestation-malformed", f"typ must be {TYP!r}")
        if set(header) - {"alg", "kid", "typ"}:
            raise AttestationError(
                "attestation-malformed", "the JWS header may carry only alg, kid and typ"
            )
        public = key.public_key
        jose_key: jwk.OKPKey | jwk.ECKey = (
            jwk.OKPKey.import_key(public)
            if isinstance(public, ed25519.Ed25519PublicKey)
            else jwk.ECKey.import_key(public)
        )
        try:
            obj = jws.deserialize_compact(text, jose_key, algorithms=[key.algorithm])
        except (JoseError, ValueError):
            raise AttestationError(
                "attestation-signature", f"the signature does not verify with key {kid!r}"
            ) from None
        claims = _json_object(obj.payload, "the payload")
        return self._statement(claims, key, environment, now, obj.payload)

    def _statement(
        self,
        claims: dict[str, Any],
        key: AttestorKey,
        environment: str,
        now: int,
        payload: bytes,
    ) -> AttestedStatement:
        unknown = sorted(set(claims) - _CLAIMS)
        if unknown:
            raise AttestationError(
                "attestation-malformed", f"unknown claims: {', '.join(unknown)[:80]}"
            )
        if claims.get("iss") != key.attestor:
            raise AttestationError(
                "attestation-issuer",
                f"iss {str(claims.get('iss'))[:64]!r} is not {key.attestor!r}, the attestor "
                f"of key {key.key_id!r}",
            )
        _text(claims, "jti")
        run = claimed_run(claims, key.max_lifetime, key.skew, now)
        cnf = claims.get("cnf")
        spki = cnf.get("spki#S256") if isinstance(cnf, dict) else None
        if not isinstance(cnf, dict) or set(cnf) != {"spki#S256"} or not isinstance(spki, str):
            raise AttestationError(
                "attestation-malformed", "cnf must be {'spki#S256': base64url(SHA-256(SPKI))}"
            )
        spki_hash = _b64url(spki)
        if len(spki_hash) != 32:
            raise AttestationError("attestation-malformed", "cnf.spki#S256 is not a SHA-256")
        # the signed claims, not the token: an ECDSA signature is malleable (s, n - s) and
        # blanks around the token are ignored, so the token's bytes are not unique
        return run.statement(
            self.method, key.attestor, key.key_id, spki_hash, hashlib.sha256(payload).digest()
        )


# ------------------------------------------------------------------------------ configuration


def _load_key(path: Path, kid: str) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CAError(
            ErrorCode.CONFIG, f"attestor key {kid!r}: cannot read a PEM public key from {path}"
        ) from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key
    raise CAError(
        ErrorCode.CONFIG, f"attestor key {kid!r}: only EC P-256 and Ed25519 keys are accepted"
    )


class AttestorSet:
    """The configured attestors, each for its kind of evidence, picked by the evidence's shape:
    a JSON object is an SEV-SNP envelope (``sev-snp-v1``), anything else a compact JWS."""

    method = "any"

    def __init__(self, jws: JwsAttestor, snp: Attestor | None = None) -> None:
        self.jws = jws
        self.snp = snp

    def verify(self, evidence: bytes, environment: str, now: int) -> AttestedStatement:
        """The statement of whichever attestor reads ``evidence``'s kind (see :class:`Attestor`)."""
        if evidence.lstrip()[:1] == b"{":
            if self.snp is None:
                raise AttestationError(
                    "attestation-unconfigured",
                    "SEV-SNP evidence, but this CA trusts no SEV-SNP root",
                )
            return self.snp.verify(evidence, environment, now)
        if not self.jws.keys:
            raise AttestationError(
                "attestation-unconfigured", "a JWS statement, but this CA trusts no attestor key"
            )
        return self.jws.verify(evidence, environment, now)


def load_attestors(path: Path) -> JwsAttestor | AttestorSet:
    """The attestors of the TOML file ``path`` (docs/operators.md "Runtime attestation"): a
    :class:`JwsAttestor` when it lists only ``[[attestor]]`` keys, else an :class:`AttestorSet`
    that also holds the ``[[sev_snp]]`` entries (``ca.attestation_snp.snp_trust``)::

    [[attestor]]
    key_id = "orch-prod-2026"
    attestor = "orchestrator.prod"
    environments = ["production"]
    public_key_file = "/etc/agentca/attestors/orch-prod-2026.pem"
    max_lifetime_seconds = 900   # optional
    clock_skew_seconds = 30      # optional
    """
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CAError(ErrorCode.CONFIG, f"attestors file {path}: {exc}") from None
    entries = doc.get("attestor", [])
    snp_entries = doc.get("sev_snp", [])
    if (
        set(doc) - {"attestor", "sev_snp"}
        or not isinstance(entries, list)
        or not isinstance(snp_entries, list)
    ):
        raise CAError(
            ErrorCode.CONFIG, f"attestors file {path}: only [[attestor]] and [[sev_snp]] tables"
        )
    keys = []
    allowed = {
        "key_id",
        "attestor",
        "environments",
        "public_key_file",
        "max_lifetime_seconds",
        "clock_skew_seconds",
    }
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - allowed:
            raise CAError(ErrorCode.CONFIG, f"attestors file {path}: keys are {sorted(allowed)}")
        kid, who, envs = entry.get("key_id"), entry.get("attestor"), entry.get("environments")
        if not isinstance(kid, str) or not _ID_RE.fullmatch(kid):
            raise CAError(ErrorCode.CONFIG, f"attestors file {path}: bad key_id {kid!r}")
        if not isinstance(who, str) or not _ID_RE.fullmatch(who):
            raise CAError(ErrorCode.CONFIG, f"attestor key {kid!r}: bad attestor {who!r}")
        if not isinstance(envs, list) or not envs or not all(isinstance(e, str) for e in envs):
            raise CAError(ErrorCode.CONFIG, f"attestor key {kid!r}: environments must be listed")
        lifetime = entry.get("max_lifetime_seconds", DEFAULT_MAX_LIFETIME)
        skew = entry.get("clock_skew_seconds", DEFAULT_SKEW)
        if not isinstance(lifetime, int) or not 1 <= lifetime <= 3600:
            raise CAError(ErrorCode.CONFIG, f"attestor key {kid!r}: max_lifetime 1..3600 s")
        if not isinstance(skew, int) or not 0 <= skew <= 300:
            raise CAError(ErrorCode.CONFIG, f"attestor key {kid!r}: clock_skew 0..300 s")
        key_file = entry.get("public_key_file")
        if not isinstance(key_file, str) or not key_file:
            raise CAError(ErrorCode.CONFIG, f"attestor key {kid!r}: public_key_file is required")
        public = _load_key(Path(key_file), kid)
        keys.append(AttestorKey(kid, who, frozenset(envs), public, lifetime, skew))
    if not snp_entries:
        return JwsAttestor(keys)
    from ca.attestation_snp import SnpAttestor, snp_trust

    return AttestorSet(JwsAttestor(keys), SnpAttestor(snp_trust(e, path) for e in snp_entries))
