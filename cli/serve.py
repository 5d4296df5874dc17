"""``agentca serve``: first-run setup, then the CA API under gunicorn."""

from __future__ import annotations

from typing import Any

import click

from ca.api.app import create_app
from ca.keysetup import SOFTWARE
from ca.wiring import ensure_initialised
from cli.context import settings_from
from cli.gunicorn_app import serve_with_gunicorn


@click.command()
@click.option("--host", default=None, help="Listen address (default from settings: 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Listen port (default 8400).")
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Worker processes.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the CA HTTP API with gunicorn; on first run create token, database and CAs."""

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
        click.echo(
            f"agentca: dev mode (key_store = 'software') serves with 1 worker, "
            f"not {settings.workers}",
            err=True,
        )
        settings = settings.replace(workers=1)
    created = ensure_initialised(settings)
    click.echo(
        ("created" if created else "reusing") + f" CA in {settings.data_dir}; serving on "
        f"http://{settings.listen_host}:{settings.listen_port}",
        err=True,
    )
    app = create_app(settings)
    from deploy import gunicorn_ca

    options: dict[str, Any] = gunicorn_ca.options(settings)
    serve_with_gunicorn(app, options)
