"""``agentca serve``: first-run setup, then the CA API under gunicorn."""

from __future__ import annotations

import sys
from typing import Any

import click

from ca.api.app import create_app
from ca.keysetup import SOFTWARE
from ca.wiring import ensure_initialised
from cli.context import settings_from
from cli.gunicorn_app import serve_with_gunicorn
from cli.output import emit_json, note


@click.command()
@click.option("--host", default=None, help="Listen address (default from settings: 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Listen port (default 8400).")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Before serving, print one JSON object on stdout: what will be served.",
)
@click.pass_context
def serve(
    ctx: click.Context, host: str | None, port: int | None, workers: int | None, as_json: bool
) -> None:
    """Serve the CA HTTP API with gunicorn; on first run create token, database and CAs.

    A server: with --json it prints one JSON object describing what it serves before it
    starts (start-up lines stay on stderr), then serves until stopped.
    """

    settings = settings_from(ctx)
    settings = settings.replace(
        listen_host=host or settings.listen_host,
        listen_port=port or settings.listen_port,
        workers=workers or settings.workers,
    )
    if settings.key_store == SOFTWARE and settings.workers != 1:
        # Software keys live in this process and the workers it forks: a key a worker makes
        # later (the ledger's audit key) would exist in that worker only, and the others,
        # or a worker gunicorn restarts, would answer hsm-key-missing for it.
        note(f"dev mode (key_store = 'software') serves with 1 worker, not {settings.workers}")
        settings = settings.replace(workers=1)
    created = ensure_initialised(settings)
    url = f"http://{settings.listen_host}:{settings.listen_port}"
    click.echo(
        ("created" if created else "reusing") + f" CA in {settings.data_dir}; serving on {url}",
        err=True,
    )
    if as_json:
        emit_json(
            {
                "service": "ca-api",
                "url": url,
                "data_dir": str(settings.data_dir),
                "workers": settings.workers,
                "changed": created,
            }
        )
        sys.stdout.flush()
    app = create_app(settings)
    from deploy import gunicorn_ca

    options: dict[str, Any] = gunicorn_ca.options(settings)
    serve_with_gunicorn(app, options, metrics_service="ca")
