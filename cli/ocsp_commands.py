"""``agentca ocsp serve`` and ``agentca ocsp rotate-signer``."""

from __future__ import annotations

from typing import Any

import click

from ca.errors import CAError, ErrorCode
from cli.context import parse_duration, settings_from
from cli.group import AgentcaGroup
from cli.gunicorn_app import serve_with_gunicorn
from ocsp.options import OcspOptions


@click.group(cls=AgentcaGroup)
def ocsp() -> None:
    """RFC 6960 OCSP responder: serve it, rotate its delegated signer certificates."""


def _options(response_validity: str | None, signer_validity: str | None) -> OcspOptions:
    opts = OcspOptions()
    if response_validity:
        opts = opts.replace(response_validity=parse_duration(response_validity))
    if signer_validity:
        opts = opts.replace(signer_validity=parse_duration(signer_validity))
    if opts.signer_validity * opts.signer_renew_fraction <= opts.response_validity:
        raise CAError(
            ErrorCode.CONFIG,
            "the signer validity must be more than twice the response validity",
        )
    return opts


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
@_RESPONSE_VALIDITY
@_SIGNER_VALIDITY
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    max_connections: int,
    serve_stale_for: float,
    response_validity: str | None,
    signer_validity: str | None,
) -> None:
    """Serve OCSP with gunicorn (POST /ocsp, GET /ocsp/<base64>, /health).

    Before forking the workers, makes sure every CA has a current delegated responder
    certificate (key in the HSM); workers re-check and pick up newer ones by themselves.
    """

    from deploy import gunicorn_ocsp
    from ocsp.app import create_app
    from ocsp.service import ensure_signers

    settings = settings_from(ctx)
    settings = settings.replace(
        listen_host=host or settings.listen_host,
        ocsp_listen_port=port or settings.ocsp_listen_port,
        workers=workers or settings.workers,
    )
    opts = _options(response_validity, signer_validity).replace(serve_stale_for=serve_stale_for)
    if serve_stale_for:
        click.echo(
            f"serving stale answers for up to {serve_stale_for:g} s of a database outage "
            "(a revocation committed just before it may be answered 'good' for that long)",
            err=True,
        )
    for result in ensure_signers(settings, opts):
        click.echo(
            f"OCSP signer for {result.issuer_name}: {result.key_label} "
            f"(until {result.not_after:%Y-%m-%dT%H:%M:%SZ}" + (", new)" if result.created else ")"),
            err=True,
        )
    click.echo(
        f"serving OCSP on http://{settings.listen_host}:{settings.ocsp_listen_port}/ocsp", err=True
    )
    app = create_app(settings, opts)
    options: dict[str, Any] = gunicorn_ocsp.options(settings)
    options["worker_connections"] = max_connections
    serve_with_gunicorn(app, options)


@ocsp.command("rotate-signer")
@click.option("--if-needed", is_flag=True, help="Only create signers that are missing or expiring.")
@_SIGNER_VALIDITY
@click.pass_context
def rotate_signer(ctx: click.Context, if_needed: bool, signer_validity: str | None) -> None:
    """Issue a new delegated OCSP responder certificate for every CA (key made in the HSM).

    Running responders switch to the newest signer within a fraction of a second.
    """
    from ocsp.service import ensure_signers

    opts = _options(None, signer_validity)
    for result in ensure_signers(settings_from(ctx), opts, force=not if_needed):
        state = "created" if result.created else "current"
        click.echo(
            f"{result.issuer_name:8} {state:8} {result.key_label} "
            f"notAfter={result.not_after:%Y-%m-%dT%H:%M:%SZ}"
        )
