"""Auditor commands: checkpoint, export, and offline verification of the ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from cryptography import x509

from ca.errors import CAError, ErrorCode
from ca.ledger.entries import Checkpoint
from ca.ledger.store import ExportFilter
from ca.ledger.verify import Report, verify_consistency_between, verify_export
from cli.context import runtime
from cli.group import AgentcaGroup


@click.group(cls=AgentcaGroup)
def ledger() -> None:
    """The tamper-evident issuance and revocation ledger (for auditors)."""


@ledger.command("checkpoint")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the signed checkpoint (JSON) here instead of standard output.",
)
@click.option(
    "--consistency-from",
    "from_size",
    type=click.IntRange(1),
    default=None,
    help="Also include a consistency proof from this older tree size.",
)
@click.option(
    "--certificate",
    "cert_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the audit certificate (PEM), the trust anchor for verify.",
)
@click.option(
    "--every",
    type=click.IntRange(1),
    default=None,
    help="Keep running: sign a checkpoint every N seconds when the ledger grew.",
)
@click.pass_context
def checkpoint(
    ctx: click.Context,
    out: str | None,
    from_size: int | None,
    cert_out: str | None,
    every: int | None,
) -> None:
    """Sign a checkpoint (tree size + root) of the ledger now, with the audit key in the HSM."""
    if every is not None:
        _checkpoint_loop(ctx, every)
        return
    with runtime(ctx) as rt:
        cp = rt.checkpoints.checkpoint()
        data = cp.to_json()
        if from_size is not None:
            if from_size > cp.tree_size:
                raise CAError(
                    ErrorCode.BAD_REQUEST,
                    f"--consistency-from {from_size} exceeds the tree size {cp.tree_size}",
                )
            tree = rt.ledger.tree(cp.tree_size)
            data["consistency"] = {
                "from_size": from_size,
                "proof": [h.hex() for h in tree.consistency_proof(from_size, cp.tree_size)],
            }
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if cert_out:
        Path(cert_out).write_text(data["certificate_pem"])
    if out:
        Path(out).write_text(text)
        click.echo(f"checkpoint of {cp.tree_size} entries written to {out}", err=True)
    else:
        click.echo(text, nl=False)


def _checkpoint_loop(ctx: click.Context, every: int) -> None:
    """The scheduler: one checkpoint per interval while the ledger grows; stops on SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from ca.schedule import run_every

    with runtime(ctx) as rt:
        last = -1

        def sign_if_grown() -> None:
            nonlocal last
            if rt.ledger.size() != last:
                cp = rt.checkpoints.checkpoint()
                last = cp.tree_size
                click.echo(
                    f"checkpoint: {cp.tree_size} entries, root {cp.root_hash.hex()}", err=True
                )

        run_every(every, sign_if_grown, stop, "ledger checkpoint")


@ledger.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the export here instead of standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines or CSV (header on a '#' line).",
)
@click.option("--since", default=None, help="Only entries at or after this ISO time.")
@click.option("--until", default=None, help="Only entries before this ISO time.")
@click.option("--agent", default=None, help="Only entries about this agent.")
@click.option("--officer", default=None, help="Only entries about this officer of record.")
@click.option("--event", default=None, help="Only this event type, e.g. certificate.revoked.")
@click.option(
    "--sign-checkpoint",
    is_flag=True,
    help="Sign a fresh checkpoint first (a write, like 'ledger checkpoint') and export that.",
)
@click.pass_context
def export(
    ctx: click.Context,
    out: str | None,
    fmt: str,
    since: str | None,
    until: str | None,
    agent: str | None,
    officer: str | None,
    event: str | None,
    sign_checkpoint: bool,
) -> None:
    """Export the ledger up to its newest signed checkpoint, streaming.

    An export only reads: it covers the newest stored checkpoint (sign one with 'ledger
    checkpoint', or pass --sign-checkpoint). A filtered export carries an RFC 9162 inclusion
    proof for every entry it holds.
    """
    flt = ExportFilter(since=since, until=until, agent=agent, officer=officer, event=event)
    with runtime(ctx) as rt:
        cp = rt.checkpoints.checkpoint() if sign_checkpoint else rt.ledger.latest_checkpoint()
        if cp is None:
            raise CAError(
                ErrorCode.NOT_FOUND,
                "no checkpoint has been signed yet: run 'agentca ledger checkpoint' first "
                "(or pass --sign-checkpoint)",
            )
        if out:
            with open(out, "w", encoding="utf-8", newline="") as fh:
                count = rt.ledger.export(fh, cp, flt, fmt)
            click.echo(f"exported {count} of {cp.tree_size} entries to {out}", err=True)
        else:
            rt.ledger.export(sys.stdout, cp, flt, fmt)


def _trust(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot read the trusted certificate {path}") from exc


def _report(report: Report) -> None:
    if report.ok:
        click.echo(f"OK: {report.message}")
        return
    where = f" (entry {report.failed_seq})" if report.failed_seq is not None else ""
    click.echo(f"FAILED{where}: {report.message}", err=True)
    sys.exit(13)


@ledger.command("verify")
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--trust",
    "trust",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The audit certificate (PEM) that must have signed the checkpoint.",
)
def verify(export_file: str, trust: str) -> None:
    """Verify an export offline: checkpoint signature, then the whole tree (full export) or
    every inclusion proof (filtered export). Needs no database and no network."""
    with open(export_file, encoding="utf-8", newline="") as fh:
        _report(verify_export(fh, _trust(trust)))


@ledger.command("consistency")
@click.argument("old", type=click.Path(exists=True, dir_okay=False))
@click.argument("new", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--trust",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The audit certificate (PEM).",
)
def consistency(old: str, new: str, trust: str) -> None:
    """Check that checkpoint NEW extends checkpoint OLD (NEW carries the consistency proof, see
    'ledger checkpoint --consistency-from'). Offline."""
    try:
        old_doc = json.loads(Path(old).read_text())
        new_doc = json.loads(Path(new).read_text())
        old_cp, new_cp = Checkpoint.from_json(old_doc), Checkpoint.from_json(new_doc)
        proof_doc = new_doc.get("consistency") or {"from_size": old_cp.tree_size, "proof": []}
        if proof_doc["from_size"] != old_cp.tree_size:
            raise CAError(
                ErrorCode.BAD_REQUEST,
                f"NEW carries a proof from size {proof_doc['from_size']}, "
                f"OLD has size {old_cp.tree_size}",
            )
        proof = [bytes.fromhex(h) for h in proof_doc["proof"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"unreadable checkpoint: {exc}") from exc
    _report(verify_consistency_between(old_cp, new_cp, proof, _trust(trust)))
