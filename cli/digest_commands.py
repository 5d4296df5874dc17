"""Digest helpers: the model weights manifest, system-prompt and runtime-config digests.

``config digest`` is attached to the ``config`` group by :mod:`cli.config_commands`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ca.digests import (
    config_digest,
    model_digest,
    model_manifest,
    oms_model_digest,
    prompt_digest_file,
)
from ca.errors import CAError, ErrorCode
from cli.group import AgentcaGroup
from cli.output import emit_json

_JSON = click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: the digest and what it is of."
)


@click.group(cls=AgentcaGroup)
def model() -> None:
    """Model provenance helpers."""


@model.command("digest")
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "--manifest",
    is_flag=True,
    help="Also print the manifest lines that are hashed (on stderr; with --json, as a list).",
)
@click.option(
    "--scheme",
    type=click.Choice(["agentca-manifest-v1", "oms-v1"]),
    default="agentca-manifest-v1",
    show_default=True,
    help="oms-v1: the OpenSSF Model Signing root digest (what 'model_signing sign' signs).",
)
@click.option(
    "--ignore",
    "ignore",
    multiple=True,
    help="oms-v1: a path relative to the model to leave out, e.g. model.sig (repeatable).",
)
@click.option(
    "--allow-symlinks", is_flag=True, help="oms-v1: hash symlinked files (as OMS's flag)."
)
@_JSON
def model_digest_command(
    path: str,
    manifest: bool,
    scheme: str,
    ignore: tuple[str, ...],
    allow_symlinks: bool,
    as_json: bool,
) -> None:
    """Print the model digest of a weights file or directory (constant memory)."""
    if scheme == "oms-v1":
        _oms_digest(path, manifest, ignore, allow_symlinks, as_json)
        return
    if ignore or allow_symlinks:
        raise click.UsageError("--ignore and --allow-symlinks need --scheme oms-v1")
    lines: list[str] = []
    if manifest:
        for entry in model_manifest(Path(path)):
            line = entry.line().decode()
            if as_json:
                lines.append(line.rstrip("\n"))
            else:
                click.echo(line, nl=False, err=True)
    digest = model_digest(Path(path)).hex()
    if as_json:
        emit_json({"path": path, "digest": digest} | ({"manifest": lines} if manifest else {}))
    else:
        click.echo(digest)


def _oms_digest(
    path: str, manifest: bool, ignore: tuple[str, ...], allow_symlinks: bool, as_json: bool
) -> None:
    result = oms_model_digest(Path(path), ignore=ignore, allow_symlinks=allow_symlinks)
    lines = [f"{r.sha256.hex()}  {r.size}  {r.name}" for r in result.resources]
    if as_json:
        emit_json(
            {"path": path, "digest": result.root.hex(), "scheme": "oms-v1"}
            | ({"manifest": lines} if manifest else {})
        )
        return
    if manifest:
        for line in lines:
            click.echo(line, err=True)
    click.echo(result.root.hex())


@click.group(cls=AgentcaGroup)
def prompt() -> None:
    """System-prompt provenance helpers."""


@prompt.command("digest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_JSON
def prompt_digest_command(file: str, as_json: bool) -> None:
    """Print the SHA-256 of the system prompt FILE's exact bytes."""
    _print_digest(file, prompt_digest_file(Path(file)).hex(), as_json)


def _print_digest(path: str, digest: str, as_json: bool) -> None:
    if as_json:
        emit_json({"path": path, "digest": digest})
    else:
        click.echo(digest)


@click.command("digest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_JSON
def config_digest_command(file: str, as_json: bool) -> None:
    """Print the config digest of the JSON object in FILE (canonical JSON, as the agent SDK).

    Register it with 'agentca agent register ... --config-digest HEX'.
    """
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, f"{file} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CAError(ErrorCode.INVALID_DIGEST, f"{file} must hold a JSON object")
    _print_digest(file, config_digest(data).hex(), as_json)
