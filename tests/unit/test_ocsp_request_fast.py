"""The byte-level fast path of ``ocsp.request.parse_request`` against asn1crypto's full parse:
wherever the fast path answers, the answer is the same; every other shape falls through."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import CAError
from ocsp.request import parse_full_request, parse_request, parse_simple_request

ALGORITHMS = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384()}


def _request(serial: int, algorithm: str, nonce: bytes | None = None) -> bytes:
    hash_algorithm = ALGORITHMS[algorithm]
    size = hash_algorithm.digest_size
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        b"\x01" * size, b"\x02" * size, serial, hash_algorithm
    )
    if nonce is not None:
        from cryptography import x509

        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**159), st.sampled_from(sorted(ALGORITHMS)))
def test_the_fast_path_reads_what_asn1crypto_reads(serial: int, algorithm: str) -> None:
    der = _request(serial, algorithm)
    fast = parse_simple_request(der)
    assert fast is not None
    assert fast == parse_full_request(der)
    assert fast.cert_ids[0].serial_number == serial


def test_a_nonce_request_takes_the_full_parser() -> None:
    der = _request(5, "sha1", b"n" * 16)
    assert parse_simple_request(der) is None
    assert parse_request(der).nonce == b"n" * 16


def test_the_cert_id_der_is_echoed_verbatim_with_or_without_null_parameters() -> None:
    der = _request(7, "sha1")
    with_null = parse_simple_request(der)
    assert with_null is not None and b"\x05\x00" in with_null.cert_ids[0].der
    # the same request without the NULL parameters (some clients send that)
    without = der.replace(
        b"\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00", b"\x30\x07\x06\x05\x2b\x0e\x03\x02\x1a"
    )
    fixed = bytearray(without)
    # the five enclosing lengths shrink by two
    for i in (1, 3, 5, 7, 9):
        fixed[i] -= 2
    other = parse_simple_request(bytes(fixed))
    assert other is not None and other == parse_full_request(bytes(fixed))
    assert other.cert_ids[0].der != with_null.cert_ids[0].der


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 2**64), st.data())
def test_a_mutated_request_is_read_the_same_or_left_to_the_full_parser(
    serial: int, data: st.DataObject
) -> None:
    der = bytearray(_request(serial, "sha1"))
    for _ in range(data.draw(st.integers(1, 3))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    mutated = bytes(der)
    fast = parse_simple_request(mutated)
    if fast is None:
        return
    try:
        full = parse_full_request(mutated)
    except CAError:
        pytest.fail(f"the fast path accepted what asn1crypto refuses: {mutated.hex()}")
    assert fast == full
