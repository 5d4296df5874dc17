"""``agentca db heartbeat``: commit the replication heartbeat on the primary (decision 0029)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from ca.errors import CAError, ErrorCode
from cli.context import settings_from
from cli.output import emit_json


@click.command("heartbeat")
@click.option(
    "--every",
    type=click.FloatRange(0.05, 1.0),
    default=0.25,
    show_default=True,
    help="Seconds between beats; keep it well inside the responders' 1 s freshness bound.",
)
@click.option("--once", is_flag=True, help="Commit one beat and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: one JSON object.")
@click.pass_context
def heartbeat(ctx: click.Context, every: float, once: bool, as_json: bool) -> None:
    """Commit a tiny transaction on the primary several times a second, so OCSP responders
    reading a streaming replica know how far it trails (they answer tryLater without it).

    'agentca run' runs it when the database is PostgreSQL. Connects through database_url
    (the writer role); runs until stopped.
    """
    from ca.store.db import make_engine
    from ca.store.heartbeat import beat, run_heartbeat

    if as_json and not once:
        raise click.UsageError("--json goes with --once (the loop prints nothing)")
    url = settings_from(ctx).effective_database_url
    engine = make_engine(url, pool_size=1)
    try:
        if engine.dialect.name != "postgresql":
            raise CAError(
                ErrorCode.CONFIG,
                "the replication heartbeat is for PostgreSQL streaming replicas; this CA's "
                f"database is {engine.dialect.name}",
            )
        if once:
            beat(engine)
            if as_json:
                emit_json({"beats": 1, "changed": True})
            else:
                click.echo("heartbeat committed")
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        run_heartbeat(engine, every, stop)
    finally:
        engine.dispose()
