"""Auditor commands: checkpoint, export, and offline verification of the ledger."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from ca.errors import CAError, ErrorCode
from ca.ledger.entries import LEDGER_NAMES, Checkpoint
from ca.ledger.store import ExportFilter, LedgerStore
from ca.ledger.trust import LedgerTrust, parse_arcs
from ca.ledger.verify import (
    Report,
    carried_material,
    verify_checkpoint_document,
    verify_consistency_between,
    verify_export,
)
from ca.oids import OidArc
from cli.audit_commands import write_new
from cli.context import runtime
from cli.group import AgentcaGroup
from cli.output import emit_json, note

#: ``ledger verify`` / ``ledger consistency`` exit status when verification fails.
VERIFY_FAILED = 13


@click.group(cls=AgentcaGroup)
def ledger() -> None:
    """The tamper-evident issuance and revocation ledger (for auditors)."""


@ledger.command("checkpoint")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the signed checkpoint (JSON) here instead of standard output.",
)
@click.option(
    "--consistency-from",
    "from_size",
    type=click.IntRange(1),
    default=None,
    help="Also include a consistency proof from this older tree size.",
)
@click.option(
    "--certificate",
    "cert_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the audit certificate (PEM); an existing file is refused unless --force. "
    "Prefer 'agentca audit certificate --out' (no HSM needed).",
)
@click.option("--force", is_flag=True, help="Replace existing --out / --certificate files.")
@click.option(
    "--actions",
    is_flag=True,
    help="Sign a checkpoint of the action ledger (gateway decisions) instead of the issuance "
    "ledger. With --every both are signed anyway.",
)
@click.option(
    "--every",
    type=click.IntRange(1),
    default=None,
    help="Keep running: sign a checkpoint every N seconds when the ledger grew.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One line of JSON (with --every: one line per checkpoint signed).",
)
@click.pass_context
def checkpoint(
    ctx: click.Context,
    out: str | None,
    from_size: int | None,
    cert_out: str | None,
    force: bool,
    actions: bool,
    every: int | None,
    as_json: bool,
) -> None:
    """Sign a checkpoint (tree size + root) of the ledger now, with the audit key in the HSM.

    With --every it keeps signing, each interval, a checkpoint of the issuance ledger and one
    of the action ledger, each when it grew."""
    if every is not None:
        if out or cert_out or from_size is not None:
            raise click.UsageError("--every runs the scheduler: no --out, --certificate or proof")
        _checkpoint_loop(ctx, every, as_json)
        return
    for path in (out, cert_out):  # refused before signing anything
        if path and Path(path).exists() and not force:
            raise CAError(ErrorCode.CONFLICT, f"{path} exists: not overwriting it (--force)")
    with runtime(ctx) as rt:
        store, signer = (
            (rt.actions, rt.action_checkpoints) if actions else (rt.ledger, rt.checkpoints)
        )
        cp = signer.checkpoint()
        data = cp.to_json()
        if from_size is not None:
            if from_size > cp.tree_size:
                raise CAError(
                    ErrorCode.BAD_REQUEST,
                    f"--consistency-from {from_size} exceeds the tree size {cp.tree_size}",
                )
            tree = store.tree(cp.tree_size)
            data["consistency"] = {
                "from_size": from_size,
                "proof": [h.hex() for h in tree.consistency_proof(from_size, cp.tree_size)],
            }
        from ca.queries import issuer_chain_pem

        # the CA chain, so 'ledger consistency --trust root.pem' needs nothing else
        data["chain_pem"] = issuer_chain_pem(rt.sessions)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if cert_out:
        write_new(cert_out, data["certificate_pem"], force, "audit certificate")
        note(f"audit certificate written to {cert_out}")
    if out:
        write_new(out, text, force, "checkpoint")
        note(f"checkpoint of {cp.tree_size} entries written to {out}")
    if as_json:
        emit_json({**data, "changed": True, "out": out, "certificate_out": cert_out})
    elif not out:
        click.echo(text, nl=False)


def _checkpoint_loop(ctx: click.Context, every: int, as_json: bool) -> None:
    """The scheduler: one checkpoint per interval while the ledger grows; stops on SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from ca.schedule import run_every

    with runtime(ctx) as rt:
        ledgers = ((rt.ledger, rt.checkpoints), (rt.actions, rt.action_checkpoints))
        last = [-1] * len(ledgers)

        def sign_if_grown() -> None:
            for i, (store, signer) in enumerate(ledgers):
                size = store.size()
                if size == last[i] or (store is rt.actions and size == 0):
                    continue  # unchanged, or no gateway has shipped anything yet
                cp = signer.checkpoint()
                last[i] = cp.tree_size
                if as_json:
                    emit_json({**cp.to_json(), "changed": True})
                else:
                    kind = "action checkpoint" if store is rt.actions else "checkpoint"
                    click.echo(
                        f"{kind}: {cp.tree_size} entries, root {cp.root_hash.hex()}", err=True
                    )

        run_every(every, sign_if_grown, stop, "ledger checkpoint")


@ledger.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the export here instead of standard output.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines or CSV (header on a '#' line).",
)
@click.option("--since", default=None, help="Only entries at or after this ISO time.")
@click.option("--until", default=None, help="Only entries before this ISO time.")
@click.option("--agent", default=None, help="Only entries about this agent.")
@click.option("--officer", default=None, help="Only entries about this officer of record.")
@click.option("--event", default=None, help="Only this event type, e.g. certificate.revoked.")
@click.option(
    "--actions",
    is_flag=True,
    help="Export the action ledger (gateway decisions) instead of the issuance ledger.",
)
@click.option("--route", default=None, help="With --actions: only this normalised route.")
@click.option(
    "--outcome",
    type=click.Choice(["allow", "deny"]),
    default=None,
    help="With --actions: only allowed or only denied requests.",
)
@click.option("--gateway", default=None, help="With --actions: only this gateway's records.")
@click.option(
    "--sign-checkpoint",
    is_flag=True,
    help="Sign a fresh checkpoint first (a write, like 'ledger checkpoint') and export that.",
)
@click.option("--force", is_flag=True, help="With --out: replace an existing file.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With --out: print what was exported as one line of JSON.",
)
@click.pass_context
def export(
    ctx: click.Context,
    out: str | None,
    fmt: str,
    since: str | None,
    until: str | None,
    agent: str | None,
    officer: str | None,
    event: str | None,
    actions: bool,
    route: str | None,
    outcome: str | None,
    gateway: str | None,
    sign_checkpoint: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Export the ledger up to its newest signed checkpoint, streaming.

    An export only reads: it covers the newest stored checkpoint (sign one with 'ledger
    checkpoint', or pass --sign-checkpoint). A filtered export carries an RFC 9162 inclusion
    proof for every entry it holds. The header carries the audit certificates, the CA chain
    and the CA's OID arcs, so 'ledger verify --trust root.pem' needs nothing else.

    With --actions: the action ledger (every gateway decision), filtered by --agent,
    --officer, --route, --outcome, --gateway, --since and --until, covering its newest signed
    action checkpoint ('ledger checkpoint --actions').
    """
    if actions and event:
        raise click.UsageError("--event filters the issuance ledger, not --actions")
    if not actions and (route or outcome or gateway):
        raise click.UsageError("--route, --outcome and --gateway need --actions")
    if as_json and not out:
        raise click.UsageError("--json needs --out: without it the export itself is the output")
    if out and Path(out).exists() and not force:
        raise CAError(ErrorCode.CONFLICT, f"{out} exists: not overwriting it (--force)")
    with runtime(ctx) as rt:
        store: LedgerStore
        lines: Callable[..., Iterator[str]]
        if actions:
            from ca.ledger.actions import ActionFilter

            flt: Any = ActionFilter(since, until, agent, officer, route, outcome, gateway)
            store, signer, what = rt.actions, rt.action_checkpoints, "action records"
            lines = rt.actions.export_actions
            hint = "of the action ledger has been signed yet: run 'agentca ledger checkpoint "
            hint += "--actions'"
        else:
            flt = ExportFilter(since=since, until=until, agent=agent, officer=officer, event=event)
            store, signer, what = rt.ledger, rt.checkpoints, "entries"
            lines = rt.ledger.export_lines
            hint = "has been signed yet: run 'agentca ledger checkpoint'"
        cp = signer.checkpoint() if sign_checkpoint else store.latest_checkpoint()
        if cp is None:
            raise CAError(
                ErrorCode.NOT_FOUND,
                f"no checkpoint {hint} first (or pass --sign-checkpoint)",
            )
        if not out:
            for line in lines(cp, flt, fmt):
                sys.stdout.write(line)
            return
        count = -2 if fmt == "csv" else -1  # the header lines
        with open(out, "w", encoding="utf-8", newline="") as fh:
            for line in lines(cp, flt, fmt):
                fh.write(line)
                count += 1
    if as_json:
        emit_json(
            {
                "out": out,
                "format": fmt,
                **({"ledger": cp.ledger} if actions else {}),
                "entries": count,
                "tree_size": cp.tree_size,
                "filter": flt.to_json() or None,
                "checkpoint_signed": sign_checkpoint,
                "changed": sign_checkpoint,
            }
        )
    else:
        note(f"exported {count} of {cp.tree_size} {what} to {out}")


def _certificates(path: str, what: str) -> tuple[x509.Certificate, ...]:
    try:
        certs = tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    except (OSError, ValueError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot read the {what} {path}: no PEM") from exc
    return certs


def _trust(trust: str, chain: str | None, arcs: tuple[str, ...]) -> LedgerTrust:
    pinned_arcs = parse_arcs(arcs)
    if len(pinned_arcs) != len(arcs):
        raise CAError(ErrorCode.BAD_REQUEST, "--arc: not an agentca OID arc")
    return LedgerTrust(
        _certificates(trust, "trusted certificate"),
        _certificates(chain, "chain bundle") if chain else (),
        pinned_arcs,
    )


def _report(report: Report, trust: LedgerTrust, checkpoints: int, as_json: bool) -> None:
    where = f" (entry {report.failed_seq})" if report.failed_seq is not None else ""
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "message": report.message,
                "entries": report.entries,
                "checkpoints": checkpoints if report.ok else 0,
                "tree_size": report.tree_size,
                "filtered": report.filtered,
                "complete": report.complete,
                "filter": dict(report.conditions) if report.conditions is not None else None,
                "failed_seq": report.failed_seq,
                "anchor": {
                    "mode": "pinned" if trust.pinned_only else "ca",
                    "subjects": [c.subject.rfc4514_string() for c in trust.anchors],
                },
                "errors": [] if report.ok else [report.message],
            }
        )
    elif report.ok:
        click.echo(f"OK: {report.message}")
    if not report.ok:
        click.echo(f"FAILED{where}: {report.message}", err=True)
        sys.exit(VERIFY_FAILED)


def _trust_options(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="The verdict as one line of JSON.")(f)
    f = click.option(
        "--arc",
        "arcs",
        multiple=True,
        help="Accept the ledger-signing EKU only under this OID arc (repeatable; default: "
        "the arcs the export names, and agentca's default arcs).",
    )(f)
    f = click.option(
        "--chain",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="PEM bundle of certificates to build the path with (e.g. 'agentca audit "
        "certificate --chain'); not trusted by itself.",
    )(f)
    return click.option(
        "--trust",
        "trust",
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Trust anchor (PEM): the CA root, the issuing CA, or the audit certificate "
        "itself (pinned).",
    )(f)


@ledger.command("verify")
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False))
@_trust_options
def verify(
    export_file: str, trust: str, chain: str | None, arcs: tuple[str, ...], as_json: bool
) -> None:
    """Verify an export offline: the checkpoint's audit certificate (pinned, or chained to the
    trusted CA with the ledger-signing EKU, valid when it signed), its signature, then the
    whole tree (full export) or every inclusion proof (filtered export). Needs no database,
    no HSM and no network.

    EXPORT_FILE may also be a checkpoint file ('ledger checkpoint --out'): then only its
    audit certificate and signature are checked.
    """
    anchor = _trust(trust, chain, arcs)
    document = _checkpoint_document(export_file)
    if document is not None:
        _report(verify_checkpoint_document(document, anchor), anchor, 1, as_json)
        return
    with open(export_file, encoding="utf-8", newline="") as fh:  # either ledger's export
        _report(verify_export(fh, anchor), anchor, 1, as_json)


def _checkpoint_document(path: str) -> dict[str, Any] | None:
    """The file as a checkpoint (one JSON object with ``"ledger": "agentca"``), else None."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and doc.get("ledger") in LEDGER_NAMES else None


@ledger.command("consistency")
@click.argument("old", type=click.Path(exists=True, dir_okay=False))
@click.argument("new", type=click.Path(exists=True, dir_okay=False))
@_trust_options
def consistency(
    old: str, new: str, trust: str, chain: str | None, arcs: tuple[str, ...], as_json: bool
) -> None:
    """Check that checkpoint NEW extends checkpoint OLD (NEW carries the consistency proof, see
    'ledger checkpoint --consistency-from'). Each is judged at its own signing time, so they
    may be signed by different audit certificates (rotation). Offline."""
    anchor = _trust(trust, chain, arcs)
    try:
        old_doc = json.loads(Path(old).read_text())
        new_doc = json.loads(Path(new).read_text())
        old_cp, new_cp = Checkpoint.from_json(old_doc), Checkpoint.from_json(new_doc)
        proof_doc = new_doc.get("consistency") or {"from_size": old_cp.tree_size, "proof": []}
        if proof_doc["from_size"] != old_cp.tree_size:
            raise CAError(
                ErrorCode.BAD_REQUEST,
                f"NEW carries a proof from size {proof_doc['from_size']}, "
                f"OLD has size {old_cp.tree_size}",
            )
        proof = [bytes.fromhex(h) for h in proof_doc["proof"]]
        carried: list[x509.Certificate] = []
        carried_arcs: list[OidArc] = []
        for doc in (old_doc, new_doc):
            certs, doc_arcs = carried_material(doc)
            carried += certs
            carried_arcs += doc_arcs
            if isinstance(doc.get("chain_pem"), str):
                carried += x509.load_pem_x509_certificates(doc["chain_pem"].encode())
    except (ValueError, KeyError, TypeError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"unreadable checkpoint: {exc}") from exc
    report = verify_consistency_between(old_cp, new_cp, proof, anchor, carried, carried_arcs)
    _report(report, anchor, 2, as_json)


#: ``ledger crosscheck`` exit status when a gateway record is missing or differs.
CROSSCHECK_FAILED = 13


@ledger.command("crosscheck")
@click.option("--gateway", "gateway_name", required=True, help="The registered gateway's name.")
@click.option(
    "--gateway-log",
    type=click.Path(exists=True),
    default=None,
    help="The gateway's checkpoints: its action log directory (the checkpoints.log the "
    "gateway writes there), or a JSON Lines file of signed checkpoints. Default: the "
    "checkpoints the gateway shipped to the CA.",
)
@click.option("--json", "as_json", is_flag=True, help="The verdict as one line of JSON.")
@click.pass_context
def crosscheck(
    ctx: click.Context, gateway_name: str, gateway_log: str | None, as_json: bool
) -> None:
    """Check that every record the gateway checkpointed is in the action ledger, unchanged:
    each checkpoint's signature (the gateway's registered key) and its root recomputed from
    the records the CA holds of that gateway. Exits 13 when a record is missing or differs."""
    from ca.ledger.actions import CrossCheck

    with runtime(ctx) as rt:
        gw = rt.gateways.get(gateway_name)
        if gw is None:
            raise CAError(ErrorCode.NOT_FOUND, f"no gateway '{gateway_name}' is registered")
        if gateway_log is not None:
            checkpoints = _gateway_checkpoints(Path(gateway_log))
        else:
            rt.actions.recheck_pending(gateway_name)
            checkpoints = [cp for cp, _status in rt.actions.stored_checkpoints(gateway_name)]
        results: list[CrossCheck] = rt.actions.crosscheck(
            gateway_name, gw.public_key_der, checkpoints
        )
        held = rt.actions.next_seq(gateway_name)
    ok = bool(results) and all(r.ok for r in results)
    covered = max((r.tree_size for r in results if r.ok), default=0)
    message = (
        f"all {covered} checkpointed records of gateway '{gateway_name}' are in the action "
        f"ledger ({len(results)} checkpoints)"
        if ok
        else next(
            (
                f"checkpoint of {r.tree_size} records ({r.timestamp}): {r.status}: {r.detail}"
                for r in results
                if not r.ok
            ),
            f"no checkpoint of gateway '{gateway_name}' to check",
        )
    )
    if as_json:
        emit_json(
            {
                "ok": ok,
                "gateway": gateway_name,
                "records_held": held,
                "message": message,
                "checkpoints": [r.to_json() for r in results],
            }
        )
    elif ok:
        click.echo(f"OK: {message}")
    if not ok:
        click.echo(f"FAILED: {message}", err=True)
        sys.exit(CROSSCHECK_FAILED)


#: The file of signed checkpoints in a gateway's action log directory
#: (``gateway.action_log.CHECKPOINTS``: one canonical ``GatewayCheckpoint`` JSON per line).
GATEWAY_CHECKPOINTS = "checkpoints.log"


def _gateway_checkpoints(path: Path) -> list[Any]:
    """The checkpoints of a gateway's action log directory (its ``checkpoints.log``), or of a
    JSON Lines file of checkpoints (each line a checkpoint, or ``{"checkpoint": {...}}``)."""
    from wire.actions import GatewayCheckpoint
    from wire.strict_json import loads

    if path.is_dir():
        path = path / GATEWAY_CHECKPOINTS
        if not path.is_file():
            raise CAError(
                ErrorCode.BAD_REQUEST,
                f"{path.parent} holds no {GATEWAY_CHECKPOINTS}: not a gateway action log "
                "directory (or pass the checkpoints file itself)",
            )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot read {path}: {exc}") from exc
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = loads(line)
            if isinstance(data, dict) and isinstance(data.get("checkpoint"), dict):
                data = data["checkpoint"]
            out.append(GatewayCheckpoint.from_json(data))
        except (ValueError, TypeError) as exc:
            raise CAError(ErrorCode.BAD_REQUEST, f"{path} line {number}: {exc}") from exc
    return out
