"""``agentca reconcile``: fail reservations abandoned by a crash, releasing their tokens."""

from __future__ import annotations

import signal
import threading
from datetime import timedelta

import click

from cli.context import actor, runtime, settings_from
from cli.output import cli_serial, emit_json


@click.command("reconcile")
@click.option(
    "--older-than",
    type=click.IntRange(0),
    default=None,
    help="Seconds a reservation must have been pending (default: pending_reconcile_seconds, 120).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a sentence.")
@click.option(
    "--every",
    type=click.IntRange(1),
    default=None,
    help="Keep running: reconcile every N seconds (the CA API workers already do this).",
)
@click.pass_context
def reconcile(ctx: click.Context, older_than: int | None, as_json: bool, every: int | None) -> None:
    """Mark reservations pending for longer than the bound as failed, in the ledger.

    A reservation still pending after the bound was abandoned by a crash or an outage: its
    certificate, if one was signed, was never stored nor handed to anyone. Its enrollment
    token is released, so the agent's retry with the same token succeeds. Prints one line.
    """
    settings = settings_from(ctx)
    bound = timedelta(seconds=older_than) if older_than is not None else settings.pending_bound
    who = actor()

    with runtime(ctx) as rt:

        def once() -> None:
            failed = [cli_serial(serial) for serial in rt.authority.reconcile(bound, actor=who)]
            if as_json:
                emit_json(
                    {
                        "reconciled": len(failed),
                        "older_than_seconds": int(bound.total_seconds()),
                        "serials": failed,
                        "changed": bool(failed),
                    }
                )
                return
            click.echo(
                f"reconciled {len(failed)} reservation(s) pending for more than "
                f"{int(bound.total_seconds())} s" + (": " + " ".join(failed) if failed else "")
            )

        if every is None:
            once()
            return
        from ca.schedule import run_every

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        run_every(every, once, stop, "reconciliation")
