"""RFC 9440 Client-Cert field codec (wire.client_cert)."""

from __future__ import annotations

import pytest

from wire.client_cert import (
    ClientCertError,
    decode_client_cert,
    decode_client_cert_chain,
    encode_client_cert,
    encode_client_cert_chain,
)


def test_round_trip() -> None:
    der = b"\x30\x03\x02\x01\x01"
    assert decode_client_cert(encode_client_cert(der)) == der
    chain = [b"\x30\x01\x00", b"\x30\x02\x00\x00"]
    assert decode_client_cert_chain(encode_client_cert_chain(chain)) == chain
    assert decode_client_cert_chain("") == []


def test_rfc9440_shape() -> None:
    # RFC 9440 section 2.2: colon-delimited base64, no parameters.
    assert encode_client_cert(b"\x01\x02") == ":AQI=:"
    assert decode_client_cert(" :AQI=: ") == b"\x01\x02"


@pytest.mark.parametrize("value", ["AQI=", ":AQI=:;a=1", '"x"', "::", ":AQI=:, :AQI=:", ":@@:"])
def test_client_cert_rejects(value: str) -> None:
    with pytest.raises(ClientCertError):
        decode_client_cert(value)


@pytest.mark.parametrize("value", ["(:AQI=:)", ":AQI=:, 5", "::", ":AQI=:,"])
def test_chain_rejects(value: str) -> None:
    with pytest.raises(ClientCertError):
        decode_client_cert_chain(value)


def test_bounds() -> None:
    with pytest.raises(ClientCertError):
        decode_client_cert(encode_client_cert(b"\x00" * 20000))
    with pytest.raises(ClientCertError):
        decode_client_cert_chain(encode_client_cert_chain([b"\x01"] * 9))
