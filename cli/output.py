"""The CLI's output contract: JSON on stdout, notes on stderr, serials as openssl prints them.

Every command that prints data goes through these helpers, so that the naming scheme, the
serial form and the place of warnings are the same everywhere (docs/cli.md, "Output contract").
"""

from __future__ import annotations

import json
from typing import Any

import click

from ca.serials import parse_serial


def emit_json(data: Any) -> None:
    """Print one JSON value on one line of stdout (keys sorted, so output is stable)."""
    click.echo(json.dumps(data, sort_keys=True))


def note(message: str) -> None:
    """A remark for the human on stderr; never part of ``--json`` output."""
    click.echo(f"agentca: {message}", err=True)


def cli_serial(serial: int | str) -> str:
    """A serial as ``openssl x509 -serial`` prints it: uppercase hex, whole octets.

    Accepts the integer or any text form ``parse_serial`` accepts (the stored lowercase form
    without leading zeros included).
    """
    value = serial if isinstance(serial, int) else parse_serial(serial)
    digits = format(value, "X")
    return digits if len(digits) % 2 == 0 else "0" + digits
