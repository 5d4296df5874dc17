"""``agentca ocsp presign``: keep the shared store of pre-signed OCSP answers filled and fresh
(the CA side of decision 0038; ``agentca run`` runs it)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from cli.context import settings_from
from cli.output import emit_json


@click.command("presign")
@click.option("--once", is_flag=True, help="Sign everything that is due, then exit.")
@click.option(
    "--every",
    type=click.FloatRange(0.05, 60.0),
    default=0.5,
    show_default=True,
    help="Seconds between steps of the loop (revocations are re-signed within about this).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.0),
    default=200.0,
    show_default=True,
    help="At most this many signatures per second (0: no limit), so on-demand signing by "
    "the responders keeps its share of the HSM.",
)
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option(
    "--sweep-every",
    type=click.FloatRange(1.0),
    default=30.0,
    show_default=True,
    help="Seconds between sweeps for certificates without a usable answer.",
)
@click.option(
    "--response-validity",
    default=None,
    help="nextUpdate - thisUpdate of the answers (default 1h). Responders serve a stored "
    "answer only if it lives no longer than their own --response-validity.",
)
@click.option("--json", "as_json", is_flag=True, help="With --once: one JSON object.")
@click.pass_context
def presign(
    ctx: click.Context,
    once: bool,
    every: float,
    rate: float,
    batch: int,
    sweep_every: float,
    response_validity: str | None,
    as_json: bool,
) -> None:
    """Sign OCSP answers ahead of demand into the shared store every responder reads.

    Follows issuance, revocation, hold and release, re-signs answers before their refresh
    time, and sweeps for anything missing. Writes ocsp_responses through database_url (the
    writer role); signs with the responder token's current delegated signers.
    """
    from ca.clock import utcnow
    from ca.keysetup import guard_signing
    from ca.responder_token import responder_token_config
    from ca.store.db import make_engine
    from cli.context import parse_duration
    from hsm import KeyStore
    from ocsp.loaded_signers import CurrentSigners
    from ocsp.options import OcspOptions
    from ocsp.presigner import Presigner, presigned_count
    from ocsp.status import SqlStatusSource

    if as_json and not once:
        raise click.UsageError("--json goes with --once (the loop logs what it signs)")
    settings = settings_from(ctx)
    engine = make_engine(settings.effective_database_url, pool_size=2)
    options = OcspOptions()
    if response_validity:
        options = options.replace(response_validity=parse_duration(response_validity))
    keys = KeyStore(responder_token_config(settings))
    try:
        # every signature refuses while this host's clock is off (decision 0013): answers
        # dated in the future would be refused by clients yet served by every responder
        guard_signing(keys, engine, settings)
        signers = CurrentSigners(SqlStatusSource(engine), keys, utcnow)
        presigner = Presigner(
            engine, signers, options, rate=rate, batch=batch, sweep_every=sweep_every
        )
        if once:
            stats = presigner.fill()
            if as_json:
                emit_json(
                    {
                        "signed": stats.signed,
                        "changes": stats.changes,
                        "new": stats.new,
                        "refreshed": stats.refreshed,
                        "swept": stats.swept,
                        "stored": presigned_count(engine),
                        "seconds": round(stats.seconds, 3),
                    }
                )
            else:
                click.echo(
                    f"presigned {stats.signed} OCSP answers in {stats.seconds:.1f}s "
                    f"({presigned_count(engine)} in the store)"
                )
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        presigner.run(stop, every)
    finally:
        keys.close()
        engine.dispose()
