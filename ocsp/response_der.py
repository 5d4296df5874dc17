"""OCSP responses written as DER directly: the fast builder the responder signs with.

``build_response_der`` takes the same inputs as ``ocsp.response.build_basic_response`` and
returns the same bytes (tests/unit/test_ocsp_response_der.py compares them byte for byte with
deterministic keys), without building asn1crypto objects: the parts that never change for a
signer (ResponderID, signature algorithm, certificate) are encoded once per signer, and a
response is a few byte concatenations around the signature. Issue 15 item 2, decision 0037.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from asn1crypto import algos as asn1_algos

from ocsp.decision import CertState
from ocsp.response import Signer, SingleAnswer, sign_data

_BASIC_OID = bytes.fromhex("06092b0601050507300101")  # id-pkix-ocsp-basic
_NONCE_EXT = bytes.fromhex("06092b0601050507300102")  # id-pkix-ocsp-nonce
_EXTENDED_REVOKE = bytes.fromhex("300f06092b060105050730010904020500")  # with NULL value
_GOOD = b"\x80\x00"  # certStatus good: [0] IMPLICIT NULL


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _len(len(content)) + content


def _time(value: datetime) -> bytes:
    """GeneralizedTime, whole seconds in UTC (RFC 5280 4.1.2.5.2)."""
    return _tlv(0x18, value.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


class _SignerParts:
    """The DER pieces of a signer that every response repeats."""

    __slots__ = ("algorithms", "certs", "responder_id")

    def __init__(self, signer: Signer) -> None:
        self.responder_id = _tlv(0xA2, _tlv(0x04, signer.key_hash))  # [2] EXPLICIT byKey
        self.certs = _tlv(0xA0, _tlv(0x30, signer.certificate_der))  # [0] EXPLICIT SEQUENCE OF
        self.algorithms: dict[str, bytes] = {}

    def algorithm(self, name: str) -> bytes:
        der = self.algorithms.get(name)
        if der is None:
            der = asn1_algos.SignedDigestAlgorithm({"algorithm": name}).dump()
            self.algorithms[name] = der
        return der


_PARTS: dict[int, tuple[Signer, _SignerParts]] = {}


def _parts(signer: Signer) -> _SignerParts:
    held = _PARTS.get(id(signer))
    if held is None or held[0] is not signer:
        if len(_PARTS) > 64:
            _PARTS.clear()
        held = (signer, _SignerParts(signer))
        _PARTS[id(signer)] = held
    return held[1]


def _status(answer: SingleAnswer) -> bytes:
    status = answer.status
    if status.state is CertState.GOOD:
        return _GOOD
    when = status.answer_time
    assert when is not None
    info = _time(when)
    reason = status.answer_reason
    if reason is not None:
        info += _tlv(0xA0, _tlv(0x0A, _enumerated(reason)))
    return _tlv(0xA1, info)  # [1] IMPLICIT RevokedInfo


def _enumerated(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)


def build_response_der(
    answers: Sequence[SingleAnswer],
    signer: Signer,
    produced_at: datetime,
    this_update: datetime,
    next_update: datetime,
    nonce: bytes | None = None,
) -> bytes:
    """A successful, signed ``OCSPResponse`` (see ``ocsp.response.build_basic_response``)."""
    parts = _parts(signer)
    times = _time(this_update) + _tlv(0xA0, _time(next_update))
    singles = b"".join(_tlv(0x30, a.cert_id_der + _status(a) + times) for a in answers)
    extensions = b""
    if nonce is not None:
        extensions += _tlv(0x30, _NONCE_EXT + _tlv(0x04, _tlv(0x04, nonce)))
    if any(a.status.state is CertState.UNISSUED for a in answers):
        extensions += _EXTENDED_REVOKE
    body = parts.responder_id + _time(produced_at) + _tlv(0x30, singles)
    if extensions:
        body += _tlv(0xA1, _tlv(0x30, extensions))
    tbs = _tlv(0x30, body)
    algorithm, signature = sign_data(signer.key, tbs)
    basic = _tlv(
        0x30, tbs + parts.algorithm(algorithm) + _tlv(0x03, b"\x00" + signature) + parts.certs
    )
    response_bytes = _tlv(0xA0, _tlv(0x30, _BASIC_OID + _tlv(0x04, basic)))
    return _tlv(0x30, b"\x0a\x01\x00" + response_bytes)
