"""Certificate commands: list, show, chain (read only: no HSM), revoke and release.

Imports of the CA core happen inside the commands, so ``agentca list --help`` and the read
commands start without loading issuance (docs/performance.md, "CLI start-up").
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from ca.errors import CAError, ErrorCode
from cli.context import actor, read_store, runtime

if TYPE_CHECKING:
    from ca.records import CertificateRecord

HOLD = "certificateHold"


def state_of(record: CertificateRecord) -> str:
    """``held`` for a certificate on hold (revoked with certificateHold, reversible), else
    its status: how ``list`` and ``show`` tell a hold from a revocation."""
    reason = record.revocation_reason
    if record.status.value == "revoked" and reason is not None and reason.text == HOLD:
        return "held"
    return record.status.value


def record_json(record: CertificateRecord) -> dict[str, Any]:
    """The record as the CLI prints it in JSON: ``to_dict`` plus ``state``."""
    return {**record.to_dict(), "state": state_of(record)}


@click.command()
@click.argument("serial", required=False)
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded, "
    "cessationOfOperation, privilegeWithdrawn, or certificateHold (reversible with "
    "'agentca release').",
)
@click.option("--model-digest", default=None, help="Bulk: every live certificate of this model.")
@click.option("--prompt-digest", default=None, help="Bulk: every live certificate of this prompt.")
@click.option("--officer", default=None, help="Bulk: every live certificate of this officer.")
@click.option("--agent", "agent_name", default=None, help="Bulk: every live certificate of NAME.")
@click.option(
    "--dry-run", is_flag=True, help="Bulk: list what would be revoked, and change nothing."
)
@click.option("--yes", is_flag=True, help="Bulk: do not ask for confirmation on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one record per certificate.")
@click.pass_context
def revoke(
    ctx: click.Context,
    serial: str | None,
    reason: str,
    model_digest: str | None,
    prompt_digest: str | None,
    officer: str | None,
    agent_name: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Revoke the certificate with hexadecimal SERIAL, or in bulk with the filters.

    Bulk revocation takes every live (issued, unexpired) certificate matching all given
    filters, in one transaction; on a terminal it shows how many and asks first (--yes
    skips the question, --dry-run only lists them).
    """
    from ca.names import parse_sha256_hex
    from ca.requests import RevocationCriteria
    from ca.revocation import RevocationReason

    why = RevocationReason.parse(reason)
    bulk = RevocationCriteria(
        model_digest=parse_sha256_hex(model_digest).hex() if model_digest else None,
        prompt_digest=parse_sha256_hex(prompt_digest).hex() if prompt_digest else None,
        officer=officer,
        agent_name=agent_name,
    )
    if (serial is None) == bulk.is_empty():
        raise CAError(ErrorCode.BAD_REQUEST, "give either a SERIAL or at least one bulk filter")
    if serial is not None and dry_run:
        raise click.UsageError("--dry-run previews a bulk revocation; a SERIAL needs none")
    with runtime(ctx) as rt:
        if serial is not None:
            record = rt.authority.revoke(serial, why, actor())
            if as_json:
                click.echo(json.dumps(record_json(record), sort_keys=True))
            else:
                click.echo(
                    f"revoked {record.serial_hex} ({why.text}) at "
                    f"{record.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
                )
            return
        if dry_run or (not yes and sys.stdin.isatty()):
            matching = rt.authority.matching_live(bulk)
            if dry_run:
                _print_records(matching, as_json, "would revoke", "")
                click.echo(f"would revoke {len(matching)} certificate(s)", err=True)
                return
            click.confirm(f"revoke {len(matching)} live certificate(s) ({why.text})?", abort=True)
        records = rt.authority.revoke_where(bulk, why, actor())
    _print_records(records, as_json, "revoked", f" ({why.text})")
    click.echo(f"revoked {len(records)} certificate(s)", err=True)


def _print_records(records: Any, as_json: bool, verb: str, suffix: str) -> None:
    for r in records:
        if as_json:
            click.echo(json.dumps(record_json(r), sort_keys=True))
        else:
            click.echo(f"{verb} {r.serial_hex} {r.agent_name}{suffix}")


@click.command()
@click.argument("serial")
@click.option("--json", "as_json", is_flag=True, help="The released certificate's record as JSON.")
@click.pass_context
def release(ctx: click.Context, serial: str, as_json: bool) -> None:
    """Lift the certificateHold on SERIAL: it is good again (OCSP at once; the next delta CRL
    lists it as removeFromCRL). A certificate that is not on hold is refused."""
    with runtime(ctx) as rt:
        record = rt.authority.release_hold(serial, actor())
    if as_json:
        click.echo(json.dumps(record_json(record), sort_keys=True))
    else:
        click.echo(f"released {record.serial_hex}: no longer on hold")


@click.command("list")
@click.option("--agent", "agent_name", default=None, help="Only this agent.")
@click.option(
    "--status",
    type=click.Choice(["pending", "issued", "revoked", "held", "failed"]),
    default=None,
    help="Only this state (held: revoked with certificateHold; revoked: every revocation).",
)
@click.option("--officer", default=None, help="Only this officer of record.")
@click.option("--model-digest", default=None, help="Only this model digest (hex).")
@click.option("--prompt-digest", default=None, help="Only this prompt digest (hex).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.pass_context
def list_certificates(
    ctx: click.Context,
    agent_name: str | None,
    status: str | None,
    officer: str | None,
    model_digest: str | None,
    prompt_digest: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List certificate records, newest first. Reads the database only (no HSM)."""
    from ca.names import parse_sha256_hex
    from ca.queries import CertificateQueries
    from ca.requests import CertificateFilter

    flt = CertificateFilter(
        agent_name=agent_name,
        status="revoked" if status == "held" else status,
        officer=officer,
        model_digest=parse_sha256_hex(model_digest).hex() if model_digest else None,
        prompt_digest=parse_sha256_hex(prompt_digest).hex() if prompt_digest else None,
        limit=limit,
    )
    with read_store(ctx) as sessions:
        records = CertificateQueries(sessions).list(flt)
    if status == "held":
        records = [r for r in records if state_of(r) == "held"]
    if as_json:
        for r in records:
            click.echo(json.dumps(record_json(r), sort_keys=True))
        return
    click.echo(f"{'SERIAL':40}  {'STATE':8}  {'AGENT':24}  {'NOT AFTER':17}  OFFICER")
    for r in records:
        click.echo(
            f"{r.serial_hex:40}  {state_of(r):8}  {r.agent_name:24}  "
            f"{r.not_after:%Y-%m-%dT%H:%MZ}  {r.officer}"
        )


@click.command()
@click.argument("serial")
@click.option("--pem", "as_pem", is_flag=True, help="Print the certificate in PEM only.")
@click.option("--json", "as_json", is_flag=True, help="Print the record and extensions as JSON.")
@click.pass_context
def show(ctx: click.Context, serial: str, as_pem: bool, as_json: bool) -> None:
    """Show one certificate: record, validity and its decoded agent extensions. Reads the
    database only (no HSM)."""
    if as_pem and as_json:
        raise click.UsageError("--pem and --json contradict each other: choose one")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from ca.extensions import read_agent_extensions
    from ca.queries import CertificateQueries, read_arc_state

    with read_store(ctx) as sessions:
        record = CertificateQueries(sessions).get(serial)
        with sessions() as s:
            arcs = read_arc_state(s).every_arc
    cert = record.certificate
    if as_pem:
        if cert is None:
            raise CAError(ErrorCode.NOT_FOUND, f"certificate {serial} was never signed")
        click.echo(cert.public_bytes(serialization.Encoding.PEM).decode(), nl=False)
        return
    data = record_json(record)
    if cert is not None:
        data["extensions"] = read_agent_extensions(cert, arcs).to_dict()
        data["spiffe_id"] = [
            str(u)
            for u in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.UniformResourceIdentifier)
        ]
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for key in (
        "serial",
        "state",
        "issuer",
        "subject",
        "agent_name",
        "spiffe_id",
        "not_before",
        "not_after",
        "issued_at",
        "revoked_at",
        "revocation_reason",
        "requested_by",
        "fingerprint_sha256",
    ):
        if data.get(key) is not None:
            click.echo(f"{key + ':':20}{data[key]}")
    if data["state"] == "held":
        click.echo(f"{'':20}(on hold: 'agentca release {record.serial_hex}' lifts it)")
    if "extensions" in data:
        click.echo("extensions (decoded from the certificate):")
        click.echo(json.dumps(data["extensions"], indent=2, sort_keys=True))


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the PEM chain here instead of standard output.",
)
@click.option("--root-only", is_flag=True, help="Only the root certificate (the trust anchor).")
@click.pass_context
def chain(ctx: click.Context, out: str | None, root_only: bool) -> None:
    """Print the CA chain in PEM: issuing CA, then root. Reads the database only (no HSM)."""
    from pathlib import Path

    from ca.queries import issuer_chain_pem

    with read_store(ctx) as sessions:
        pem = issuer_chain_pem(sessions, root_only)
    if out:
        Path(out).write_text(pem)
    else:
        click.echo(pem, nl=False)
