"""Gateways that ship their decisions to the action ledger (decision 0056): register one with
the public key of its checkpoint signer, list them, disable one."""

from __future__ import annotations

from pathlib import Path

import click

from ca.errors import CAError, ErrorCode
from cli.context import actor, runtime
from cli.group import AgentcaGroup
from cli.output import cli_json, emit_json, emit_lines, unchanged, with_changed


@click.group(cls=AgentcaGroup)
def gateway() -> None:
    """Gateways that ship their decisions to the action ledger: register, list, disable."""


@gateway.command("add")
@click.argument("name")
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(dir_okay=False),
    help="The gateway's checkpoint-signing public key (PEM or DER SubjectPublicKeyInfo; "
    "Ed25519 or ECDSA P-256 / P-384).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the registration as JSON.")
@click.pass_context
def gateway_add(ctx: click.Context, name: str, public_key: str, as_json: bool) -> None:
    """Register gateway NAME and the key that signs its local log's checkpoints.

    Then create its token with 'agentca apitoken create --role gateway --name NAME': that
    token may POST /v1/actions for NAME only.
    """
    try:
        data = Path(public_key).read_bytes()
    except OSError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot read {public_key}: {exc.strerror}") from exc
    with runtime(ctx) as rt:
        gw, changed = rt.gateways.add(name, data, actor())
    if not changed:
        unchanged(f"gateway '{name}' is already registered with this key")
    if as_json:
        emit_json(with_changed(cli_json(gw.to_json()), changed))
    elif changed:
        click.echo(f"gateway '{gw.name}' registered, key_id {gw.key_id}")


@gateway.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per gateway.")
@click.pass_context
def gateway_list(ctx: click.Context, as_json: bool) -> None:
    """List the registered gateways with their key IDs and how far their records reach."""
    with runtime(ctx) as rt:
        rows = [
            {**cli_json(g.to_json()), "next_seq": rt.actions.next_seq(g.name)}
            for g in rt.gateways.list()
        ]
    if as_json:
        emit_lines(rows)
        return
    for row in rows:
        state = "enabled" if row["enabled"] else "disabled"
        click.echo(f"{row['name']}\t{state}\tkey_id {row['key_id']}\trecords {row['next_seq']}")


@gateway.command("disable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the registration as JSON.")
@click.pass_context
def gateway_disable(ctx: click.Context, name: str, as_json: bool) -> None:
    """Disable gateway NAME: its batches are refused (403) from now on; its records stay."""
    with runtime(ctx) as rt:
        gw, changed = rt.gateways.disable(name, actor())
    if not changed:
        unchanged(f"gateway '{name}' is already disabled")
    if as_json:
        emit_json(with_changed(cli_json(gw.to_json()), changed))
    elif changed:
        click.echo(f"gateway '{name}' disabled")
