"""Entry point of the ``agentca`` command."""

from __future__ import annotations

import os

import click

from cli.group import AgentcaGroup, LazyCommands

# Each command's module is imported only when that command runs (or a listing needs it): the
# OCSP responder's process (`agentca ocsp serve`) then loads nothing of issuance, and every
# command starts faster.
COMMANDS = {
    "init": "cli.ca_commands:init",
    "issue": "cli.ca_commands:issue",
    "revoke": "cli.ca_commands:revoke",
    "list": "cli.ca_commands:list_certificates",
    "show": "cli.ca_commands:show",
    "chain": "cli.ca_commands:chain",
    "model": "cli.registry_commands:model",  # digest_commands.model, plus add and retire
    "prompt": "cli.digest_commands:prompt",
    "config": "cli.digest_commands:config",
    "serve": "cli.serve:serve",
    "run": "cli.run:run",
    "ocsp": "cli.ocsp_commands:ocsp",
    "agent": "cli.registry_commands:agent",
    "scope": "cli.registry_commands:scope",
    "token": "cli.registry_commands:token",
    "apitoken": "cli.registry_commands:apitoken",
    "ledger": "cli.ledger_commands:ledger",
    "reconcile": "cli.reconcile_commands:reconcile",
    "crl": "cli.crl_commands:crl",
}


@click.group(
    cls=AgentcaGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="AGENTCA_CONFIG",
    help="TOML configuration file (default: $AGENTCA_CONFIG). Environment AGENTCA_* overrides it.",
)
@click.version_option(package_name="agentca")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """agentca: a private CA that gives AI agents an X.509 identity bound to their model
    provenance, authorised scopes and an accountable officer of record.

    The data directory is $AGENTCA_DATA_DIR (default ~/.local/share/agentca).
    """
    os.umask(0o077)  # what the CA writes (database, token, PINs, exports) is owner-only
    ctx.obj = {"config": config}


cli.commands = LazyCommands(COMMANDS)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="agentca")


if __name__ == "__main__":  # pragma: no cover
    main()
