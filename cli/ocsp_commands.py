"""``agentca ocsp serve`` (the read-only responder) and ``agentca ocsp rotate-signer`` (the CA
side: it issues the responder certificates the responder only loads; decision 0018)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ca.errors import CAError, ErrorCode
from cli.context import parse_duration, settings_from
from cli.group import AgentcaGroup
from cli.gunicorn_app import serve_with_gunicorn
from cli.output import cli_json, emit_json, note, rfc3339, table, with_changed
from ocsp.options import OcspOptions

if TYPE_CHECKING:
    from ca.config import Settings
    from ca.responder_certs import ResponderCertPolicy, RotationResult


@click.group(cls=AgentcaGroup)
def ocsp() -> None:
    """RFC 6960 OCSP responder: serve it, rotate its delegated signer certificates."""


def _options(response_validity: str | None) -> OcspOptions:
    opts = OcspOptions()
    if response_validity:
        opts = opts.replace(response_validity=parse_duration(response_validity))
    return opts


def _policy(signer_validity: str | None) -> ResponderCertPolicy:
    from ca.responder_certs import ResponderCertPolicy

    policy = ResponderCertPolicy()
    if signer_validity:
        policy = ResponderCertPolicy(validity=parse_duration(signer_validity))
    if policy.validity * policy.renew_fraction <= OcspOptions().response_validity:
        raise CAError(
            ErrorCode.CONFIG,
            "the signer validity must be more than twice the response validity",
        )
    return policy


def _warn_missing_signers(settings: Settings, opts: OcspOptions) -> list[str]:
    """Say which CAs have no usable responder certificate yet (read-only; the responder
    answers tryLater for them until the CA side publishes one); returns their names."""
    from ca.clock import utcnow
    from ocsp.status import SqlStatusSource
    from ocsp.wiring import ocsp_engine

    engine = ocsp_engine(settings, opts)
    try:
        source = SqlStatusSource(engine)
        have = {s.issuer_id for s in source.signers(utcnow())}
        missing = [i.name for i in source.issuers() if i.id not in have]
    except CAError:
        return []  # the workers report an unreachable database themselves
    finally:
        engine.dispose()
    if missing:
        note(
            "no OCSP responder certificate for " + ", ".join(missing) + ": answering tryLater "
            "for them until 'agentca ocsp rotate-signer' (or 'agentca run') publishes one"
        )
    return missing


_RESPONSE_VALIDITY = click.option(
    "--response-validity", default=None, help="nextUpdate - thisUpdate (default 1h)."
)
_SIGNER_VALIDITY = click.option(
    "--signer-validity", default=None, help="Responder certificate lifetime (default 48h)."
)


@ocsp.command()
@click.option("--host", default=None, help="Listen address (default from settings: 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Listen port (default 8401).")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(4, 100_000),
    help="Open connections per worker; one client address may hold a quarter of them.",
)
@click.option(
    "--serve-stale-for",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 86_400),
    help="Seconds of a database outage during which the answers known at the last good poll "
    "are still given (availability over freshness): a revocation committed in the last "
    "poll interval before the outage is answered 'good' for that long. 0: tryLater once the "
    "status is older than 1 s.",
)
@click.option(
    "--sign-rate-per-client",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, 1_000_000),
    help="New signatures per second per client address and worker (nonce, multi-CertID "
    "and uncached requests); 0 turns the budget off (benchmarks from one address).",
)
@_RESPONSE_VALIDITY
@click.option(
    "--answer-map",
    "answer_map",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of this host's answer map (a snapshot of the pre-signed answers every "
    "worker maps; only the OCSP service may write it). Default: <data_dir>/ocsp-map.",
)
@click.option(
    "--no-answer-map",
    is_flag=True,
    help="Serve from the shared store and the per-worker cache only.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Before serving, print one JSON object on stdout: what will be served.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    max_connections: int,
    serve_stale_for: float,
    sign_rate_per_client: float,
    response_validity: str | None,
    answer_map: Path | None,
    no_answer_map: bool,
    as_json: bool,
) -> None:
    """Serve OCSP with gunicorn (POST /ocsp, GET /ocsp/<base64>, /health).

    Read-only: it loads the responder certificates the CA side publishes (keys in the
    responder token, 'ocsp_token_label') and needs only SELECT on the database
    ('ocsp_database_url'). Workers switch to a newer certificate by themselves.
    """

    from deploy import gunicorn_ocsp
    from ocsp.app import create_app

    settings = settings_from(ctx)
    settings = settings.replace(
        listen_host=host or settings.listen_host,
        ocsp_listen_port=port or settings.ocsp_listen_port,
        workers=workers or settings.workers,
    )
    map_dir = "" if no_answer_map else str(answer_map or settings.data_dir / "ocsp-map")
    opts = _options(response_validity).replace(
        serve_stale_for=serve_stale_for,
        sign_rate_per_client=sign_rate_per_client,
        answer_map_dir=map_dir,
    )
    if serve_stale_for:
        note(
            f"serving stale answers for up to {serve_stale_for:g} s of a database outage "
            "(a revocation committed just before it may be answered 'good' for that long)"
        )
    missing = _warn_missing_signers(settings, opts)
    url = f"http://{settings.listen_host}:{settings.ocsp_listen_port}/ocsp"
    note(f"serving OCSP on {url}")
    if as_json:
        emit_json(
            {
                "service": "ocsp",
                "url": url,
                "workers": settings.workers,
                "max_connections": max_connections,
                "serve_stale_for": serve_stale_for,
                "response_validity_seconds": int(opts.response_validity.total_seconds()),
                "missing_signers": missing,
                "answer_map": map_dir or None,
            }
        )
        sys.stdout.flush()
    app = create_app(settings, opts)
    options: dict[str, Any] = gunicorn_ocsp.options(settings)
    options["worker_connections"] = max_connections
    serve_with_gunicorn(app, options, metrics_service="ocsp")


def _print(results: list[RotationResult], as_json: bool, header: bool = True) -> None:
    if as_json:
        for result in results:
            emit_json(with_changed(cli_json(result.to_dict()), result.created))
        return
    rows = [
        [
            r.issuer_name,
            "created" if r.created else "current",
            r.key_label,
            rfc3339(r.not_after),
        ]
        for r in results
    ]
    if rows or header:
        table(["ISSUER", "SIGNER", "KEY LABEL", "NOT AFTER"], rows)


@ocsp.command("rotate-signer")
@click.option("--if-needed", is_flag=True, help="Only create signers that are missing or due.")
@click.option(
    "--every",
    type=click.IntRange(1),
    default=None,
    help="Keep running: every N seconds, publish a new signer where one is due (ahead of "
    "expiry, while the old one is still valid). 'agentca run' runs this.",
)
@click.option(
    "--retire-previous",
    is_flag=True,
    help="Also retire every older signer of each CA at once: responders stop serving the "
    "answers it signed (a key suspected). Without it they serve them until re-signed.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one object per CA.")
@_SIGNER_VALIDITY
@click.pass_context
def rotate_signer(
    ctx: click.Context,
    if_needed: bool,
    every: int | None,
    retire_previous: bool,
    as_json: bool,
    signer_validity: str | None,
) -> None:
    """Issue a new delegated OCSP responder certificate for every CA (CA side).

    The key is generated in the responder's token, never the CA's; the certificate is
    signed with the issuing CA's key. Running responders switch to the newest valid signer
    within a fraction of a second. With --if-needed (and --every), only where one is missing,
    due for renewal (less than half its lifetime left) or not loadable by the responder.
    """
    from ca.responder_certs import rotate_responder_certs

    settings, policy = settings_from(ctx), _policy(signer_validity)
    if settings.root_offline:  # said once, not on every tick of --every
        note(
            "skipping the root: its key is offline (root_token_label="
            f"{settings.root_token_label}); its responder certificate is renewed at the "
            "ceremony ('agentca ca ceremony')"
        )
    if retire_previous and (if_needed or every is not None):
        raise click.UsageError("--retire-previous is a one-off forced rotation")
    if every is None:
        results = rotate_responder_certs(
            settings, force=not if_needed, policy=policy, retire_previous=retire_previous
        )
        _print(results, as_json)
        return
    import signal
    import threading

    from ca.schedule import run_every

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def rotate_due() -> None:
        results = rotate_responder_certs(settings, policy=policy)
        _print([r for r in results if r.created], as_json, header=False)

    run_every(every, rotate_due, stop, "ocsp signer rotation")


def _add_presign() -> None:
    from cli.presign_commands import presign

    ocsp.add_command(presign)


_add_presign()
