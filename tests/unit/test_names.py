"""Validators in ca.names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca.errors import CAError, ErrorCode
from ca.names import (
    normalise_scopes,
    parse_sha256_hex,
    validate_agent_name,
    validate_environment,
    validate_officer,
    validate_organization,
    validate_scope,
    validate_trust_domain,
)

SCOPES = st.from_regex(r"[a-z][a-z0-9_]{0,12}(?:[.:][a-z0-9_]{1,8}){0,3}", fullmatch=True)


def code_of(fn: object, value: object) -> ErrorCode:
    with pytest.raises(CAError) as info:
        fn(value)  # type: ignore[operator]
    return info.value.code


@pytest.mark.parametrize(
    "scope", ["submit_limit_order", "orders:write", "a", "trade.eth:read", "x1_2", "a" * 64]
)
def test_valid_scopes(scope: str) -> None:
    assert validate_scope(scope) == scope


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "Orders",
        "1orders",
        "_x",
        "orders:",
        "orders::write",
        "orders:Write",
        "orders write",
        "orders/write",
        "orders-write",
        "orders\n",
        "a" * 65,
        "ordérs",
        None,
        b"orders",
    ],
)
def test_invalid_scopes(scope: object) -> None:
    assert code_of(validate_scope, scope) is ErrorCode.INVALID_SCOPE


def test_normalise_scopes_sorts_and_dedupes() -> None:
    assert normalise_scopes(["orders:write", "a", "orders:write", "b.c"]) == (
        "a",
        "b.c",
        "orders:write",
    )


@pytest.mark.parametrize("scopes", [[], "orders", ["ok", "Bad"], [f"s{i}" for i in range(65)], 5])
def test_normalise_scopes_rejects(scopes: object) -> None:
    assert code_of(normalise_scopes, scopes) is ErrorCode.INVALID_SCOPE


def test_normalise_scopes_allows_64() -> None:
    assert len(normalise_scopes([f"s{i:02d}" for i in range(64)])) == 64


@given(st.lists(SCOPES, min_size=1, max_size=20))
def test_normalise_scopes_idempotent(scopes: list[str]) -> None:
    once = normalise_scopes(scopes)
    assert once == normalise_scopes(reversed(once)) == tuple(sorted(set(scopes)))


@pytest.mark.parametrize(
    "name", ["ExecutionAgent-ETH-01", "a", "agent.v2", "A_b-c.d", "9lives", "x" * 64]
)
def test_valid_agent_names(name: str) -> None:
    assert validate_agent_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-agent", ".agent", "..", "a/b", "a b", "agent\n", "x" * 65, "agént", 1]
)
def test_invalid_agent_names(name: object) -> None:
    assert code_of(validate_agent_name, name) is ErrorCode.INVALID_NAME


@pytest.mark.parametrize(
    "email", ["alice@example.com", "risk.officer+agents@bank.co.uk", "a@b.io", "O'Neil@x-y.org"]
)
def test_valid_officers(email: str) -> None:
    assert validate_officer(email) == email


@pytest.mark.parametrize(
    "email",
    [
        "",
        "alice",
        "alice@localhost",
        "@example.com",
        "alice@",
        "alice@@example.com",
        "al ice@example.com",
        "alicé@example.com",
        "alice@exa_mple.com",
        "alice@-example.com",
        ".alice@example.com",
        "alice@example.com\n",
        "a" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        None,
    ],
)
def test_invalid_officers(email: object) -> None:
    assert code_of(validate_officer, email) is ErrorCode.INVALID_NAME


@pytest.mark.parametrize("env", ["prod", "prod-eu-1", "Staging (shadow)", "ünïcode ok", "x" * 64])
def test_valid_environments(env: str) -> None:
    assert validate_environment(env) == env


@pytest.mark.parametrize("env", ["", "x" * 65, "prod\n", "a\tb", "\x00", " prod", "prod ", 3])
def test_invalid_environments(env: object) -> None:
    assert code_of(validate_environment, env) is ErrorCode.INVALID_NAME


def test_organization() -> None:
    assert validate_organization("Acme Trading GmbH") == "Acme Trading GmbH"
    assert code_of(validate_organization, "x" * 129) is ErrorCode.INVALID_NAME
    assert code_of(validate_organization, "a\x1bb") is ErrorCode.INVALID_NAME


def test_parse_sha256_hex() -> None:
    hexa = "AB" * 32
    assert parse_sha256_hex(hexa) == b"\xab" * 32
    assert parse_sha256_hex("sha256:" + hexa.lower()) == b"\xab" * 32
    assert parse_sha256_hex("SHA256:" + hexa) == b"\xab" * 32


@pytest.mark.parametrize(
    "text", ["", "ab" * 31, "ab" * 33, "zz" * 32, "sha384:" + "ab" * 32, "ab" * 32 + "\n", None]
)
def test_parse_sha256_hex_rejects(text: object) -> None:
    assert code_of(parse_sha256_hex, text) is ErrorCode.INVALID_DIGEST


@pytest.mark.parametrize("td", ["example.org", "prod_agents-1.corp", "a"])
def test_valid_trust_domains(td: str) -> None:
    assert validate_trust_domain(td) == td


@pytest.mark.parametrize("td", ["", "Example.org", "a/b", "a:8080", "x" * 256, "td\n"])
def test_invalid_trust_domains(td: str) -> None:
    assert code_of(validate_trust_domain, td) is ErrorCode.INVALID_NAME


# -- the admission profile (issue 9 item 10: look-alike identifiers, UTS #39) -----------------
from ca.names import admit_identifier, admit_text, identifier_key, scripts_of  # noqa: E402


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("AgentA", "agenta"),
        ("exec-agent-1", "exec-agent-l"),
        ("exec-agent-I", "exec-agent-l"),
        ("agent-0", "agent-O"),
        ("arm", "arrn"),
        ("prod", "pr\u043ed"),  # Cyrillic o
        ("PROD", "\u0440rod"),  # Cyrillic er
        ("\uff50\uff52\uff4f\uff44", "prod"),  # fullwidth (NFKC)
    ],
)
def test_look_alikes_share_a_key(a: str, b: str) -> None:
    assert identifier_key(a) == identifier_key(b)


@pytest.mark.parametrize(("a", "b"), [("agent-a", "agent-b"), ("agent_1", "agent-1"), ("i", "l")])
def test_distinct_identifiers_keep_distinct_keys(a: str, b: str) -> None:
    assert identifier_key(a) != identifier_key(b)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True))
def test_key_is_idempotent_on_agent_names(name: str) -> None:
    assert identifier_key(identifier_key(name)) == identifier_key(name)


@pytest.mark.parametrize("value", ["prod", "production-eu-west-1", "Staging (shadow)", "gpt-4o"])
def test_admitted_identifiers(value: str) -> None:
    assert admit_identifier(value, "environment") == value


@pytest.mark.parametrize("value", ["pr\u043ed", "ünïcode", "prod\u200b", "\u202eprod", 3])
def test_refused_identifiers(value: object) -> None:
    assert code_of(lambda v: admit_identifier(v, "environment"), value) is ErrorCode.INVALID_NAME


@pytest.mark.parametrize(
    "text",
    [
        "Acme Trading GmbH",
        "Société Générale",
        "Müller & Söhne AG",
        "Сбербанк",  # all Cyrillic: one script
        "株式会社トヨタ Toyota",  # Latin + Han + Katakana (Highly Restrictive)
        "삼성전자 Samsung",  # Latin + Hangul
    ],
)
def test_admitted_text(text: str) -> None:
    assert admit_text(text, "organization", 128) == text


@pytest.mark.parametrize(
    "text",
    [
        "B\u0430nk",  # Latin with a Cyrillic a: mixed script
        "Acme\u200bBank",  # zero-width space
        "Acme\u202eBank",  # bidi override
        "Acme\u00adBank",  # soft hyphen (format character)
        "Acme\u2019s",  # non-ASCII punctuation
        "Cafe\u0301",  # not NFC
        "\u0301Acme",  # a mark with no letter before it
        "\u0391cme",  # Greek Alpha with Latin
        "Acme\tBank",
    ],
)
def test_refused_text(text: str) -> None:
    assert code_of(lambda v: admit_text(v, "organization", 128), text) is ErrorCode.INVALID_NAME


def test_scripts_of_ignores_digits_and_punctuation() -> None:
    assert scripts_of("Acme 2026 & Co.") == {"LATIN"}
