"""``agentca drift``: score agents' behaviour against their baselines, respond, review.

``run`` is one pass over a time range (schedule it, e.g. every 5 minutes with ``--since``
one window back); ``review`` lists the alerts awaiting an operator and releases or revokes
what a hold took. The drift core is ``ca.drift`` (decision 0057, docs/drift.md).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ca.errors import CAError, ErrorCode
from cli.context import actor, parse_duration, runtime, settings_from
from cli.group import AgentcaGroup
from cli.output import FlagConflict, cli_serial, emit_json, note, serial_arg

if TYPE_CHECKING:
    from ca.drift.alerts import AlertState
    from ca.drift.settings import DriftSettings
    from ca.wiring import Runtime

#: ``drift run`` exit status when it raised at least one (new) alert.
ALERTS_RAISED = 16


@click.group(cls=AgentcaGroup)
def drift() -> None:
    """Behavioural drift: score agents against their own baselines, alert or hold, review.

    Per-agent baselines from the action records, scored windows, alerts and optional holds
    (docs/drift.md)."""


def _instant(text: str | None, option: str, default: datetime) -> datetime:
    if text is None:
        return default
    if text == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except CAError:
            pass
        raise CAError(
            ErrorCode.BAD_REQUEST,
            f"{option}: '{text}' is neither an RFC 3339 time (2026-12-07T05:00:00Z), 'now', "
            "nor a duration ago (15m, 2h)",
        ) from None
    if value.tzinfo is None:
        raise CAError(ErrorCode.BAD_REQUEST, f"{option}: '{text}' has no time zone (add Z)")
    return value.astimezone(UTC)


def _settings(ctx: click.Context, path: str | None) -> DriftSettings:
    from ca.drift.settings import DriftSettingsError, load_drift_settings

    if path is None:
        default = settings_from(ctx).data_dir / "drift.toml"
        path = str(default) if default.exists() else None
    try:
        return load_drift_settings(path)
    except DriftSettingsError as exc:
        raise CAError(ErrorCode.CONFIG, str(exc)) from None


def _state(ctx: click.Context, path: str | None) -> AlertState:
    from ca.drift.alerts import AlertState, AlertStateError

    where = Path(path) if path else settings_from(ctx).data_dir / "drift" / "alerts.json"
    try:
        return AlertState.load(where)
    except AlertStateError as exc:
        raise CAError(ErrorCode.CONFIG, str(exc)) from None


def _ledger(rt: Runtime) -> Any:
    def write(who: str, event: str, body: Mapping[str, Any]) -> None:
        with rt.sessions.begin() as s:
            rt.authority.journal.write(s, who, event, dict(body), rt.authority.clock())

    return write


def _log_to_stderr() -> None:
    """The ``agentca.drift`` lines (already JSON) go to stderr as they are."""
    from ca.drift.respond import LOGGER

    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, "_agentca_drift", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._agentca_drift = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@drift.command("run")
@click.option(
    "--records",
    "records_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Score this JSON-lines file of action records (ActionRecord.to_json(), one per "
    "line, e.g. another CA's export) instead of this CA's action ledger.",
)
@click.option(
    "--since", default=None, help="Score windows ending after this (RFC 3339, or 15m = ago)."
)
@click.option("--until", default=None, help="... and up to this (default: now).")
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Drift settings (TOML, [drift]); default: DATA_DIR/drift.toml when it exists.",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Open-alert state file (default: DATA_DIR/drift/alerts.json).",
)
@click.option(
    "--mode",
    type=click.Choice(["alert", "hold"]),
    default=None,
    help="Force this mode for every agent (default: each agent's from the settings).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Score only: no ledger entry, no state, no hold, no webhook (with --records, "
    "needs no CA).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the run's metrics here (Prometheus text, for a textfile collector).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: agents and alerts.")
@click.pass_context
def run(
    ctx: click.Context,
    records_file: str | None,
    since: str | None,
    until: str | None,
    settings_file: str | None,
    state_file: str | None,
    mode: str | None,
    dry_run: bool,
    metrics_file: str | None,
    as_json: bool,
) -> None:
    """Score every agent's windows ending in (--since, --until] against the baseline learnt
    from the records before them, and respond to the windows at or above the threshold.

    Records come from this CA's action ledger, or from --records FILE. The baseline is
    learnt from the settings' training period (default 7 days) before --since, so the
    records must reach that far back. Default --since: one hour
    before --until. Exit status: 0 no new alert, 16 at least one new alert (held or not),
    2 bad input, 10 bad settings or state file.
    """
    from ca.drift.analyser import Analyser
    from ca.drift.respond import Responder, metrics_text
    from ca.drift.source import JsonLinesSource, LedgerSource, RecordFileError

    cfg = _settings(ctx, settings_file)
    if mode is not None:
        cfg = cfg.with_mode(mode)
    end = _instant(until, "--until", datetime.now(UTC))
    start = _instant(since, "--since", end - timedelta(hours=1))
    if start >= end:
        raise CAError(ErrorCode.BAD_REQUEST, "--since must be before --until")
    train_from = start - timedelta(seconds=cfg.training)
    if records_file is not None:
        try:
            records = list(JsonLinesSource(records_file).records(train_from, end))
        except RecordFileError as exc:
            raise CAError(ErrorCode.BAD_REQUEST, str(exc)) from None
    else:
        with runtime(ctx) as rt:
            records = list(LedgerSource(rt.actions).records(train_from, end))
    result = Analyser(cfg).run(records, start.timestamp(), end.timestamp())
    _log_to_stderr()
    who = actor()
    if dry_run:
        responder = Responder(who, time.time())
        outcomes = responder.respond(result.alerts)
    else:
        state = _state(ctx, state_file)
        with runtime(ctx) as rt:
            responder = Responder(
                who,
                time.time(),
                state=state,
                ledger=_ledger(rt),
                authority=rt.authority,
                webhook_url=cfg.webhook_url,
                webhook_timeout=cfg.webhook_timeout,
            )
            outcomes = responder.respond(result.alerts)
    if metrics_file:
        _write_atomically(Path(metrics_file), metrics_text(result, outcomes))
    by_id = {o.alert_id: o for o in outcomes}
    alerts = []
    for alert, outcome in zip(result.alerts, outcomes, strict=True):
        shown = alert.to_json() | outcome.to_json()
        shown["held"] = [cli_serial(x) for x in outcome.held]
        shown["serials"] = [_shown_serial(x) for x in shown["serials"]]
        alerts.append(shown)
    if as_json:
        emit_json(
            {
                "since": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "until": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "records": result.records,
                "dry_run": dry_run,
                "agents": [a.to_json() for a in result.agents.values()],
                "alerts": alerts,
            }
        )
    else:
        for a in alerts:
            top = "; ".join(
                f"{f['feature']} {f['score']} ({f['observed']} vs {f['expected']})"
                for f in a["top_features"]
            )
            held = f" held {', '.join(a['held'])}" if a["held"] else ""
            click.echo(f"{a['action']} {a['agent']} score {a['score']}{held}: {top}")
    fresh = [o for o in by_id.values() if o.action != "repeat"]
    note(
        f"{result.records} records, {len(result.agents)} agents, {len(fresh)} new alert(s)"
        + (" (dry run)" if dry_run else "")
    )
    if fresh:
        sys.exit(ALERTS_RAISED)


@drift.command("review")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), default=None,
              help="Open-alert state file (default: DATA_DIR/drift/alerts.json).")  # fmt: skip
@click.option("--all", "show_all", is_flag=True, help="List reviewed alerts too.")
@click.option("--release", "release_serial", default=None,
              help="Lift the drift hold on SERIAL (the agent acts again).")  # fmt: skip
@click.option("--revoke", "revoke_serial", default=None,
              help="Revoke SERIAL for good (with --reason).")  # fmt: skip
@click.option("--reason", default=None,
              help="RFC 5280 reason for --revoke, e.g. privilegeWithdrawn.")  # fmt: skip
@click.option("--dismiss", "dismiss_id", default=None,
              help="Close alert ID (e.g. an alert-only alert).")  # fmt: skip
@click.option("--note", "review_note", default=None, help="The reviewer's note, for the ledger.")
@click.option("--json", "as_json", is_flag=True, help="JSON: the alerts, or what was done.")
@click.pass_context
def review(
    ctx: click.Context,
    state_file: str | None,
    show_all: bool,
    release_serial: str | None,
    revoke_serial: str | None,
    reason: str | None,
    dismiss_id: str | None,
    review_note: str | None,
    as_json: bool,
) -> None:
    """List open drift alerts, or conclude one: --release SERIAL lifts its hold, --revoke
    SERIAL --reason R revokes for good, --dismiss ID closes it. Each conclusion is written
    to the ledger with the reviewing operator and the alert's evidence."""
    from ca.revocation import RevocationReason

    chosen = [x for x in (release_serial, revoke_serial, dismiss_id) if x is not None]
    if len(chosen) > 1:
        raise FlagConflict("give one of --release, --revoke and --dismiss")
    if reason is not None and revoke_serial is None:
        raise FlagConflict("--reason goes with --revoke")
    if revoke_serial is not None and reason is None:
        raise FlagConflict("--revoke needs --reason (e.g. privilegeWithdrawn)")
    state = _state(ctx, state_file)
    if not chosen:
        shown = state.alerts if show_all else state.open_alerts()
        if as_json:
            listed = [a.to_json() | {"held": [cli_serial(x) for x in a.held]} for a in shown]
            emit_json({"alerts": listed})
            return
        for a in shown:
            held = ",".join(cli_serial(s) for s in a.held) or "-"
            click.echo(
                f"{a.id} {a.status} {a.agent} score {a.evidence.get('score')} "
                f"window {a.evidence.get('window_end')} held {held}"
            )
        note(f"{len(shown)} alert(s)")
        return
    who = actor()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if dismiss_id is not None:
        found = state.get(dismiss_id)
        if found is None or found.status != "open":
            raise CAError(ErrorCode.NOT_FOUND, f"no open drift alert {dismiss_id}")
        with runtime(ctx) as rt:
            _ledger(rt)(who, "drift.reviewed", _review_body(found.id, found.agent, "dismissed",
                                                           review_note))  # fmt: skip
        found.status, found.reviewed_by, found.reviewed_at = "dismissed", who, now
        state.save()
        _done(as_json, {"alert_id": found.id, "decision": "dismissed", "reviewed_by": who})
        return
    serial = serial_arg(release_serial or revoke_serial or "")
    matching = [a for a in state.open_alerts() if serial in {cli_serial(s) for s in a.held}]
    if not matching:
        raise CAError(ErrorCode.NOT_FOUND, f"no open drift alert holds certificate {serial}")
    ids = [a.id for a in matching]
    decision = "released" if release_serial else "revoked"
    evidence = {"drift_review": _review_body(",".join(ids), matching[0].agent, decision,
                                             review_note)}  # fmt: skip
    with runtime(ctx) as rt:
        if release_serial:
            record = rt.authority.release_hold(serial, who, evidence=evidence)
        else:
            why = RevocationReason.parse(reason or "")
            if why is RevocationReason.CERTIFICATE_HOLD:
                raise CAError(ErrorCode.BAD_REQUEST, "--revoke is for good: not certificateHold")
            evidence["drift_review"]["reason"] = why.text
            record = rt.authority.revoke(serial, why, who, evidence=evidence)
    for a in matching:
        a.held = [s for s in a.held if cli_serial(s) != serial]
        a.reviewed_by, a.reviewed_at = who, now
        if not a.held:
            a.status = decision
    state.save()
    _done(
        as_json,
        {
            "alert_ids": ids,
            "serial": cli_serial(record.serial_hex),
            "decision": decision,
            "reviewed_by": who,
            "state": record.status.value,
        },
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by a rename, so a collector never reads half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot write {path}: {exc.strerror}") from None


def _shown_serial(text: str) -> str:
    """A serial from a record in the openssl form, or as recorded if it is not one."""
    try:
        return cli_serial(text)
    except ValueError:
        return text


def _review_body(ident: str, agent: str, decision: str, review_note: str | None) -> dict[str, Any]:
    body = {"alert_id": ident, "agent": agent, "decision": decision}
    if review_note:
        body["note"] = review_note[:500]
    return body


def _done(as_json: bool, body: dict[str, Any]) -> None:
    if as_json:
        emit_json(body)
    else:
        target = body.get("serial") or body.get("alert_id")
        click.echo(f"{body['decision']} {target} (reviewed by {body['reviewed_by']})")
