"""CRL commands: ``agentca crl publish`` and ``agentca crl show``."""

from __future__ import annotations

import mmap
import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import click
from click.core import ParameterSource

from ca.crl import iter_revoked, read_crl_info
from ca.crl_publisher import CrlPublisher, PublishedCrl, PublishMode, delta_name, full_name
from ca.errors import CAError, ErrorCode
from ca.revocation import RevocationReason
from cli.context import runtime, settings_from
from cli.group import AgentcaGroup
from cli.output import (
    FlagConflict,
    cli_json,
    cli_serial,
    emit_json,
    note,
    refuse_together,
    rfc3339,
    with_changed,
)


def given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was typed (not its default)."""
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def published_json(p: PublishedCrl) -> dict[str, Any]:
    """One published CRL as JSON (``changed``: it was installed)."""
    return with_changed(
        cli_json(
            {
                "issuer": p.issuer,
                "kind": p.kind,
                "number": p.number,
                "base_number": p.base_number,
                "this_update": p.this_update,
                "next_update": p.next_update,
                "entries": p.entries,
                "size": p.size,
                "path": str(p.path),
                "installed": p.replaced,
            }
        ),
        p.replaced,
    )


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
@click.option("--full", is_flag=True, help="Always publish a complete CRL (and a fresh delta).")
@click.option("--delta", is_flag=True, help="Publish only a delta CRL on the last complete CRL.")
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
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per CRL published.")
@click.pass_context
def publish(
    ctx: click.Context,
    issuers: tuple[str, ...],
    all_issuers: bool,
    full: bool,
    delta: bool,
    loop: bool,
    interval: int | None,
    settle: float,
    on_change: str,
    poll: float,
    as_json: bool,
) -> None:
    """Sign and publish CRLs into the publish directory (default: DATA_DIR/crl).

    Writes <issuer>.crl (complete CRL) and <issuer>-delta.crl (delta CRL), atomically. Without
    --full/--delta a complete CRL is published when one is due (no CRL yet, or the interval
    has passed), a delta CRL otherwise. With --loop it keeps running (a server: --json
    makes each publication a JSON line; the start-up line stays on stderr).
    """
    refuse_together(issuer=issuers, all=all_issuers)
    refuse_together(full=full, delta=delta)
    if loop and (full or delta):
        raise FlagConflict(
            f"--loop and --{'full' if full else 'delta'} contradict each other: with --loop, "
            "--on-change chooses what a revocation publishes"
        )
    for name in ("settle", "on_change", "poll"):
        if not loop and given(ctx, name):
            raise FlagConflict(f"--{name.replace('_', '-')} needs --loop")

    def report(p: PublishedCrl) -> None:
        if as_json:
            emit_json(published_json(p))
        else:
            click.echo(p.describe())

    with runtime(ctx) as rt:
        publisher = CrlPublisher.from_runtime(rt, timedelta(seconds=interval) if interval else None)
        names = list(issuers) or publisher.issuer_names()
        for name in names:
            rt.authority.issuer(name)  # NOT_FOUND early, with the issuer's name
        names = _without_offline_root(rt, names, explicit=bool(issuers))
        if not loop:
            chosen: PublishMode = "full" if full else "delta" if delta else "auto"
            for published in publisher.publish_all(names, chosen):
                report(published)
            return
        stop = threading.Event()

        def _stop(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        note(
            f"publishing CRLs for {', '.join(names)} into {publisher.publish_dir} "
            f"(complete every {int(publisher.interval.total_seconds())} s; on change: {on_change})"
        )
        publisher.run(
            stop,
            names,
            poll=poll,
            settle=settle,
            on_publish=report,
            on_error=lambda e, delay: click.echo(
                f"agentca: error: {e.detail} [{e.code.slug}]; retrying in {delay:.1f} s", err=True
            ),
            on_change="full" if on_change == "full" else "delta",
        )


def _without_offline_root(rt: Any, names: list[str], explicit: bool) -> list[str]:
    """With the root key on its own token (decision 0034) the root's CRLs are signed at the
    ceremony only: left out here (said once), and refused when asked for by name."""
    if not rt.settings.root_offline:
        return names
    roots = {r.name for r in rt.authority.issuers() if r.parent_name is None}
    asked = [n for n in names if n in roots]
    if asked and explicit:
        raise CAError(
            ErrorCode.BAD_REQUEST,
            f"the {asked[0]} CRL is signed at the root key ceremony (root_token_label is set): "
            "attach the root token and run 'agentca ca ceremony'",
        )
    if asked:
        note(
            f"skipping {', '.join(asked)}: the root key is offline (root_token_label="
            f"{rt.settings.root_token_label}); its CRL is signed at the ceremony "
            "('agentca ca ceremony')"
        )
    kept = [n for n in names if n not in roots]
    if not kept:
        raise CAError(ErrorCode.NOT_INITIALISED, "no issuing CA to publish CRLs for")
    return kept


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
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: the header and the entries listed."
)
@click.pass_context
def show(
    ctx: click.Context,
    issuer: str,
    delta: bool,
    path: Path | None,
    text: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Print a published CRL: number, this/next update, entry count and the first entries."""
    if path is not None:
        refuse_together(file=True, issuer=given(ctx, "issuer"), delta=delta)
    refuse_together(text=text, limit=given(ctx, "limit"))
    if path is None:
        directory = settings_from(ctx).effective_crl_publish_dir
        path = directory / (delta_name(issuer) if delta else full_name(issuer))
        if not path.exists():
            raise CAError(
                ErrorCode.NOT_FOUND,
                f"no {'delta ' if delta else ''}CRL for '{issuer}' in {directory}; "
                "run 'agentca crl publish'",
            )
    size = path.stat().st_size
    if size == 0:
        raise CAError(ErrorCode.BAD_REQUEST, f"{path} is empty")
    with path.open("rb") as fh:
        info = read_crl_info(fh)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            count = 0
            entries: list[dict[str, Any]] = []
            for entry in iter_revoked(view):
                if text or count < limit:
                    reason = RevocationReason(entry.reason).text if entry.reason else None
                    entries.append(
                        {
                            "serial": cli_serial(entry.serial),
                            "revoked_at": rfc3339(entry.revoked_at),
                            "reason": reason,
                        }
                    )
                count += 1
    doc: dict[str, Any] = {
        "file": str(path),
        "size": size,
        "kind": "delta" if info.base_number is not None else "full",
        "number": info.number,
        "base_number": info.base_number,
        "this_update": rfc3339(info.this_update),
        "next_update": rfc3339(info.next_update),
        "freshest_url": info.freshest_url,
        "count": count,
        "entries": entries,
    }
    if as_json:
        emit_json(doc)
        return
    click.echo(f"file:        {path} ({size} bytes)")
    if info.base_number is not None:
        click.echo(f"type:        delta CRL on base CRL #{info.base_number}")
    else:
        click.echo("type:        complete CRL")
    click.echo(f"number:      {info.number}")
    click.echo(f"this update: {doc['this_update']}")
    click.echo(f"next update: {doc['next_update'] or '-'}")
    if info.freshest_url:
        click.echo(f"freshest:    {info.freshest_url}")
    click.echo(f"entries:     {count}")
    if entries:
        width = max(len("SERIAL"), *(len(e["serial"]) for e in entries))
        click.echo(f"  {'SERIAL':{width}}  {'REVOKED AT':20}  REASON")
        for e in entries:
            click.echo(f"  {e['serial']:{width}}  {e['revoked_at']:20}  {e['reason'] or '-'}")
    if count > len(entries):
        click.echo(f"  ... {count - len(entries)} more (use --text to list all)")
