"""``agentca oid-arc``: show the CA's OID arc, move the CA to a new one (decision 0022)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from ca.arcs import ArcState, arc_setting
from ca.errors import CAError, ErrorCode
from ca.oids import OidArc, arc_warnings
from cli.context import actor, runtime
from cli.group import AgentcaGroup
from cli.output import emit_json, rfc3339, unchanged, with_changed
from cli.output import warn as warn_line


def warn(arc: OidArc) -> list[str]:
    """Print ``arc``'s warnings to stderr (never stdout: ``--json`` stays parseable)."""
    warnings = arc_warnings(arc)
    for line in warnings:
        warn_line(line)
    return warnings


def _state(state: ArcState, now: datetime) -> dict[str, Any]:
    return {
        "oid_arc": state.current.dotted,
        "accepted_oid_arcs": [a.dotted for a in state.accepted(now)],
        "previous_oid_arcs": [
            {"oid_arc": p.arc.dotted, "accepted_until": rfc3339(p.until)}
            for p in state.previous
            if p.until > now
        ],
    }


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(data)
        return
    click.echo(f"oid arc   {data['oid_arc']}")
    for p in data["previous_oid_arcs"]:
        click.echo(f"previous  {p['oid_arc']}  accepted until {p['accepted_until']}")


@click.group(cls=AgentcaGroup, name="oid-arc")
def oid_arc() -> None:
    """The CA's OID arc: show it, move the CA to a new one."""


@oid_arc.command()
@click.option("--json", "as_json", is_flag=True, help="Print the arcs as JSON.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Show the arc new certificates are issued under and the previous arcs still accepted."""
    with runtime(ctx) as rt:
        state = rt.authority.hierarchy.arc_state()
        now = rt.authority.clock()
    warn(state.current)
    _print(_state(state, now), as_json)


@oid_arc.command(name="set")
@click.argument("dotted")
@click.option("--json", "as_json", is_flag=True, help="Print the new arcs as JSON.")
@click.pass_context
def set_arc(ctx: click.Context, dotted: str, as_json: bool) -> None:
    """Move the CA to the arc DOTTED (e.g. 1.3.6.1.4.1.<PEN>.1): new certificates use it.

    The current arc stays accepted (``/ca/metadata.json``) for max_validity_hours, the
    longest any certificate issued under it can still be valid. Recorded in the ledger.
    Setting the arc the CA already issues under changes nothing and succeeds.
    """
    if not dotted.strip():
        raise CAError(ErrorCode.CONFIG, "oid_arc: give the dotted arc to move to")
    arc = arc_setting(dotted)
    with runtime(ctx) as rt:
        hierarchy = rt.authority.hierarchy
        state = hierarchy.arc_state()
        changed = state.current != arc
        if changed:
            state = hierarchy.set_oid_arc(arc, actor())
        now = rt.authority.clock()
    if not changed:
        unchanged(f"the CA already issues under the OID arc {arc}")
    data = _state(state, now)
    data["warnings"] = warn(arc)
    _print(with_changed(data, changed), as_json)
