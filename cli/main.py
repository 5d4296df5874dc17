"""Entry point of the ``agentca`` command."""

from __future__ import annotations

import os

import click

from cli.group import LazyCommands, LazyGroup

# Each command's module is imported only when that command runs: the OCSP responder's process
# (`agentca ocsp serve`) then loads nothing of issuance, every command starts faster, and
# `agentca --help` lists the commands from this table without importing any of them.
COMMANDS = {
    # name: ("module:attribute", the first paragraph of its help, for `agentca --help`)
    "init": (
        "cli.ca_commands:init",
        "Create the CA: HSM token (SoftHSM2 by default), database schema, root and issuing CA.",
    ),
    "issue": (
        "cli.ca_commands:issue",
        "Issue a certificate to a registered agent from a CSR, through the enrollment policy.",
    ),
    "revoke": (
        "cli.cert_commands:revoke",
        "Revoke the certificate with hexadecimal SERIAL, or in bulk with the filters.",
    ),
    "release": (
        "cli.cert_commands:release",
        "Lift the certificateHold on SERIAL: it is good again (OCSP at once; the next delta "
        "CRL lists it as removeFromCRL). Releasing a good certificate changes nothing and "
        "succeeds; one revoked for good is refused.",
    ),
    "list": (
        "cli.cert_commands:list_certificates",
        "List certificate records, newest first. Reads the database only (no HSM).",
    ),
    "show": (
        "cli.cert_commands:show",
        "Show one certificate: record, validity and its decoded agent extensions. Reads the "
        "database only (no HSM).",
    ),
    "chain": (
        "cli.cert_commands:chain",
        "Print the CA chain in PEM: the active issuing CA, then root. Reads the database only "
        "(no HSM).",
    ),
    "ca": (
        "cli.rollover_commands:ca",
        "The CA hierarchy's keys: issuing-CA rollover, root key ceremony, revoke an issuing CA.",
    ),
    "oid-arc": (
        "cli.oid_arc_commands:oid_arc",
        "The CA's OID arc: show it, move the CA to a new one.",
    ),
    # registry_commands adds `model add` and `model retire` to digest_commands' group
    "model": ("cli.registry_commands:model", "Model provenance helpers."),
    "prompt": ("cli.digest_commands:prompt", "System-prompt provenance helpers."),
    "config": (
        "cli.config_commands:config",
        "The CA's effective configuration, and runtime-configuration digests of agents.",
    ),
    "serve": (
        "cli.serve:serve",
        "Serve the CA HTTP API with gunicorn; on first run create token, database and CAs.",
    ),
    "run": (
        "cli.run:run",
        "Start the CA API, OCSP responder and signer rotation, CRL publisher and ledger "
        "checkpoints together.",
    ),
    "ocsp": (
        "cli.ocsp_commands:ocsp",
        "RFC 6960 OCSP responder: serve it, rotate its delegated signer certificates.",
    ),
    "agent": (
        "cli.registry_commands:agent",
        "Agent registrations: what each agent may be certified for.",
    ),
    "scope": ("cli.registry_commands:scope", "The scope catalogue."),
    "token": ("cli.registry_commands:token", "One-time enrollment tokens."),
    "apitoken": (
        "cli.registry_commands:apitoken",
        "API tokens for operators, auditors and read-only clients.",
    ),
    "gateway": (
        "cli.gateway_commands:gateway",
        "Gateways that ship their decisions to the action ledger: register, list, disable.",
    ),
    "ledger": (
        "cli.ledger_commands:ledger",
        "The tamper-evident issuance and revocation ledger (for auditors).",
    ),
    "audit": (
        "cli.audit_commands:audit",
        "The audit certificate that signs ledger checkpoints: print it, rotate it.",
    ),
    "reconcile": (
        "cli.reconcile_commands:reconcile",
        "Mark reservations pending for longer than the bound as failed, in the ledger.",
    ),
    "db": (
        "cli.db_commands:db",
        "The database schema: show its revision, migrate it to this release's, move to PostgreSQL.",
    ),
    "backup": (
        "cli.backup_commands:backup",
        "Back up the CA (database dump + SoftHSM2 token files + manifest), verify, restore.",
    ),
    "doctor": (
        "cli.doctor_commands:doctor",
        "Check configuration, database and roles, HSM login, clock, CRL and OCSP signer "
        "freshness and ledger checkpoints; print what is wrong and how to fix it.",
    ),
    "drift": (
        "cli.drift_commands:drift",
        "Behavioural drift: score agents against their own baselines, alert or hold, review.",
    ),
    "crl": (
        "cli.crl_commands:crl",
        "Publish and inspect certificate revocation lists (complete and delta CRLs).",
    ),
}


@click.group(
    cls=LazyGroup,
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
