"""Audit certificate commands: print it (database only) and rotate it (HSM), decision 0027."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ca.errors import CAError, ErrorCode
from cli.context import actor, read_store, runtime
from cli.group import AgentcaGroup
from cli.output import cli_serial, emit_json, note


@click.group(cls=AgentcaGroup)
def audit() -> None:
    """The audit certificate that signs ledger checkpoints: print it, rotate it."""


def write_new(path: str, text: str, force: bool, what: str) -> None:
    """Write ``text`` to ``path``, refusing an existing file unless ``force``."""
    target = Path(path)
    if target.exists() and not force:
        raise CAError(
            ErrorCode.CONFLICT, f"{path} exists: not overwriting the {what} (--force replaces it)"
        )
    try:
        target.write_text(text)
    except OSError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot write {path}: {exc.strerror}") from exc


def _json(summary: dict[str, Any]) -> dict[str, Any]:
    return {**summary, "serial": cli_serial(summary["serial"])}


@audit.command("certificate")
@click.option(
    "--chain",
    "with_chain",
    is_flag=True,
    help="The verification bundle: audit certificate, issuing CA, then root.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the PEM here (an existing file is refused unless --force).",
)
@click.option("--force", is_flag=True, help="With --out: replace an existing file.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Serial, subject, validity, fingerprint, PEM.",
)
@click.pass_context
def certificate(
    ctx: click.Context, with_chain: bool, out: str | None, force: bool, as_json: bool
) -> None:
    """Print the current audit certificate (PEM). Reads the database only (no HSM) and creates
    nothing; the first 'agentca ledger checkpoint' makes the certificate.

    Pin it (ledger verify --trust audit.pem) or, better, anchor trust at the CA root
    (ledger verify --trust root.pem): see docs/auditors.md.
    """
    from ca.ledger.audit import current_audit_certificate
    from ca.queries import issuer_chain_pem

    if force and not out:
        raise click.UsageError("--force only applies with --out")
    with read_store(ctx) as sessions:
        current = current_audit_certificate(sessions)
        pem = current.pem + (issuer_chain_pem(sessions) if with_chain else "")
    if out:
        write_new(out, pem, force, "audit certificate")
    if as_json:
        data = _json(current.summary())
        if with_chain:
            data["chain_pem"] = pem
        data["out"] = out
        emit_json(data)
    elif out:
        note(f"audit certificate {cli_serial(current.certificate.serial_number)} written to {out}")
    else:
        click.echo(pem, nl=False)


@audit.command("rotate-certificate")
@click.option("--dry-run", is_flag=True, help="Show what a rotation would make; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="The new certificate (or the plan) as JSON.")
@click.pass_context
def rotate_certificate(ctx: click.Context, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Make a new audit key in the HSM and its certificate from the issuing CA; new checkpoints
    are signed with it. Old audit certificates stay on record and keep verifying the
    checkpoints they signed (ledger entry audit.certificate_rotated).
    """
    if dry_run:
        _dry_run(ctx, as_json)
        return
    if not yes and sys.stdin.isatty():
        click.confirm("rotate the audit certificate (new HSM key)?", abort=True)
    from ca.ledger.audit import audit_certificates

    with runtime(ctx) as rt:
        signer_id, cert, _key = rt.checkpoints.rotate(actor())
        with rt.sessions() as s:
            on_record = audit_certificates(s)
    new = next(c for c in on_record if c.signer_id == signer_id)
    previous = next((c for c in on_record if c.signer_id < signer_id), None)
    if as_json:
        data = _json(new.summary())
        data["changed"] = True
        data["previous_serial"] = (
            cli_serial(previous.certificate.serial_number) if previous else None
        )
        emit_json(data)
        return
    click.echo(
        f"rotated: audit certificate {cli_serial(cert.serial_number)} valid "
        f"{new.summary()['not_before']} to {new.summary()['not_after']}"
        + (f" (replaces {cli_serial(previous.certificate.serial_number)})" if previous else "")
    )


def _dry_run(ctx: click.Context, as_json: bool) -> None:
    from cryptography import x509

    from ca.clock import utcnow
    from ca.ledger.audit import audit_certificates, rfc3339
    from ca.ledger.signer import rotation_plan
    from ca.queries import issuer_chain_pem

    with read_store(ctx) as sessions:
        with sessions() as s:
            on_record = audit_certificates(s)
        issuing = x509.load_pem_x509_certificates(issuer_chain_pem(sessions).encode())[0]
    plan = rotation_plan(on_record[0] if on_record else None, issuing, utcnow())
    previous = plan.previous
    data = {
        "changed": False,
        "dry_run": True,
        "issuer": issuing.subject.rfc4514_string(),
        "not_before": rfc3339(plan.not_before),
        "not_after": rfc3339(plan.not_after),
        "previous_serial": cli_serial(previous.certificate.serial_number) if previous else None,
    }
    if as_json:
        emit_json(data)
        return
    what = f"replace {data['previous_serial']}" if previous else "create the first one"
    click.echo(
        f"would make a new audit key and certificate valid {data['not_before']} to "
        f"{data['not_after']} ({what}); nothing changed"
    )
