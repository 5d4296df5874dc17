"""The answer-map file format (ocsp.answer_map): what is written is read back exactly, keys
that collide are told apart by their CertID, unknown CertIDs are absent, and a file that is
truncated, of another version or not a map at all is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ocsp.answer_map as answer_map
from ocsp.answer_map import FILE_NAME, AnswerMap, MapError, MappedAnswer, open_map, write_map


def _answers(n: int) -> list[MappedAnswer]:
    return [
        MappedAnswer(
            issuer_id=1 + i % 3,
            signer_id=7,
            serial_hex=format(0x10000 + i, "x"),
            cert_id_der=b"\x30\x10" + i.to_bytes(4, "big") + bytes(10),
            der=os.urandom(200 + i % 50),
            cert_status="revoked" if i % 5 == 0 else "issued",
            this_update=1_000 + i,
            next_update=4_600 + i,
            refresh_at=2_800 + i,
        )
        for i in range(n)
    ]


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    answers = _answers(500)
    path = tmp_path / FILE_NAME
    assert write_map(path, answers, built_at=123.5, feed_id=42) == 500
    mapped = AnswerMap(path)
    assert (mapped.count, mapped.built_at, mapped.feed_id) == (500, 123.5, 42)
    for answer in answers:
        assert mapped.get(answer.cert_id_der) == answer
    assert mapped.get(b"\x30\x10" + bytes(14)[:4] + b"\xff" * 10) is None
    assert not [p for p in tmp_path.iterdir() if p.name != FILE_NAME]  # no temporary left


def test_colliding_keys_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answer_map, "_key_hash", lambda der: 5)  # every key in one chain
    answers = _answers(40)
    path = tmp_path / FILE_NAME
    write_map(path, answers, built_at=1.0, feed_id=0)
    mapped = AnswerMap(path)
    for answer in answers:
        assert mapped.get(answer.cert_id_der) == answer
    assert mapped.get(b"\x30\x03\x02\x01\x01") is None


def test_an_empty_map_works(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    assert write_map(path, [], built_at=1.0, feed_id=0) == 0
    assert AnswerMap(path).get(b"\x30\x00") is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],  # truncated table
        lambda data: data[:30],  # shorter than a header
        lambda data: b"NOTAMAP!" + data[8:],
        lambda data: data[:8] + (99).to_bytes(4, "little") + data[12:],  # another version
    ],
)
def test_a_damaged_file_is_refused(tmp_path: Path, damage: object) -> None:
    path = tmp_path / FILE_NAME
    write_map(path, _answers(20), built_at=1.0, feed_id=0)
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(MapError):
        AnswerMap(path)
    assert open_map(path) is None


def test_no_file_is_no_map(tmp_path: Path) -> None:
    assert open_map(tmp_path / FILE_NAME) is None


def test_the_key_is_the_plain_request_cryptography_builds() -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp
    from cryptography.x509.oid import NameOID

    from ocsp.answer_map import _cert_id_of, plain_request
    from ocsp.request import parse_simple_request

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "map test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    for algorithm in (hashes.SHA1(), hashes.SHA256(), hashes.SHA512()):
        der = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, cert, algorithm)
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        request = parse_simple_request(der)
        assert request is not None
        cert_id = request.cert_ids[0].der
        assert plain_request(cert_id) == der
        assert _cert_id_of(der) == cert_id
    long_id = b"\x30\x81\x90" + bytes(0x90)  # lengths past 127 take the long form
    assert _cert_id_of(plain_request(long_id)) == long_id


def test_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    write_map(path, _answers(3), built_at=1.0, feed_id=0)
    path.chmod(0o666)
    with pytest.raises(MapError, match="writable by others"):
        AnswerMap(path)
    path.chmod(0o600)
    assert AnswerMap(path).count == 3


def test_the_header_carries_the_boot_and_the_monotonic_build_time(tmp_path: Path) -> None:
    from ocsp.answer_map import boot_id

    path = tmp_path / FILE_NAME
    write_map(path, _answers(1), built_at=1.0, feed_id=0, built_mono=123.25)
    mapped = AnswerMap(path)
    assert mapped.built_mono == 123.25 and mapped.boot_id == boot_id() != bytes(16)
