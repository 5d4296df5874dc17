"""Workload Identity Tokens (draft-ietf-wimse-workload-creds, section 3.1): verification.

A WIT is a JWS-signed JWT (``typ: wit+jwt``) whose ``cnf.jwk`` is the workload's public key
and whose ``sub`` is its workload identifier. The gateway checks it with joserfc against the
keys configured for the issuer (a JWKS the operator distributes, e.g. the CA's
``/ca/wit-jwks.json`` fetched once at start-up; never a URL found in the token), then binds it
to the request: ``sub`` equals the certificate's SPIFFE ID, ``cnf.jwk`` is the certificate
key (RFC 7638 thumbprint) and ``cnf.jwk.alg`` is that key's algorithm.

A verified token's claims are cached by token text: verification is a function of the text
and the configured keys only, so a refused request cannot poison the cache; ``exp`` is
checked on every use.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, import_key

from gateway.problems import Check, Denied
from wire.jwk import jwk_key_type

WIT_TYP: Final = "wit+jwt"
#: JOSE algorithms of each RFC 9421 algorithm a certificate key can have (RFC 9421 3.3.7);
#: Ed25519 also by its RFC 9864 fully-specified name.
JOSE_ALGORITHMS: Final = {
    "ecdsa-p256-sha256": ("ES256",),
    "ecdsa-p384-sha384": ("ES384",),
    "ed25519": ("EdDSA", "Ed25519"),
    "rsa-v1_5-sha256": ("RS256",),
}
ACCEPTED: Final = ("ES256", "ES384", "EdDSA", "Ed25519", "RS256")
MAX_TOKEN: Final = 8 * 1024


@dataclass(frozen=True)
class WitClaims:
    """What a verified WIT says."""

    sub: str
    iss: str | None
    exp: int
    iat: int | None
    jti: str | None
    cnf_thumbprint: str  # RFC 7638 SHA-256 thumbprint of cnf.jwk
    cnf_alg: str
    nbf: int | None = None


def key_thumbprint(public_key: Any) -> str:
    """The RFC 7638 SHA-256 thumbprint of a cryptography public key."""
    return str(import_key(public_key, jwk_key_type(public_key)).thumbprint())


def fetch_jwks(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a JWKS document (e.g. ``https://ca.example/ca/wit-jwks.json``), bounded."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        doc = json.loads(resp.read(256 * 1024))
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{url} is not a JWKS document")
    return doc


class WitVerifier:
    """Verifies WITs signed by the configured keys, from the configured issuers."""

    def __init__(
        self,
        jwks: Mapping[str, Any],
        issuers: str | Iterable[str],
        skew: int = 5,
        max_entries: int = 10_000,
    ) -> None:
        """``jwks``: the issuer's public keys (RFC 7517 JWK Set); ``issuers``: the accepted
        ``iss`` values (required: a WIT without ``iss`` or from another issuer is refused)."""
        self.keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        self.issuers = frozenset([issuers] if isinstance(issuers, str) else issuers)
        if not self.issuers or not all(isinstance(i, str) and i.strip() for i in self.issuers):
            raise ValueError("issuers: the accepted WIT issuer(s) are required (non-empty)")
        self.skew = skew
        self.max_entries = max_entries
        self._cache: dict[str, WitClaims] = {}
        self._thumbprints: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def verify(self, token: str, now: float) -> WitClaims:
        """The claims of a valid, unexpired WIT; ``Denied`` otherwise."""
        claims = self._cache.get(token)
        if claims is None:
            claims = self._decode(token)
            with self._lock:
                if len(self._cache) >= self.max_entries:
                    self._cache.clear()
                self._cache[token] = claims
        if now > claims.exp + self.skew:
            raise Denied(Check.SIGNATURE_EXPIRED, "the Workload-Identity-Token has expired")
        if claims.nbf is not None and claims.nbf > now + self.skew:
            raise Denied(Check.SIGNATURE_EXPIRED, "the Workload-Identity-Token is not yet valid")
        if claims.iat is not None and claims.iat > now + self.skew:
            raise Denied(Check.SIGNATURE_EXPIRED, "the Workload-Identity-Token is from the future")
        return claims

    def bind(
        self, claims: WitClaims, spiffe_id: str, fingerprint: bytes, key: Any, alg: str
    ) -> None:
        """Refuse unless the WIT names this certificate's SPIFFE ID and key and algorithm."""
        if claims.sub != spiffe_id:
            raise Denied(
                Check.SIGNATURE,
                f"Workload-Identity-Token sub {claims.sub!r} is not the certificate's "
                f"{spiffe_id!r}",
            )
        thumbprint = self._thumbprints.get(fingerprint)
        if thumbprint is None:
            thumbprint = key_thumbprint(key)
            if len(self._thumbprints) >= self.max_entries:
                self._thumbprints.clear()
            self._thumbprints[fingerprint] = thumbprint
        if claims.cnf_thumbprint != thumbprint:
            raise Denied(
                Check.SIGNATURE, "Workload-Identity-Token cnf.jwk is not the request-signing key"
            )
        if claims.cnf_alg not in JOSE_ALGORITHMS.get(alg, ()):
            raise Denied(
                Check.SIGNATURE,
                f"Workload-Identity-Token cnf.jwk.alg {claims.cnf_alg!r} does not match {alg}",
            )

    def _decode(self, token: str) -> WitClaims:
        if len(token) > MAX_TOKEN or token.count(".") != 2:
            raise Denied(Check.MALFORMED, "Workload-Identity-Token is not a compact JWT")
        try:
            decoded = jwt.decode(token, self.keys, algorithms=list(ACCEPTED))
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise Denied(
                Check.SIGNATURE, f"Workload-Identity-Token does not verify: {type(exc).__name__}"
            ) from None
        if decoded.header.get("typ") != WIT_TYP:
            raise Denied(Check.MALFORMED, f"Workload-Identity-Token typ must be {WIT_TYP!r}")
        c = decoded.claims
        iss, sub, exp, iat, jti = (
            c.get("iss"),
            c.get("sub"),
            c.get("exp"),
            c.get("iat"),
            c.get("jti"),
        )
        if iss not in self.issuers:
            raise Denied(Check.SIGNATURE, f"Workload-Identity-Token issuer {iss!r} is not trusted")
        if not isinstance(sub, str) or not sub:
            raise Denied(Check.MALFORMED, "Workload-Identity-Token needs a sub claim")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise Denied(Check.MALFORMED, "Workload-Identity-Token needs an integer exp claim")
        if iat is not None and (not isinstance(iat, int) or isinstance(iat, bool)):
            raise Denied(Check.MALFORMED, "Workload-Identity-Token iat must be an integer")
        nbf = c.get("nbf")
        if nbf is not None and (not isinstance(nbf, int) or isinstance(nbf, bool)):
            raise Denied(Check.MALFORMED, "Workload-Identity-Token nbf must be an integer")
        cnf = c.get("cnf")
        jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
        if not isinstance(jwk, dict) or "d" in jwk or jwk.get("kty") not in ("EC", "OKP", "RSA"):
            raise Denied(Check.MALFORMED, "Workload-Identity-Token needs a public cnf.jwk")
        cnf_alg = jwk.get("alg")
        if not isinstance(cnf_alg, str) or cnf_alg not in ACCEPTED:
            raise Denied(
                Check.MALFORMED, "Workload-Identity-Token cnf.jwk.alg is missing or unusable"
            )
        try:
            thumbprint = str(import_key(jwk).thumbprint())
        except (JoseError, ValueError, KeyError, TypeError):
            raise Denied(Check.MALFORMED, "Workload-Identity-Token cnf.jwk is not a key") from None
        return WitClaims(
            sub=sub,
            iss=iss,
            exp=exp,
            iat=iat,
            jti=jti if isinstance(jti, str) else None,
            cnf_thumbprint=thumbprint,
            cnf_alg=cnf_alg,
            nbf=nbf,
        )
