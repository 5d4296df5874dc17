"""The CLI's output helpers (cli/output.py): serial forms, names, times, flag conflicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import click
import pytest
from click.testing import CliRunner

from ca.records import CertificateRecord, CertStatus
from ca.revocation import RevocationReason
from ca.serials import parse_any_serial, serial_to_hex
from cli.output import (
    agent_json,
    certificate_json,
    cli_json,
    cli_serial,
    refuse_together,
    rfc3339,
    serial_arg,
    state_of,
    table,
)

# 159-bit serials as `openssl x509 -serial` prints them: uppercase, whole octets. The second
# has a top nibble of 0, so its stored form has 39 digits and openssl prints a leading 0.
OPENSSL_FORMS = {
    0x5A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203: "5A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203",
    0x0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203: "0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203",
    0x01: "01",
    0xABC: "0ABC",
}


def openssl_serial(value: int) -> str:
    """What OpenSSL's i2a_ASN1_INTEGER prints: the DER content octets in uppercase hex (a
    positive INTEGER whose top bit is set gets a 00 octet in DER, which openssl drops)."""
    octets = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return octets.hex().upper()


@pytest.mark.parametrize("value", sorted(OPENSSL_FORMS))
def test_cli_serial_is_the_openssl_form(value: int) -> None:
    assert cli_serial(value) == OPENSSL_FORMS[value] == openssl_serial(value)
    stored = serial_to_hex(value)
    assert cli_serial(stored) == OPENSSL_FORMS[value]  # from the database's form


def test_a_top_nibble_of_zero_keeps_its_leading_zero() -> None:
    value = 0x0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203
    assert len(serial_to_hex(value)) == 39
    assert len(cli_serial(value)) == 40 and cli_serial(value).startswith("0A")


@pytest.mark.parametrize(
    "text",
    [
        "0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203",  # openssl
        "a3f9c0d1e2b4a6c8e0f1a2b3c4d5e6f70819203",  # stored: lowercase, no leading zero
        "0a3f9c0d1e2b4a6c8e0f1a2b3c4d5e6f70819203",
        "000A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203",  # extra leading zeros
        "0x0a3f9c0d1e2b4a6c8e0f1a2b3c4d5e6f70819203",
        "0XA3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203",
        "0A:3F:9C:0D:1E:2B:4A:6C:8E:0F:1A:2B:3C:4D:5E:6F:70:81:92:03",  # colon-separated
        "0a 3f 9c 0d 1e 2b 4a 6c 8e 0f 1a 2b 3c 4d 5e 6f 70 81 92 03",
        "serial=0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203",  # openssl -serial's line
        "  0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203\n",
    ],
)
def test_every_serial_form_is_accepted(text: str) -> None:
    expected = 0x0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203
    assert parse_any_serial(text) == expected
    assert serial_arg(text) == "0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203"


@pytest.mark.parametrize("text", ["", "0x", "00", "xyz", "12g4", "-5", "1" * 41, "0x-1"])
def test_what_is_not_a_serial_is_one_bad_request(text: str) -> None:
    from ca.errors import CAError, ErrorCode

    with pytest.raises(CAError) as info:
        serial_arg(text)
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_times_are_rfc3339_utc_with_z() -> None:
    utc = datetime(2026, 12, 6, 9, 30, 15, 123456, tzinfo=UTC)
    assert rfc3339(utc.astimezone(timezone(timedelta(hours=2)))) == "2026-12-06T09:30:15Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive: UTC
    assert rfc3339("2026-01-02T03:04:05+00:00") == "2026-01-02T03:04:05Z"
    assert rfc3339(None) is None
    nested = cli_json(
        {"expires_at": "2026-01-02T03:04:05.5+00:00", "p": [{"accepted_until": "2026-01-02"}]}
    )
    assert nested == {
        "expires_at": "2026-01-02T03:04:05Z",
        "p": [{"accepted_until": "2026-01-02T00:00:00Z"}],
    }


def _record(**change: object) -> CertificateRecord:
    now = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "issuer_name": "issuing",
        "serial_hex": "a3f9c0d1e2b4a6c8e0f1a2b3c4d5e6f70819203",
        "status": CertStatus.ISSUED,
        "agent_name": "ExecutionAgent-01",
        "subject": "CN=ExecutionAgent-01",
        "model_type": "m",
        "model_digest": "00" * 32,
        "prompt_digest": "11" * 32,
        "config_digest": None,
        "scopes": ("read_book",),
        "officer": "o@example.com",
        "environment": "prod",
        "not_before": now,
        "not_after": now + timedelta(hours=2),
        "created_at": now,
        "issued_at": now,
        "revoked_at": None,
        "revocation_reason": None,
        "requested_by": "cli:test",
        "fingerprint_sha256": "ab" * 32,
        "certificate_der": None,
    }
    values.update(change)
    return CertificateRecord(**values)  # type: ignore[arg-type]


def test_a_certificate_is_named_as_everywhere_in_the_cli() -> None:
    record = _record()
    data = certificate_json(record, now=datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    assert "agent_name" not in data and data["agent"] == "ExecutionAgent-01"
    assert data["serial"] == "0A3F9C0D1E2B4A6C8E0F1A2B3C4D5E6F70819203"
    assert data["not_after"] == "2026-12-06T09:00:00Z" and data["issued_at"].endswith("Z")
    assert data["state"] == "good" and data["status"] == "issued"
    assert record.to_dict()["agent_name"] == "ExecutionAgent-01"  # the API's JSON is unchanged


def test_states() -> None:
    later = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    revoked = {"status": CertStatus.REVOKED, "revoked_at": later}
    assert state_of(_record(), later) == "expired"
    assert state_of(_record(**revoked, revocation_reason=RevocationReason.CERTIFICATE_HOLD)) == (
        "held"
    )
    assert state_of(_record(**revoked, revocation_reason=RevocationReason.KEY_COMPROMISE)) == (
        "revoked"
    )
    assert state_of(_record(status=CertStatus.PENDING)) == "pending"


def test_an_agent_is_agent_not_name() -> None:
    assert agent_json({"name": "a1", "officer": "o"}) == {"agent": "a1", "officer": "o"}


def test_conflicting_flags_are_one_line_and_exit_2() -> None:
    @click.command()
    @click.option("--pem", is_flag=True)
    @click.option("--json", "as_json", is_flag=True)
    def cmd(pem: bool, as_json: bool) -> None:
        refuse_together(pem=pem, json=as_json)
        click.echo("ok")

    assert CliRunner().invoke(cmd, ["--pem"]).output == "ok\n"
    result = CliRunner().invoke(cmd, ["--pem", "--json"])
    assert result.exit_code == 2
    assert result.output == (
        "agentca: error: --pem and --json contradict each other: give one [bad-request]\n"
    )


def test_tables_have_a_header_row_and_aligned_columns() -> None:
    @click.command()
    def cmd() -> None:
        table(["NAME", "STATE"], [["a-long-name", "good"], ["b", None]])

    lines = CliRunner().invoke(cmd).output.splitlines()
    assert lines == ["NAME         STATE", "a-long-name  good", "b"]
