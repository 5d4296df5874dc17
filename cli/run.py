"""``agentca run``: the whole product on one machine (what ``make run`` starts).

First-run setup (SoftHSM2 tokens, schema, root and issuing CA, first OCSP responder
certificates), then six processes side by side (seven on PostgreSQL, with the replication
heartbeat of decision 0029): the CA API, the OCSP responder (read-only), the OCSP presigner
(CA side: answers signed ahead of demand, decision 0038), the OCSP signer rotation (CA side:
a new responder certificate ahead of expiry, while the old one is still valid), the CRL
publisher (on revocation and on schedule) and the ledger checkpoint scheduler. A stop signal
stops them all; if one dies, the others are stopped too.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

import click

from ca.wiring import ensure_initialised
from cli.context import actor, settings_from
from cli.output import emit_json

SIGNER_CHECK_EVERY = 600  # seconds; signers live 48 h and are renewed with 24 h left


def _children(checkpoint_every: int, postgresql: bool) -> list[tuple[str, list[str]]]:
    agentca = [sys.executable, "-m", "cli.main"]
    # responders on a streaming replica vouch for it only as of its last replayed commit
    heartbeat = [("db-heartbeat", [*agentca, "db", "heartbeat"])] if postgresql else []
    return [
        *heartbeat,
        ("ca-api", [*agentca, "serve"]),
        ("ocsp", [*agentca, "ocsp", "serve"]),
        # answers signed ahead of demand into the store every responder reads (decision 0038)
        ("ocsp-presign", [*agentca, "ocsp", "presign"]),
        (
            "ocsp-signers",
            [*agentca, "ocsp", "rotate-signer", "--every", str(SIGNER_CHECK_EVERY)],
        ),
        ("crl-publisher", [*agentca, "crl", "publish", "--loop"]),
        (
            "ledger-checkpoints",
            [*agentca, "ledger", "checkpoint", "--every", str(checkpoint_every)],
        ),
    ]


@click.command("run")
@click.option(
    "--checkpoint-every",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds between ledger checkpoints (when the ledger grew).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Before starting, print one JSON object on stdout: what will be served.",
)
@click.pass_context
def run(ctx: click.Context, checkpoint_every: int, as_json: bool) -> None:
    """Start the CA API, OCSP responder and signer rotation, CRL publisher and ledger
    checkpoints together.

    Creates everything on first run (data directory, SoftHSM2 token, database, CAs); a second
    run reuses it. Listens on 127.0.0.1 only by default. Ctrl-C stops everything. With
    --json, one JSON object describing what runs is printed first (start-up lines and the
    children's output are not JSON).
    """
    settings = settings_from(ctx)
    created = ensure_initialised(settings, actor())
    click.echo(("created" if created else "reusing") + f" CA in {settings.data_dir}", err=True)
    postgresql = settings.effective_database_url.startswith(("postgresql", "postgres:"))
    if as_json:
        emit_json(
            {
                "service": "run",
                "data_dir": str(settings.data_dir),
                "ca_api": f"http://{settings.listen_host}:{settings.listen_port}",
                "ocsp": settings.effective_ocsp_url,
                "crl": f"{settings.effective_crl_base_url}/<issuer>.crl",
                "checkpoint_every_seconds": checkpoint_every,
                "signer_check_every_seconds": SIGNER_CHECK_EVERY,
                "processes": [name for name, _ in _children(checkpoint_every, postgresql)],
                "changed": created,
            }
        )
        sys.stdout.flush()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, cmd in _children(checkpoint_every, postgresql):
        procs.append((name, subprocess.Popen(cmd)))
    click.echo(
        f"CA API   http://{settings.listen_host}:{settings.listen_port}\n"
        f"OCSP     {settings.effective_ocsp_url} (signers checked every {SIGNER_CHECK_EVERY} s)\n"
        f"CRLs     {settings.effective_crl_base_url}/<issuer>.crl\n"
        "ledger   checkpoints every "
        f"{checkpoint_every} s; Ctrl-C stops everything",
        err=True,
    )
    failed = ""
    while not stopping:
        for name, proc in procs:
            if proc.poll() is not None:
                failed = f"{name} exited with status {proc.returncode}"
                stopping = True
        time.sleep(0.2)
    for _name, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 15
    for _name, proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    if failed:
        click.echo(f"agentca: error: {failed}; everything was stopped", err=True)
        sys.exit(1)
