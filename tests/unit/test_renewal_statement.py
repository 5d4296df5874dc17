"""The renewal statement (agentca-renew-v2): one encoding in the CA and in the agent SDK.

Both use :func:`wire.renewal.renewal_statement` (there is no copy left); these tests hold the
names the SDK and the CA export to that one function and the encoding unambiguous.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent.csr import renewal_statement as agent_statement
from agent.csr import sign_statement
from ca.proof import renewal_statement as ca_statement
from ca.proof import verify_statement
from wire.renewal import renewal_statement as wire_statement


def test_one_function() -> None:
    assert agent_statement is wire_statement
    assert ca_statement is wire_statement


CSR, CERT = b"\x30\x03csr", b"\x30\x04cert"

CASES = [
    (1795690000, CSR, CERT, None, None),
    (1795690000, CSR, CERT, (), None),
    (1795690000, CSR, CERT, ("query_order_book",), None),
    (1795690000, CSR, CERT, ("b", "a"), 60),
    (1795690000, CSR, CERT, ("a,b",), 60),
    (1795690000, CSR, CERT, ("a", "b"), 60),
    (1795690000, CSR, CERT, ("ab",), 60),
    (1795690000, CSR, CERT, ("",), 60),
    (1795690000, CSR, CERT, None, 600),
    (1795690000, CSR, CERT, None, 6000),
    (1795690001, CSR, CERT, None, None),
    (1795690000, CERT, CSR, None, None),
    (1795690000, CSR, CERT, ("ümlaut",), 1),
    (-1, b"", b"", None, None),
]


@pytest.mark.parametrize("case", CASES)
def test_the_sdk_and_the_ca_produce_identical_bytes(case: tuple) -> None:  # type: ignore[type-arg]
    assert agent_statement(*case) == ca_statement(*case)


def test_every_member_changes_the_statement() -> None:
    statements = [ca_statement(*case) for case in CASES]
    assert len(set(statements)) == len(statements)


def test_documented_layout() -> None:
    """The exact bytes docs/agents.md describes, so other languages can implement them."""

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    got = ca_statement(1795690000, CSR, CERT, ("a", "bc"), 3600)
    want = b"".join(
        [
            field(b"agentca-renew-v2"),
            field(b"1795690000"),
            field(hashlib.sha256(CSR).digest()),
            field(hashlib.sha256(CERT).digest()),
            field(b"\x01" + b"\x00\x00\x00\x02" + field(b"a") + field(b"bc")),
            field(b"\x01" + b"3600"),
        ]
    )
    assert got == want
    assert ca_statement(1795690000, CSR, CERT).endswith(field(b"\x00") + field(b"\x00"))
    assert got.hex().startswith("000000106167656e7463612d72656e65772d7632")


def test_no_v1_statement_verifies_as_v2() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    v1 = b"agentca-renew-v1\n1795690000\n" + hashlib.sha256(CSR).digest()
    v2 = ca_statement(1795690000, CSR, CERT)
    assert not verify_statement(key.public_key(), sign_statement(key, v1), v2)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["p256", "p384", "ed25519", "rsa2048"],
)
def test_signed_by_the_sdk_verified_by_the_ca_and_bound_to_the_request(key: object) -> None:
    data = agent_statement(1795690000, CSR, CERT, ("a",), 60)
    signature = sign_statement(key, data)  # type: ignore[arg-type]
    public = key.public_key()  # type: ignore[attr-defined]
    assert verify_statement(public, signature, ca_statement(1795690000, CSR, CERT, ("a",), 60))
    for other in itertools.islice(CASES, 0, None):
        assert not verify_statement(public, signature, ca_statement(*other))


def test_a_lone_surrogate_in_a_scope_is_a_statement_not_a_crash() -> None:
    """POST /v1/renew parses JSON with the standard library, which turns ``"\\ud800"`` into a
    lone surrogate; the CA builds the statement before it validates scopes, and a strict UTF-8
    encode raised UnicodeEncodeError there: an unauthenticated 500 for anyone holding a public
    agent certificate. The encoding stays injective (surrogatepass)."""
    lone = ca_statement(1795690000, CSR, CERT, ("\ud800",), None)
    pair = ca_statement(1795690000, CSR, CERT, ("\ud83d\ude00",), None)
    emoji = ca_statement(1795690000, CSR, CERT, ("\U0001f600",), None)
    assert len({lone, pair, emoji}) == 3
    assert ca_statement(1795690000, CSR, CERT, ("ab",), None) == agent_statement(
        1795690000, CSR, CERT, ("ab",), None
    )
