"""``agentca ca``: the CA hierarchy's key operations (``ca rollover``, decision 0033; the
root key ceremony and ``ca revoke-issuer``, decision 0034, in ``cli.ceremony_commands``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.context import actor, read_store, runtime, settings_from
from cli.group import AgentcaGroup
from cli.output import cli_serial, emit_json, note, refuse_together, rfc3339

KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


@click.group(cls=AgentcaGroup)
def ca() -> None:
    """The CA hierarchy's keys: issuing-CA rollover, root key ceremony, revoke an issuing CA."""


def _times(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: rfc3339(v) if k.endswith("not_after") else v for k, v in doc.items()}


@ca.command()
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    default=None,
    help="Key type of the new issuing CA (default from settings: issuing_key_type).",
)
@click.option("--dry-run", is_flag=True, help="Show what the rollover would make; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="The new issuing CA (or the plan) as JSON.")
@click.pass_context
def rollover(
    ctx: click.Context, key_type: str | None, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Roll the issuing CA over to a new key, with overlap.

    A new issuing key is generated in the HSM and the root signs its certificate (a new name,
    issuing-<n>, and subject); it issues every new certificate from then on (each running
    process switches within 5 s). The old issuing CA is retired but stays: its certificates
    keep verifying, keep OCSP answers and CRLs, and can be revoked until they expire. Needs
    the root key (its token attached). Also publishes the new CA's first CRLs and responder
    certificate. Ledger entry ca.issuing_rolled_over.
    """
    from ca.clock import utcnow
    from ca.rollover import plan_rollover, roll_over

    refuse_together(dry_run=dry_run, yes=yes)
    settings = settings_from(ctx)
    if dry_run:
        with read_store(ctx) as sessions:
            plan = plan_rollover(settings, sessions, utcnow(), key_type)
        if as_json:
            emit_json(_times(plan.to_dict()) | {"dry_run": True, "changed": False})
            return
        click.echo(
            f"would make {plan.name} ({plan.common_name}, {plan.key_type}) under {plan.root}, "
            f"valid to {rfc3339(plan.not_after)}, and retire {plan.retiring}; nothing changed"
        )
        return
    if not yes and sys.stdin.isatty():
        click.confirm("roll the issuing CA over to a new HSM key?", abort=True)
    root_keys = None
    if settings.root_offline:  # the root's own token, opened first: absent is one line
        from ca.keysetup import open_root_key_store

        root_keys = open_root_key_store(settings)
    try:
        with runtime(ctx) as rt:
            hierarchy = rt.authority.hierarchy
            if root_keys is not None:
                from ca.keysetup import guard_signing

                guard_signing(root_keys, rt.engine, settings)
            plan = plan_rollover(settings, rt.sessions, hierarchy.clock(), key_type)
            result = roll_over(hierarchy, plan, actor(), root_keys)
            crls = _first_crls(rt, plan.name)
    finally:
        if root_keys is not None:
            root_keys.close()
    signers = _responder_certs(settings)
    if as_json:
        doc = _times(result.to_dict())
        doc["serial"] = cli_serial(result.certificate.serial_number)
        emit_json(doc | {"crls": crls, "responder_certificates": signers, "changed": True})
        return
    note(f"published {', '.join(crls)}")
    if signers:
        note(f"responder certificates published for {', '.join(signers)}")
    click.echo(
        f"rolled over: {plan.name} ({result.certificate.subject.rfc4514_string()}, "
        f"{plan.key_type}) serial={cli_serial(result.certificate.serial_number)} "
        f"notAfter={rfc3339(result.certificate.not_valid_after_utc)} now issues; "
        f"{plan.retiring} is retired and keeps its CRLs and OCSP answers"
    )


def _first_crls(rt: Any, name: str) -> list[str]:
    """The new issuing CA's first complete and delta CRLs, so its CRL URLs answer at once."""
    from ca.crl_publisher import CrlPublisher

    return [p.path.name for p in CrlPublisher.from_runtime(rt).publish(name, "full")]


def _responder_certs(settings: Any) -> list[str]:
    """Responder certificates for issuers that have none yet (the new one); the OCSP
    responder picks them up while running."""
    from ca.keysetup import SOFTWARE
    from ca.responder_certs import rotate_responder_certs

    if settings.key_store == SOFTWARE:
        return []
    return [r.issuer_name for r in rotate_responder_certs(settings) if r.created]


def _attach_root_commands() -> None:
    from cli.ceremony_commands import ceremony, revoke_issuer

    ca.add_command(ceremony)
    ca.add_command(revoke_issuer)


_attach_root_commands()
