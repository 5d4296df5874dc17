"""Certificate status for the gateway: stapled OCSP, its own OCSP cache, or a CRL set.

Freshness rule: status information older than ``max_age`` seconds is never acted on. For a
staple the age is ``now - thisUpdate`` (responses have one-second resolution, so this errs on
the old side); for a response the gateway fetched itself (with a nonce, so it was signed
after the request left) the age runs from the moment of the request. With the responder's
own propagation (a revoke reaches its answers within its poll interval, 0.2 s), a revocation
is enforced within about ``max_age`` + 0.2 s; ``max_age=0.8`` makes that a hard 1 s.

Binding (docs/decisions/0005): status is always about one certificate, named by the key
``(SHA-256 of the issuer's public key, serial)`` of the verified chain. A staple is checked
against that certificate's CertID every time it is used (a cached validation is reused only
for the same certificate *and* the same staple bytes), and what a request brings enters the
shared cache only through :meth:`StatusChecker.commit`, after the request's signature has
verified. The gateway's own fetches (network I/O) also happen only after the signature.

Order (:meth:`StatusChecker.check`, before the signature, no network): a certificate known
revoked is refused; then a valid, fresh staple; then a fresh cache entry (kept fresh by a
background thread); then, if the gateway may not fetch, the CRL set. Otherwise the status is
resolved after the signature (:meth:`StatusChecker.resolve`): a synchronous fetch, then the
CRL set; otherwise ``status-unknown`` (fail closed).

Why one module of this size: every status source (staple, cache, CRL, background refresh) behind
one binding rule, status bound to (issuer key hash, serial), which must hold for all of them.
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

from gateway.chain import ChainEntry, StatusKey
from gateway.problems import Check, Denied
from wire import sf
from wire.refresh import Refresher

log = logging.getLogger("agentca.gateway.status")

GOOD, REVOKED = "good", "revoked"


@dataclass
class StatusInfo:
    """What one verified OCSP answer (or CRL look-up) says about one serial."""

    status: str  # good | revoked | unknown
    as_of: float  # thisUpdate (staple) or request time (own fetch)
    next_update: float | None
    source: str
    on_hold: bool = False  # revoked with reason certificateHold (may be lifted)


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

    def _responder_until(
        self, cert: x509.Certificate, issuer: x509.Certificate, now: float
    ) -> float | None:
        """The responder certificate's notAfter if ``issuer`` certified it for OCSP signing
        and it is valid now, else None. Only genuine responder certificates are cached."""
        key = (cert.public_bytes(serialization.Encoding.DER), issuer.fingerprint(hashes.SHA256()))
        until = self._responders.get(key)
        if until is not None:
            valid = cert.not_valid_before_utc.timestamp() <= now < until
            return until if valid else None
        try:
            cert.verify_directly_issued_by(issuer)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return None
        if ExtendedKeyUsageOID.OCSP_SIGNING not in list(eku):
            return None
        until = cert.not_valid_after_utc.timestamp()
        if not cert.not_valid_before_utc.timestamp() <= now < until:
            return None
        if len(self._responders) >= 1000:
            self._responders.clear()
        self._responders[key] = until
        return until

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
        hashes_by_alg = entry.issuer_ids
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
        signer_until: float | None = None
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
                if matches:
                    signer_until = self._responder_until(cert, issuer, now)
                    if signer_until is not None:
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
        if signer_until is not None:  # never trust an answer past its signer's expiry
            next_update = signer_until if next_update is None else min(next_update, signer_until)
        status = single.certificate_status.name.lower()
        on_hold = (
            status == REVOKED and single.revocation_reason is x509.ReasonFlags.certificate_hold
        )
        return StatusInfo(status, this_update, next_update, "staple", on_hold)


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


@dataclass
class _Slot:
    """The cached status of one certificate: the info, the chain entry (for refreshes), and
    the staple text it was validated from (``None`` for the gateway's own fetches)."""

    info: StatusInfo
    entry: ChainEntry
    staple: str | None
    fetched: bool
    last_used: float = 0.0


@dataclass(frozen=True)
class StatusOutcome:
    """What :meth:`StatusChecker.check` found before the signature was checked."""

    source: str | None  # "staple", "cache", "crl"; None: to be resolved after the signature
    pending: _Slot | None = None  # a validated staple, to cache once the signature verifies


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
        self._status: dict[StatusKey, _Slot] = {}
        self._revoked: dict[StatusKey, float] = {}  # -> the certificate's notAfter
        self._lock = threading.Lock()
        self._refresher = Refresher(
            "agentca-gateway-ocsp", self._refresh_step, lambda: self.max_age / 4, first_wait=True
        )
        self.fetches = 0

    def _fresh(self, info: StatusInfo, now: float) -> bool:
        return now - info.as_of <= self.max_age and (
            info.next_update is None or now < info.next_update
        )

    # -- request path ----------------------------------------------------------------------
    def check(self, entry: ChainEntry, staple_header: str | None, now: float) -> StatusOutcome:
        """Status from what is at hand (no network); raises :class:`Denied`."""
        key = entry.status_key
        if key in self._revoked:
            raise Denied(Check.REVOKED, f"certificate {entry.identity.serial} is revoked")
        slot = self._status.get(key)
        if staple_header:
            pending = None
            if (
                slot is not None
                and slot.staple == staple_header
                and slot.entry.fingerprint == entry.fingerprint
            ):
                info = slot.info  # validated for this very certificate, from these bytes
            else:
                info = self._staple(staple_header, entry, now)
                pending = _Slot(info, entry, staple_header, False)
            if info.status == REVOKED:
                raise Denied(Check.REVOKED, f"certificate {entry.identity.serial} is revoked")
            if info.status != GOOD:
                raise Denied(Check.STATUS_UNKNOWN, "stapled OCSP response says 'unknown'")
            if self._fresh(info, now):
                return StatusOutcome("staple", pending)
        if slot is not None and self._fresh(slot.info, now):
            slot.last_used = now
            self._decide(slot.info, entry)
            return StatusOutcome("cache")
        if self.fetch and entry.ocsp_url:
            return StatusOutcome(None)
        return StatusOutcome(self._from_crl(entry, now))

    def commit(self, entry: ChainEntry, outcome: StatusOutcome) -> None:
        """Cache what ``outcome`` validated; call only once the request's signature verified."""
        pending = outcome.pending
        if pending is None:
            return
        key = entry.status_key
        with self._lock:
            current = self._status.get(key)
            if current is not None and current.info.as_of > pending.info.as_of:
                return  # keep the fresher answer
            if current is None:
                self._make_room()
            pending.last_used = pending.info.as_of
            self._status[key] = pending

    def resolve(self, entry: ChainEntry, now: float) -> str:
        """After the signature verified: ``"fetch"`` or ``"crl"``; raises :class:`Denied`."""
        try:
            info = self.fetch_now(entry)
        except StatusError as exc:
            log.warning("OCSP fetch for %s failed: %s", entry.identity.serial, exc)
        else:
            self._decide(info, entry)
            return "fetch"
        return self._from_crl(entry, now)

    def _from_crl(self, entry: ChainEntry, now: float) -> str:
        if self.crls is not None:
            found = self.crls.lookup(entry, now)
            if found is not None:
                self._decide(found, entry)
                return "crl"
        raise Denied(
            Check.STATUS_UNKNOWN,
            f"no fresh status for certificate {entry.identity.serial} "
            f"(stapled, cached, fetched or CRL)",
        )

    def _decide(self, info: StatusInfo, entry: ChainEntry) -> None:
        if info.status == REVOKED:
            if info.source == "fetch" and not info.on_hold:
                self._mark_revoked(entry)  # our own nonce-bound answer; a hold may be lifted
            raise Denied(Check.REVOKED, f"certificate {entry.identity.serial} is revoked")
        if info.status != GOOD:
            raise Denied(Check.STATUS_UNKNOWN, f"OCSP says '{info.status}'")

    def _make_room(self) -> None:
        """Under the lock: drop the oldest entries until one more fits."""
        while len(self._status) >= self.max_entries:
            self._status.pop(next(iter(self._status)))

    def _mark_revoked(self, entry: ChainEntry) -> None:
        with self._lock:
            if len(self._revoked) >= self.max_entries:
                now = self.clock()
                for key in [k for k, end in self._revoked.items() if end < now]:
                    del self._revoked[key]
                while len(self._revoked) >= self.max_entries:  # only an optimisation: the
                    self._revoked.pop(next(iter(self._revoked)))  # responder still says so
            self._revoked[entry.status_key] = entry.valid_until
            self._status.pop(entry.status_key, None)

    def _staple(self, header: str, entry: ChainEntry, now: float) -> StatusInfo:
        try:
            item = sf.parse_item(header)
        except sf.SFError as exc:
            raise Denied(Check.MALFORMED, f"Agentca-OCSP: {exc}") from None
        if not isinstance(item.value, bytes):
            raise Denied(Check.MALFORMED, "Agentca-OCSP must be a byte sequence")
        try:
            return self.validator.validate(item.value, entry, now)
        except StatusError as exc:
            raise Denied(Check.STATUS_UNKNOWN, f"stapled OCSP response refused: {exc}") from None

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
        with self._lock:
            key = entry.status_key
            if key not in self._status:
                self._make_room()
            previous = self._status.get(key)
            slot = _Slot(info, entry, None, True)
            slot.last_used = previous.last_used if previous is not None else sent_at
            self._status[key] = slot
        if self.refresh and not self._refresher.running:
            self._refresher.start()
        return info

    def stop(self) -> None:
        """Stop the background refresher."""
        self._refresher.stop()

    def _refresh_step(self) -> None:
        """One pass of the background refresher: drop idle or expired entries, re-fetch the
        ones past half their freshness window."""
        now = self.clock()
        with self._lock:
            items = [(k, s) for k, s in self._status.items() if s.fetched]
        for key, slot in items:
            info, entry = slot.info, slot.entry
            if now - slot.last_used > self.idle_seconds or now >= entry.valid_until:
                with self._lock:
                    if self._status.get(key) is slot:
                        del self._status[key]
                continue
            if now - info.as_of >= self.max_age / 2:
                try:
                    self.fetch_now(entry)
                except (StatusError, Denied) as exc:
                    log.warning("OCSP refresh for %s failed: %s", entry.identity.serial, exc)

    def known_revoked(self) -> Iterable[StatusKey]:
        """The (issuer key hash, serial) pairs the gateway's own fetches found revoked."""
        return list(self._revoked)
