"""``agentca doctor``: check the CA and say what to fix (``ca.doctor``)."""

from __future__ import annotations

import sys

import click

from cli.context import settings_from
from cli.output import emit_json


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ok and the checks.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check configuration, database and roles, HSM login, clock, CRL and OCSP signer
    freshness and ledger checkpoints; print what is wrong and how to fix it.

    Exit status 0 when nothing fails (warnings included), 1 otherwise. Changes nothing.
    """
    from ca.doctor import FAIL, diagnose

    findings = diagnose(settings_from(ctx))
    failed = any(f.status == FAIL for f in findings)
    if as_json:
        emit_json({"ok": not failed, "checks": [f.to_json() for f in findings]})
    else:
        click.echo(f"{'status':6}  {'check':24}  detail")
        for f in findings:
            click.echo(f"{f.status:6}  {f.check:24}  {f.detail}")
            if f.fix and f.status != "ok":
                click.echo(f"{'':6}  {'':24}  fix: {f.fix}")
    if failed:
        sys.exit(1)
