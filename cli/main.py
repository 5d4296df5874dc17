"""Entry point of the ``agentca`` command."""

from __future__ import annotations

import os

import click

from cli.ca_commands import chain, init, issue, list_certificates, revoke, show
from cli.crl_commands import crl
from cli.digest_commands import config, model, prompt
from cli.group import AgentcaGroup
from cli.ledger_commands import ledger
from cli.ocsp_commands import ocsp
from cli.reconcile_commands import reconcile
from cli.registry_commands import agent, apitoken, scope, token
from cli.run import run
from cli.serve import serve


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


for command in (
    init,
    issue,
    revoke,
    list_certificates,
    show,
    chain,
    model,
    prompt,
    config,
    serve,
    run,
    ocsp,
    agent,
    scope,
    token,
    apitoken,
    ledger,
    reconcile,
):
    cli.add_command(command)
cli.add_command(crl)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="agentca")


if __name__ == "__main__":  # pragma: no cover
    main()
