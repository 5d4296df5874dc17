"""The CLI's output contract: JSON on stdout, notes on stderr, serials as openssl prints them.

Every command that prints data goes through these helpers, so that the naming scheme, the
serial form, the time form and the place of warnings are the same everywhere (docs/cli.md,
"Output contract"). The API's JSON (``ca.records``, ``ca.api.bodies``) is left as it is and
mapped here. Nothing here imports cryptography or the CA core: ``agentca list`` loads this.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import click

from ca.errors import CAError, ErrorCode
from ca.serials import parse_any_serial

if TYPE_CHECKING:
    from ca.records import CertificateRecord

HOLD = "certificateHold"

#: Keys holding a time in the JSON the core hands out (besides every ``*_at``/``*_until``).
TIME_KEYS = frozenset({"not_before", "not_after", "this_update", "next_update"})


def emit_json(data: Any) -> None:
    """Print one JSON value on one line of stdout (keys sorted, so output is stable)."""
    click.echo(json.dumps(data, sort_keys=True))


def emit_lines(records: Iterable[Mapping[str, Any]]) -> None:
    """JSON Lines on stdout: one object per record (what every list command prints)."""
    for record in records:
        emit_json(record)


def note(message: str) -> None:
    """A remark for the human on stderr; never part of ``--json`` output."""
    click.echo(f"agentca: {message}", err=True)


def warn(message: str) -> None:
    """A warning on stderr (``agentca: warning: ...``)."""
    note(f"warning: {message}")


def cli_serial(serial: int | str) -> str:
    """A serial as ``openssl x509 -serial`` prints it: uppercase hex, whole octets.

    Accepts the integer or any text form ``parse_any_serial`` accepts (the stored lowercase
    form without leading zeros included).
    """
    value = serial if isinstance(serial, int) else parse_any_serial(serial)
    digits = format(value, "X")
    return digits if len(digits) % 2 == 0 else "0" + digits


def serial_arg(text: str) -> str:
    """A SERIAL argument in any form, as the openssl form the core looks up (one clear
    ``bad-request`` line for anything that is not a serial)."""
    try:
        return cli_serial(text)
    except ValueError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, str(exc)) from None


def rfc3339(value: datetime | str | None) -> str | None:
    """A time as RFC 3339 in UTC, whole seconds, ending in ``Z`` (``None`` stays ``None``).

    Takes a datetime (naive ones are UTC, as the database stores them) or an ISO 8601 text.
    """
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_time_key(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(("_at", "_until"))


def cli_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's form of an object from the core: times in RFC 3339 ``Z`` (nested too)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out[key] = cli_json(value)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            out[key] = [cli_json(v) for v in value]
        elif _is_time_key(key) and isinstance(value, str | datetime):
            out[key] = rfc3339(value)
        else:
            out[key] = value
    return out


def state_of(record: CertificateRecord, now: datetime | None = None) -> str:
    """``good``, ``held`` (revoked with certificateHold: reversible), ``revoked``,
    ``expired`` (issued, past notAfter), or ``pending``/``failed`` for a reservation."""
    status = str(record.status.value)
    if status == "revoked":
        reason = record.revocation_reason
        return "held" if reason is not None and reason.text == HOLD else "revoked"
    if status == "issued":
        now = now or datetime.now(UTC)
        not_after = record.not_after
        if not_after.tzinfo is None:
            not_after = not_after.replace(tzinfo=UTC)
        return "expired" if not_after <= now else "good"
    return status


def certificate_json(record: CertificateRecord, now: datetime | None = None) -> dict[str, Any]:
    """A certificate record as the CLI prints it: the API's ``to_dict`` with ``agent`` for
    ``agent_name``, the openssl serial form, ``Z`` times and ``state``."""
    data = record.to_dict()
    data["agent"] = data.pop("agent_name")
    data["serial"] = cli_serial(record.serial_hex)
    data["state"] = state_of(record, now)
    return cli_json(data)


def agent_json(body: Mapping[str, Any]) -> dict[str, Any]:
    """A registration (``registration_json``) as the CLI prints it: ``agent`` for ``name``."""
    data = dict(body)
    if "name" in data:
        data["agent"] = data.pop("name")
    return cli_json(data)


def with_changed(data: Mapping[str, Any], changed: bool) -> dict[str, Any]:
    """``data`` with ``"changed"``: what every state-changing command's JSON carries."""
    return {**data, "changed": changed}


def unchanged(message: str) -> None:
    """The note an idempotent repeat prints (exit 0): the end state was already there."""
    note(f"{message}; nothing changed")


class FlagConflict(click.UsageError):
    """Two options that contradict each other: one line on stderr, exit 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"agentca: error: {self.format_message()} [bad-request]", err=True)


def refuse_together(**flags: object) -> None:
    """Refuse when more than one of ``flags`` (``option text -> value``) is given.

    Keys are the options as typed, with ``_`` for ``-`` and without the leading dashes:
    ``refuse_together(pem=as_pem, json=as_json)``.
    """
    given = [name for name, value in flags.items() if value not in (None, False, (), "")]
    if len(given) > 1:
        shown = " and ".join("--" + name.replace("_", "-") for name in given)
        raise FlagConflict(f"{shown} contradict each other: give one")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A human table on stdout: a header row, then the rows, columns padded to fit."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *cells]:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        click.echo("  ".join([*padded, row[-1]]).rstrip())
