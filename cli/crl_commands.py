"""CRL commands: ``agentca crl publish`` and ``agentca crl show``."""

from __future__ import annotations

import mmap
import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType

import click

from ca.crl import iter_revoked, read_crl_info
from ca.crl_publisher import CrlPublisher, PublishMode, delta_name, full_name
from ca.errors import CAError, ErrorCode
from ca.revocation import RevocationReason
from cli.context import runtime, settings_from
from cli.group import AgentcaGroup


@click.group(cls=AgentcaGroup)
def crl() -> None:
    """Publish and inspect certificate revocation lists (complete and delta CRLs)."""


@crl.command()
@click.option(
    "--issuer",
    "issuers",
    multiple=True,
    metavar="NAME",
    help="Issuer to publish for (repeatable; e.g. issuing, root). Default: all issuers.",
)
@click.option("--all", "all_issuers", is_flag=True, help="Publish for every issuer (the default).")
@click.option(
    "--full", "mode", flag_value="full", help="Always publish a complete CRL (and a fresh delta)."
)
@click.option(
    "--delta", "mode", flag_value="delta", help="Publish only a delta CRL on the last complete CRL."
)
@click.option("--loop", is_flag=True, help="Keep running: publish on revocation and on schedule.")
@click.option(
    "--interval",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Complete CRL every SECONDS; nextUpdate is twice that (default: settings, 3600).",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With --loop: publish once no change has arrived for SECONDS.",
)
@click.option(
    "--on-change",
    type=click.Choice(["full", "delta"]),
    default="full",
    show_default=True,
    help="With --loop: what a revocation triggers: a new complete CRL (plus its delta), or "
    "only a delta (for very large CRLs whose clients follow Freshest CRL).",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="With --loop: how often to look for new status changes.",
)
@click.pass_context
def publish(
    ctx: click.Context,
    issuers: tuple[str, ...],
    all_issuers: bool,
    mode: str | None,
    loop: bool,
    interval: int | None,
    settle: float,
    on_change: str,
    poll: float,
) -> None:
    """Sign and publish CRLs into the publish directory (default: DATA_DIR/crl).

    Writes <issuer>.crl (complete CRL) and <issuer>-delta.crl (delta CRL), atomically. Without
    --full/--delta a complete CRL is published when one is due (no CRL yet, or the interval
    has passed), a delta CRL otherwise.
    """
    if all_issuers and issuers:
        raise CAError(ErrorCode.BAD_REQUEST, "give either --issuer or --all, not both")
    with runtime(ctx) as rt:
        publisher = CrlPublisher.from_runtime(rt, timedelta(seconds=interval) if interval else None)
        names = list(issuers) or publisher.issuer_names()
        for name in names:
            rt.authority.issuer(name)  # NOT_FOUND early, with the issuer's name
        if not loop:
            chosen: PublishMode = "full" if mode == "full" else "delta" if mode else "auto"
            for published in publisher.publish_all(names, chosen):
                click.echo(published.describe())
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        click.echo(
            f"publishing CRLs for {', '.join(names)} into {publisher.publish_dir} "
            f"(complete every {int(publisher.interval.total_seconds())} s; on change: {on_change})",
            err=True,
        )
        publisher.run(
            stop,
            names,
            poll=poll,
            settle=settle,
            on_publish=lambda p: click.echo(p.describe()),
            on_error=lambda e, delay: click.echo(
                f"agentca: error: {e.detail} [{e.code.slug}]; retrying in {delay:.1f} s", err=True
            ),
            on_change="full" if on_change == "full" else "delta",
        )


@crl.command()
@click.option("--issuer", default="issuing", show_default=True, help="Issuer whose CRL to show.")
@click.option("--delta", is_flag=True, help="Show the delta CRL instead of the complete CRL.")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Show this DER CRL file instead of a published one.",
)
@click.option("--text", is_flag=True, help="List every entry, not only the first ones.")
@click.option(
    "--limit", type=click.IntRange(min=0), default=10, show_default=True, help="Entries listed."
)
@click.pass_context
def show(
    ctx: click.Context, issuer: str, delta: bool, path: Path | None, text: bool, limit: int
) -> None:
    """Print a published CRL: number, this/next update, entry count and the first entries."""
    if path is None:
        directory = settings_from(ctx).effective_crl_publish_dir
        path = directory / (delta_name(issuer) if delta else full_name(issuer))
        if not path.exists():
            raise CAError(
                ErrorCode.NOT_FOUND,
                f"no {'delta ' if delta else ''}CRL for '{issuer}' in {directory}; "
                "run 'agentca crl publish'",
            )
    with path.open("rb") as fh:
        info = read_crl_info(fh)
        size = path.stat().st_size
        click.echo(f"file:        {path} ({size} bytes)")
        if info.base_number is not None:
            click.echo(f"type:        delta CRL on base CRL #{info.base_number}")
        else:
            click.echo("type:        complete CRL")
        click.echo(f"number:      {info.number}")
        click.echo(f"this update: {info.this_update.isoformat()}")
        next_update = info.next_update.isoformat() if info.next_update else "-"
        click.echo(f"next update: {next_update}")
        if info.freshest_url:
            click.echo(f"freshest:    {info.freshest_url}")
        if size == 0:
            raise CAError(ErrorCode.BAD_REQUEST, f"{path} is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            count = 0
            lines: list[str] = []
            for entry in iter_revoked(view):
                if text or count < limit:
                    reason = RevocationReason(entry.reason).text if entry.reason else "-"
                    lines.append(f"  {entry.serial:x}  {entry.revoked_at.isoformat()}  {reason}")
                count += 1
    click.echo(f"entries:     {count}")
    for line in lines:
        click.echo(line)
    if count > len(lines):
        click.echo(f"  ... {count - len(lines)} more (use --text to list all)")
