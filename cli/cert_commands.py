"""Certificate commands: list, show, chain (read only: no HSM), revoke and release.

Imports of the CA core happen inside the commands, so ``agentca list --help`` and the read
commands start without loading issuance (docs/performance.md, "CLI start-up").
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ca.errors import CAError, ErrorCode
from cli.context import actor, read_engine, read_store, runtime
from cli.output import (
    FlagConflict,
    certificate_json,
    cli_serial,
    emit_json,
    note,
    refuse_together,
    rfc3339,
    serial_arg,
    state_of,
    table,
    unchanged,
    with_changed,
)

if TYPE_CHECKING:
    from ca.records import CertificateRecord


def record_json(record: CertificateRecord) -> dict[str, Any]:
    """The record as the CLI prints it in JSON (``cli.output.certificate_json``)."""
    return certificate_json(record)


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

    SERIAL may be given in any form (openssl's, lowercase, colon-separated, 0x...).
    Revoking a certificate already revoked with the same reason changes nothing and
    succeeds; with another reason it is refused (exit 7), except the escalation to
    keyCompromise and the permanent revocation of a held certificate. Bulk revocation
    takes every live (issued, unexpired) certificate matching all given filters, in one
    transaction; on a terminal it shows how many and asks first (--yes skips the question,
    --dry-run only lists them).
    """
    from ca.names import parse_sha256_hex
    from ca.requests import RevocationCriteria
    from ca.revocation import RevocationReason

    filters = {
        "model_digest": model_digest,
        "prompt_digest": prompt_digest,
        "officer": officer,
        "agent": agent_name,
    }
    if serial is not None and any(filters.values()):
        given = " and ".join("--" + k.replace("_", "-") for k, v in filters.items() if v)
        raise FlagConflict(f"SERIAL and {given} contradict each other: give one")
    if serial is not None and (dry_run or yes):
        flag = "--dry-run" if dry_run else "--yes"
        raise FlagConflict(f"{flag} is for a bulk revocation; SERIAL and {flag} contradict")
    refuse_together(dry_run=dry_run, yes=yes)
    why = RevocationReason.parse(reason)
    bulk = RevocationCriteria(
        model_digest=parse_sha256_hex(model_digest).hex() if model_digest else None,
        prompt_digest=parse_sha256_hex(prompt_digest).hex() if prompt_digest else None,
        officer=officer,
        agent_name=agent_name,
    )
    if serial is None and bulk.is_empty():
        raise CAError(ErrorCode.BAD_REQUEST, "give either a SERIAL or at least one bulk filter")
    with runtime(ctx) as rt:
        if serial is not None:
            wanted = serial_arg(serial)
            changed = True
            try:
                record = rt.authority.revoke(wanted, why, actor())
            except CAError as exc:
                if exc.code is not ErrorCode.ALREADY_REVOKED:
                    raise
                record = rt.authority.get(wanted)
                if record.revocation_reason is not why:
                    raise  # a different end state: a conflict (exit 7)
                changed = False
            when = rfc3339(record.revoked_at)
            if not changed:
                unchanged(
                    f"certificate {cli_serial(record.serial_hex)} is already revoked "
                    f"({why.text}) since {when}"
                )
            if as_json:
                emit_json(with_changed(record_json(record), changed))
            elif changed:
                click.echo(f"revoked {cli_serial(record.serial_hex)} ({why.text}) at {when}")
            return
        if dry_run or (not yes and sys.stdin.isatty()):
            matching = rt.authority.matching_live(bulk)
            if dry_run:
                _print_records(matching, as_json, "would revoke", "", changed=False)
                note(f"would revoke {len(matching)} certificate(s)")
                return
            click.confirm(
                f"revoke {len(matching)} live certificate(s) ({why.text})?", abort=True, err=True
            )
        records = rt.authority.revoke_where(bulk, why, actor())
    _print_records(records, as_json, "revoked", f" ({why.text})", changed=True)
    note(f"revoked {len(records)} certificate(s)")


def _print_records(records: Any, as_json: bool, verb: str, suffix: str, changed: bool) -> None:
    for r in records:
        if as_json:
            emit_json(with_changed(record_json(r), changed))
        else:
            click.echo(f"{verb} {cli_serial(r.serial_hex)} {r.agent_name}{suffix}")


@click.command()
@click.argument("serial")
@click.option("--dry-run", is_flag=True, help="Show the certificate that would be released.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="The released certificate's record as JSON.")
@click.pass_context
def release(ctx: click.Context, serial: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Lift the certificateHold on SERIAL: it is good again (OCSP at once; the next delta CRL
    lists it as removeFromCRL). Releasing a good certificate changes nothing and succeeds; one
    revoked for good is refused."""
    refuse_together(dry_run=dry_run, yes=yes)
    wanted = serial_arg(serial)
    with runtime(ctx) as rt:
        record = rt.authority.get(wanted)
        shown = cli_serial(record.serial_hex)
        held = state_of(record) == "held"
        if not held and record.status.value != "issued":
            raise CAError(ErrorCode.CONFLICT, f"certificate {shown} is not on hold")
        if dry_run:
            what = "would release" if held else "not on hold, nothing to release:"
            note(f"{what} {shown} of {record.agent_name}")
            if as_json:
                emit_json(with_changed(record_json(record), False) | {"dry_run": True})
            return
        if held and not yes and sys.stdin.isatty():
            click.confirm(
                f"release {shown} of {record.agent_name} from hold?", abort=True, err=True
            )
        changed = True
        try:
            record = rt.authority.release_hold(wanted, actor())
        except CAError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            record = rt.authority.get(wanted)
            if record.status.value != "issued":
                raise  # revoked for good (or never issued): not the state asked for
            changed = False
    if not changed:
        unchanged(f"certificate {cli_serial(record.serial_hex)} is not on hold")
    if as_json:
        emit_json(with_changed(record_json(record), changed))
    elif changed:
        click.echo(f"released {cli_serial(record.serial_hex)}: no longer on hold")


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
    from ca.requests import CertificateFilter
    from ca.store.certificate_rows import list_records

    flt = CertificateFilter(
        agent_name=agent_name,
        status="revoked" if status == "held" else status,
        officer=officer,
        model_digest=parse_sha256_hex(model_digest).hex() if model_digest else None,
        prompt_digest=parse_sha256_hex(prompt_digest).hex() if prompt_digest else None,
        limit=limit,
    )
    with read_engine(ctx) as engine, engine.connect() as conn:
        records = list_records(conn, flt)
    if status == "held":
        records = [r for r in records if state_of(r) == "held"]
    if as_json:
        for r in records:
            emit_json(record_json(r))
        return
    table(
        ["SERIAL", "STATE", "AGENT", "NOT AFTER", "OFFICER"],
        (
            [cli_serial(r.serial_hex), state_of(r), r.agent_name, rfc3339(r.not_after), r.officer]
            for r in records
        ),
    )


@click.command()
@click.argument("serial")
@click.option("--pem", "as_pem", is_flag=True, help="Print the certificate in PEM only.")
@click.option("--json", "as_json", is_flag=True, help="Print the record and extensions as JSON.")
@click.pass_context
def show(ctx: click.Context, serial: str, as_pem: bool, as_json: bool) -> None:
    """Show one certificate: record, validity and its decoded agent extensions. Reads the
    database only (no HSM). SERIAL may be given in any form (openssl's, lowercase,
    colon-separated, 0x...)."""
    refuse_together(pem=as_pem, json=as_json)
    wanted = serial_arg(serial)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from ca.extensions import read_agent_extensions
    from ca.queries import CertificateQueries, read_arc_state

    with read_store(ctx) as sessions:
        record = CertificateQueries(sessions).get(wanted)
        with sessions() as s:
            arcs = read_arc_state(s).every_arc
    cert = record.certificate
    if as_pem:
        if cert is None:
            raise CAError(ErrorCode.NOT_FOUND, f"certificate {wanted} was never signed")
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
        emit_json(data)
        return
    import json

    for key in (
        "serial",
        "state",
        "issuer",
        "subject",
        "agent",
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
            value = data[key]
            shown = ", ".join(value) if isinstance(value, list) else value
            click.echo(f"{key + ':':20}{shown}")
    if data["state"] == "held":
        click.echo(f"{'':20}(on hold: 'agentca release {data['serial']}' lifts it)")
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
@click.option(
    "--all-issuing",
    is_flag=True,
    help="Every unexpired issuing CA (the active one first, then those retired by "
    "'agentca ca rollover'), then the root: what verifiers of older certificates need.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object: the PEM certificates as a list (with --out: what was written).",
)
@click.pass_context
def chain(
    ctx: click.Context, out: str | None, root_only: bool, all_issuing: bool, as_json: bool
) -> None:
    """Print the CA chain in PEM: the active issuing CA, then root. Reads the database only
    (no HSM).
    """
    from pathlib import Path

    from ca.queries import issuer_chain_pem

    refuse_together(root_only=root_only, all_issuing=all_issuing)
    with read_store(ctx) as sessions:
        pem = issuer_chain_pem(sessions, root_only, all_issuing)
    end = "-----END CERTIFICATE-----\n"
    certificates = [block + end for block in pem.split(end) if block.strip()]
    if out:
        Path(out).write_text(pem)
        note(f"wrote {len(certificates)} certificate(s) to {out}")
    if as_json:
        doc: dict[str, Any] = {
            "root_only": root_only,
            "all_issuing": all_issuing,
            "count": len(certificates),
        }
        doc |= {"out": out} if out else {"certificates": certificates}
        emit_json(doc)
    elif not out:
        click.echo(pem, nl=False)
