"""Certificate status for the gateway: stapled OCSP, its own OCSP cache, or a CRL set.

Freshness rule: status information older than ``max_age`` seconds is never acted on. For a
staple the age is ``now - thisUpdate`` (responses have one-second resolution, so this errs on
the old side); for a response the gateway fetched itself (with a nonce, so it was signed
after the request left) the age runs from the moment of the request. With the responder's
own propagation (a revoke reaches its answers within its poll interval, 0.2 s), a revocation
is enforced within about ``max_age`` + 0.2 s; ``max_age=0.8`` makes that a hard 1 s.

Order: a serial already seen revoked is refused at once; then a valid, fresh staple; then a
fresh cache entry (kept fresh by a background thread, so the request path makes no network
call); then a synchronous fetch; then the CRL set; otherwise ``status-unknown`` (fail closed).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway import sf
from gateway.chain import ChainEntry, issuer_hashes
from gateway.problems import Check, Denied

log = logging.getLogger("agentca.gateway.status")

GOOD, REVOKED = "good", "revoked"


@dataclass
class StatusInfo:
    """What one verified OCSP answer (or CRL look-up) says about one serial."""

    status: str  # good | revoked | unknown
    as_of: float  # thisUpdate (staple) or request time (own fetch)
    next_update: float | None
    source: str
    last_used: float = 0.0


class StatusError(Exception):
    """An OCSP response that cannot be trusted for this certificate."""


def _verify_signature(key: object, signature: bytes, data: bytes, algo: object) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert isinstance(algo, hashes.HashAlgorithm)
        key.verify(signature, data, ec.ECDSA(algo))
    elif isinstance(key, rsa.RSAPublicKey):
        assert isinstance(algo, hashes.HashAlgorithm)
        key.verify(signature, data, padding.PKCS1v15(), algo)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    else:
        raise StatusError("unsupported responder key type")


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class OcspValidator:
    """Checks an OCSP response: signed by the issuer or a delegated responder it certified
    (OCSPSigning EKU, valid now), about the right CertID, with a usable time window."""

    def __init__(self, skew: float = 5.0) -> None:
        self.skew = skew
        self._responders: dict[tuple[bytes, bytes], float] = {}  # (der, issuer) -> not_after
        self._issuer_hashes: dict[bytes, dict[str, tuple[bytes, bytes]]] = {}

    def _responder_ok(self, cert: x509.Certificate, issuer: x509.Certificate, now: float) -> bool:
        key = (cert.public_bytes(serialization.Encoding.DER), issuer.fingerprint(hashes.SHA256()))
        until = self._responders.get(key)
        if until is not None:
            return now < until
        try:
            cert.verify_directly_issued_by(issuer)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return False
        if ExtendedKeyUsageOID.OCSP_SIGNING not in list(eku):
            return False
        if not cert.not_valid_before_utc.timestamp() <= now < cert.not_valid_after_utc.timestamp():
            return False
        self._responders[key] = cert.not_valid_after_utc.timestamp()
        return True

    def validate(
        self, der: bytes, entry: ChainEntry, now: float, nonce: bytes | None = None
    ) -> StatusInfo:
        try:
            resp = ocsp.load_der_ocsp_response(der)
        except ValueError as exc:
            raise StatusError(f"not an OCSP response: {exc}") from None
        if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise StatusError(f"OCSP response status {resp.response_status.name}")
        issuer = entry.issuer
        fp = issuer.fingerprint(hashes.SHA256())
        hashes_by_alg = self._issuer_hashes.get(fp)
        if hashes_by_alg is None:
            hashes_by_alg = self._issuer_hashes[fp] = issuer_hashes(issuer)
        single = None
        for candidate in resp.responses:
            expected = hashes_by_alg.get(candidate.hash_algorithm.name)
            if (
                expected is not None
                and candidate.serial_number == entry.serial
                and (candidate.issuer_name_hash, candidate.issuer_key_hash) == expected
            ):
                single = candidate
                break
        if single is None:
            raise StatusError("no answer for this certificate in the OCSP response")
        # Who signed it: the issuer itself, or a delegated responder certified by the issuer.
        signer_key: object = None
        if resp.responder_key_hash == hashes_by_alg["sha1"][1] or (
            resp.responder_name is not None and resp.responder_name == issuer.subject
        ):
            signer_key = issuer.public_key()
        else:
            for cert in resp.certificates:
                matches = (
                    resp.responder_key_hash is not None
                    and x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
                    == resp.responder_key_hash
                ) or (resp.responder_name is not None and cert.subject == resp.responder_name)
                if matches and self._responder_ok(cert, issuer, now):
                    signer_key = cert.public_key()
                    break
        if signer_key is None:
            raise StatusError("OCSP response is not signed by the issuer or its responder")
        try:
            _verify_signature(
                signer_key, resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm
            )
        except InvalidSignature:
            raise StatusError("OCSP response signature does not verify") from None
        if nonce is not None:
            try:
                echoed = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                echoed = None
            if echoed != nonce:
                raise StatusError("OCSP response does not echo our nonce")
        this_update = single.this_update_utc.timestamp()
        next_update = _ts(single.next_update_utc)
        if this_update > now + self.skew:
            raise StatusError("OCSP thisUpdate is in the future")
        if next_update is not None and now >= next_update:
            raise StatusError("OCSP response is past its nextUpdate")
        status = single.certificate_status.name.lower()
        return StatusInfo(status, this_update, next_update, "staple")


class CrlSet:
    """Revoked serials from CRLs (signature checked against the issuer), a last resort."""

    def __init__(self) -> None:
        self._crls: dict[bytes, tuple[frozenset[int], float, float | None]] = {}

    def add(self, der: bytes, issuer: x509.Certificate) -> None:
        """Add (or replace) the CRL of ``issuer``; ``ValueError`` if it does not verify."""
        crl = x509.load_der_x509_crl(der)
        if crl.issuer != issuer.subject or not crl.is_signature_valid(
            issuer.public_key()  # type: ignore[arg-type]
        ):
            raise ValueError("CRL is not signed by this issuer")
        serials = frozenset(r.serial_number for r in crl)
        self._crls[issuer.fingerprint(hashes.SHA256())] = (
            serials,
            crl.last_update_utc.timestamp(),
            _ts(crl.next_update_utc),
        )

    def lookup(self, entry: ChainEntry, now: float) -> StatusInfo | None:
        found = self._crls.get(entry.issuer.fingerprint(hashes.SHA256()))
        if found is None:
            return None
        serials, this_update, next_update = found
        if next_update is not None and now >= next_update:
            return None
        status = REVOKED if entry.serial in serials else GOOD
        return StatusInfo(status, this_update, next_update, "crl")


Fetcher = Callable[[str, bytes, float], bytes]


def urllib_fetch(url: str, request_der: bytes, timeout: float) -> bytes:
    """POST an OCSP request with urllib."""
    req = urllib.request.Request(
        url,
        data=request_der,
        method="POST",
        headers={"Content-Type": "application/ocsp-request"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read(64 * 1024))


class StatusChecker:
    """Decides a certificate's status without network I/O whenever it can (see module doc).

    ``max_age``: freshness window (s). ``fetch``: allow fetching from the AIA OCSP URL.
    ``refresh``: keep recently used cache entries fresh from a background thread.
    """

    def __init__(
        self,
        max_age: float = 1.0,
        fetch: bool = True,
        refresh: bool = True,
        fetch_timeout: float = 2.0,
        idle_seconds: float = 60.0,
        crls: CrlSet | None = None,
        skew: float = 5.0,
        fetcher: Fetcher = urllib_fetch,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
    ) -> None:
        self.max_age = max_age
        self.fetch = fetch
        self.refresh = refresh
        self.fetch_timeout = fetch_timeout
        self.idle_seconds = idle_seconds
        self.crls = crls
        self.fetcher = fetcher
        self.clock = clock
        self.max_entries = max_entries
        self.validator = OcspValidator(skew)
        self._staples: dict[str, StatusInfo] = {}
        self._cache: dict[int, tuple[StatusInfo, ChainEntry]] = {}
        self._revoked: dict[int, float] = {}  # serial -> certificate notAfter
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.fetches = 0

    # -- request path ----------------------------------------------------------------------
    def check(self, entry: ChainEntry, staple_header: str | None, now: float) -> str:
        """``"staple"``, ``"cache"``, ``"fetch"`` or ``"crl"``; raises :class:`Denied`."""
        serial = entry.serial
        if serial in self._revoked:
            raise Denied(Check.REVOKED, f"certificate {entry.identity.serial} is revoked")
        if staple_header:
            info = self._staples.get(staple_header)
            if info is None:
                info = self._staple(staple_header, entry, now)
            if info.status == REVOKED:
                self._mark_revoked(entry)
            if info.status != GOOD and info.status != REVOKED:
                raise Denied(Check.STATUS_UNKNOWN, "stapled OCSP response says 'unknown'")
            if now - info.as_of <= self.max_age and (
                info.next_update is None or now < info.next_update
            ):
                return "staple"
        cached = self._cache.get(serial)
        if cached is not None:
            info = cached[0]
            info.last_used = now
            if now - info.as_of <= self.max_age and (
                info.next_update is None or now < info.next_update
            ):
                return self._decide(info, entry, "cache")
        if self.fetch and entry.ocsp_url:
            try:
                info = self.fetch_now(entry)
            except StatusError as exc:
                log.warning("OCSP fetch for %s failed: %s", entry.identity.serial, exc)
            else:
                return self._decide(info, entry, "fetch")
        if self.crls is not None:
            found = self.crls.lookup(entry, now)
            if found is not None:
                return self._decide(found, entry, "crl")
        raise Denied(
            Check.STATUS_UNKNOWN,
            f"no fresh status for certificate {entry.identity.serial} "
            f"(stapled, cached, fetched or CRL)",
        )

    def _decide(self, info: StatusInfo, entry: ChainEntry, source: str) -> str:
        if info.status == REVOKED:
            self._mark_revoked(entry)
        if info.status != GOOD:
            raise Denied(Check.STATUS_UNKNOWN, f"OCSP says '{info.status}'")
        return source

    def _mark_revoked(self, entry: ChainEntry) -> None:
        with self._lock:
            if len(self._revoked) >= self.max_entries:
                now = self.clock()
                for serial in [s for s, end in self._revoked.items() if end < now]:
                    del self._revoked[serial]
            self._revoked[entry.serial] = entry.valid_until
            self._cache.pop(entry.serial, None)
        raise Denied(Check.REVOKED, f"certificate {entry.identity.serial} is revoked")

    def _staple(self, header: str, entry: ChainEntry, now: float) -> StatusInfo:
        try:
            item = sf.parse_item(header)
        except sf.SFError as exc:
            raise Denied(Check.MALFORMED, f"Agentca-OCSP: {exc}") from None
        if not isinstance(item.value, bytes):
            raise Denied(Check.MALFORMED, "Agentca-OCSP must be a byte sequence")
        try:
            info = self.validator.validate(item.value, entry, now)
        except StatusError as exc:
            raise Denied(Check.STATUS_UNKNOWN, f"stapled OCSP response refused: {exc}") from None
        with self._lock:
            if len(self._staples) >= self.max_entries:
                self._staples.clear()
            self._staples[header] = info
        return info

    # -- own OCSP cache --------------------------------------------------------------------
    def fetch_now(self, entry: ChainEntry) -> StatusInfo:
        """Fetch, verify and cache the status of ``entry`` (network I/O)."""
        if not entry.ocsp_url:
            raise StatusError("no OCSP URL")
        nonce = os.urandom(16)
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(entry.leaf, entry.issuer, hashes.SHA256())
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        sent_at = self.clock()
        self.fetches += 1
        try:
            der = self.fetcher(entry.ocsp_url, request, self.fetch_timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StatusError(f"OCSP request to {entry.ocsp_url} failed: {exc}") from None
        info = self.validator.validate(der, entry, self.clock(), nonce=nonce)
        info.as_of = max(sent_at, info.as_of)
        info.source = "fetch"
        info.last_used = sent_at
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))
            self._cache[entry.serial] = (info, entry)
        if self.refresh:
            self._ensure_thread()
        return info

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="agentca-gateway-ocsp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background refresher."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.max_age / 4):
            now = self.clock()
            with self._lock:
                items = list(self._cache.items())
            for serial, (info, entry) in items:
                if now - info.last_used > self.idle_seconds or now >= entry.valid_until:
                    with self._lock:
                        self._cache.pop(serial, None)
                    continue
                if now - info.as_of >= self.max_age / 2:
                    try:
                        self.fetch_now(entry)
                    except (StatusError, Denied) as exc:
                        log.warning("OCSP refresh for %s failed: %s", entry.identity.serial, exc)

    def known_revoked(self) -> Iterable[int]:
        return list(self._revoked)
