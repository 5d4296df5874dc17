"""``agentca config``: the effective configuration (``show``) and agent config digests."""

from __future__ import annotations

import click

from ca.config import derived_items, effective_items, load_settings_with_sources, url_warnings
from cli.digest_commands import config_digest_command
from cli.group import AgentcaGroup
from cli.output import emit_json, warn


@click.group(cls=AgentcaGroup)
def config() -> None:
    """The CA's effective configuration, and runtime-configuration digests of agents."""


config.add_command(config_digest_command)


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Print every setting, its value and where it came from (default, file, env).

    Reads the configuration only: it opens no database and no HSM and creates nothing.
    Passwords in database URLs are printed as ***.
    """
    root = ctx.find_root().obj or {}
    settings, sources = load_settings_with_sources(config_file=root.get("config"))
    items = effective_items(settings)
    derived = dict(derived_items(settings))
    warnings = url_warnings(settings)
    if as_json:
        doc = {
            "settings": {
                name: {"value": v, "source": sources[name]}
                | ({"effective": derived[name]} if name in derived else {})
                for name, v in items
            },
            "warnings": warnings,
        }
        emit_json(doc)
        for line in warnings:
            warn(line)
        return
    width = max(len(name) for name, _ in items)
    click.echo(f"{'SETTING':<{width}}  {'SOURCE':<10}  VALUE")
    for name, value in items:
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        if value == "" and name in derived:
            shown = f"({derived[name]})"
        source = sources[name]
        click.echo(f"{name:<{width}}  {source.split(' ', 1)[0]:<10}  {shown}")
    for line in warnings:
        warn(line)
