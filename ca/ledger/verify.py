"""Offline verification of ledger exports and checkpoints: no database, no network.

Export format (JSON Lines; CSV carries the same fields, with the header on a ``#`` line):
line 1 ``{"format": "agentca-ledger-export", "version": 1, "filter": null|{...},
"count": n, "checkpoint": {...}, "audit": {...}}``, then one entry per line with its
``leaf_hash`` and, in a filtered export, its RFC 9162 inclusion ``proof`` against the
checkpoint's tree. The action ledger's exports (decision 0056) have the same shape with
``"format": "agentca-action-export"``, a checkpoint of ledger ``agentca-actions``, and lines
``{"seq", "record", "leaf_hash", "proof"}`` whose ``record`` is a gateway's action record
(``wire.actions``): ``verify_export`` tells them apart by the header. ``audit`` (added in
the same version: older exports lack it and still verify) carries what an offline auditor
needs to anchor trust at the CA root: every audit certificate (``certificates``, PEM, newest
first), the CA ``chain`` (issuing CA, root) and the OID ``arcs`` the CA issues or issued
under (decision 0027).

A filtered export proves less than a full one, and says so: each record it holds is in the
signed tree (its inclusion proof) and matches the header's ``filter`` (checked here, with the
export's own semantics: ``since`` inclusive, ``until`` exclusive, equality on the others), but
nothing shows that every matching record is there (:attr:`Report.complete` is false). Every
line is parsed as strict JSON (:mod:`wire.strict_json`): a duplicate member is refused, so the
record shown is the record hashed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ca.ledger.entries import (
    ACTIONS_LEDGER_NAME,
    LEDGER_NAME,
    LEDGER_NAMES,
    Checkpoint,
    LedgerEntry,
    format_time,
)
from ca.ledger.trust import LedgerTrust, checkpoint_problem, parse_arcs
from ca.oids import OidArc
from wire.actions import ActionRecord
from wire.merkle import StreamingRoot, verify_consistency, verify_inclusion
from wire.strict_json import loads

EXPORT_FORMAT = "agentca-ledger-export"
CSV_FIELDS = ["seq", "time", "actor", "event", "body", "leaf_hash", "proof"]
ACTION_EXPORT_FORMAT = "agentca-action-export"
ACTION_CSV_FIELDS = ["seq", "record", "leaf_hash", "proof"]


@dataclass(frozen=True)
class Report:
    """What verification established, or the first thing that failed."""

    ok: bool
    message: str
    entries: int = 0
    tree_size: int = 0
    failed_seq: int | None = None
    filtered: bool = False
    complete: bool = False
    """The export holds every entry of the checkpoint's tree (a full export that verified);
    a filtered export never proves that all matching entries are there."""
    conditions: Mapping[str, str] | None = field(default=None, compare=False)
    """A filtered export's filter, as checked against each of its lines."""


def _fail(msg: str, entries: int, size: int, seq: int | None, filtered: bool) -> Report:
    return Report(False, msg, entries, size, seq, filtered)


#: What a verified filtered export does not prove (in its report and the CLI's output).
NOT_COMPLETE = (
    "a filtered export proves that each of its {many} is in the signed ledger and matches "
    "the filter, NOT that it holds every matching {one}: {many} may have been left out "
    "(only a full export proves completeness)"
)


def _entry_row(row: Mapping[str, str]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "time": row["time"],
        "actor": row["actor"],
        "event": row["event"],
        "body": loads(row["body"]),
        "leaf_hash": row["leaf_hash"],
    }


def _record_row(row: Mapping[str, str]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "record": loads(row["record"]),
        "leaf_hash": row["leaf_hash"],
    }


#: A line's ``(seq, leaf hash, its values of the filter members)``, from its content.
Leaf = tuple[int, bytes, Mapping[str, str | None]]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None  # as the ledger stores agent, officer


def _entry_leaf(raw: Mapping[str, Any]) -> Leaf:
    entry = LedgerEntry.from_json(raw)
    body = entry.body
    values = {
        "time": entry.time,
        "agent": _text(body.get("agent")),
        "officer": _text(body.get("officer")),
        "event": entry.event,
    }
    return entry.seq, entry.leaf_hash(check=False), values


def _record_leaf(raw: Mapping[str, Any]) -> Leaf:
    seq = raw["seq"]
    if type(seq) is not int:
        raise ValueError("'seq' is not an integer")
    record = ActionRecord.from_json(raw["record"])
    values = {
        "time": record.time,
        "agent": record.agent,
        "officer": record.officer,
        "route": record.route,
        "outcome": record.outcome,
        "gateway": record.gateway,
    }
    return seq, record.leaf_hash(), values


@dataclass(frozen=True)
class Nouns:
    """What the lines of an export are called in reports (``entry``, ``record``)."""

    one: str
    many: str


@dataclass(frozen=True)
class ExportKind:
    """One ledger's export: its checkpoints' ledger name, how a CSV row reads, how a line's
    leaf (and its filter values) is recomputed from its content, what its lines are called,
    the members its filter may have and those an empty value leaves out (as the export's
    query does: ``ca.ledger.store._filtered``, ``ca.ledger.actions._filtered``)."""

    ledger: str
    from_csv: Callable[[Mapping[str, str]], dict[str, Any]]
    leaf_of: Callable[[Mapping[str, Any]], Leaf]
    nouns: Nouns
    filter_members: tuple[str, ...]
    empty_is_any: frozenset[str]


_TIMES = frozenset({"since", "until"})
#: The exports ``verify_export`` knows, by their header's ``format``.
KINDS = {
    EXPORT_FORMAT: ExportKind(
        LEDGER_NAME,
        _entry_row,
        _entry_leaf,
        Nouns("entry", "entries"),
        ("since", "until", "agent", "officer", "event"),
        frozenset({"since", "until", "agent", "officer", "event"}),
    ),
    ACTION_EXPORT_FORMAT: ExportKind(
        ACTIONS_LEDGER_NAME,
        _record_row,
        _record_leaf,
        Nouns("record", "records"),
        ("since", "until", "agent", "officer", "route", "outcome", "gateway"),
        _TIMES,
    ),
}


def parse_filter(value: Any, kind: ExportKind) -> dict[str, str] | None:
    """An export header's ``filter``: ``None`` (a full export) or an object of the kind's
    members, each a string (``since``/``until`` ISO 8601 times with a zone, returned in the
    ledger's spelling); ``ValueError`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("it is neither an object nor null (a full export)")
    if not value:
        raise ValueError("it is empty (a full export says null)")
    out: dict[str, str] = {}
    for name, condition in value.items():
        if name not in kind.filter_members:
            raise ValueError(f"unknown member '{str(name)[:64]}'")
        if not isinstance(condition, str):
            raise ValueError(f"member '{name}' is not a string")
        out[name] = _filter_time(condition, name) if name in _TIMES and condition else condition
    return out


def _filter_time(value: str, name: str) -> str:
    """The export's spelling of ``since``/``until`` (``ca.ledger.store._iso``)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(f"member '{name}' has no time zone")
        return format_time(parsed.astimezone(UTC))
    except OverflowError:  # its UTC instant is outside years 1 to 9999
        raise ValueError(f"member '{name}' is not an ISO 8601 time (out of range)") from None
    except ValueError as exc:
        if "time zone" in str(exc):
            raise
        raise ValueError(f"member '{name}' is not an ISO 8601 time") from None


def filter_mismatch(
    values: Mapping[str, str | None], flt: Mapping[str, str], kind: ExportKind
) -> str | None:
    """The first condition of ``flt`` a line's ``values`` do not meet, or ``None``."""
    for name, condition in flt.items():
        if condition == "" and name in kind.empty_is_any:
            continue
        if name == "since":
            ok = str(values["time"]) >= condition
        elif name == "until":
            ok = str(values["time"]) < condition
        else:
            ok = values[name] == condition
        if not ok:
            return name
    return None


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield the header, then each line, from a JSON Lines or CSV export (either ledger's)."""
    it = iter(lines)
    first = next(it, "")
    if first.startswith("#"):
        header = loads(first[1:].strip())
        yield header
        kind = KINDS.get(str(header.get("format"))) if isinstance(header, dict) else None
        from_csv = kind.from_csv if kind is not None else _entry_row
        for row in csv.DictReader(it):
            entry = from_csv(row)
            if row.get("proof"):
                entry["proof"] = row["proof"].split()
            yield entry
        return
    if first.strip():
        yield loads(first)
    for line in it:
        if line.strip():
            yield loads(line)


def as_trust(trusted: LedgerTrust | x509.Certificate) -> LedgerTrust:
    """A single certificate is an anchor of its own (pinned audit certificate or CA)."""
    return trusted if isinstance(trusted, LedgerTrust) else LedgerTrust((trusted,))


def carried_material(doc: Any) -> tuple[tuple[x509.Certificate, ...], tuple[OidArc, ...]]:
    """The certificates and arcs an export header's (or checkpoint's) ``audit`` block carries;
    ``ValueError`` if it is there but malformed."""
    if not isinstance(doc, Mapping):
        return (), ()
    audit = doc.get("audit")
    if audit is None:
        return (), ()
    if not isinstance(audit, Mapping):
        raise ValueError("the audit block is not an object")
    pems = [*audit.get("certificates", []), *audit.get("chain", [])]
    if not all(isinstance(p, str) for p in pems):
        raise ValueError("the audit block's certificates are not PEM text")
    certs = tuple(x509.load_pem_x509_certificate(p.encode()) for p in pems)
    arcs = audit.get("arcs", [])
    if not isinstance(arcs, list):
        raise ValueError("the audit block's arcs are not a list")
    return certs, parse_arcs(str(a) for a in arcs)


def verify_export(lines: Iterable[str], trusted: LedgerTrust | x509.Certificate) -> Report:
    """Verify a full export (recompute the tree) or a filtered one (every inclusion proof).

    ``trusted`` is the pinned audit certificate, or a :class:`LedgerTrust` anchored at the CA
    (``ca.ledger.trust``): the checkpoint's audit certificate is checked first."""
    try:
        records = parse_lines(lines)
        header = next(records, None)
    except (ValueError, KeyError) as exc:
        return _fail(f"the export header is unreadable: {exc}", 0, 0, None, False)
    kind = KINDS.get(str(header.get("format"))) if isinstance(header, Mapping) else None
    if header is None or kind is None:
        return _fail("not an agentca ledger export (bad header line)", 0, 0, None, False)
    try:
        checkpoint = Checkpoint.from_json(header["checkpoint"], kind.ledger)
    except (ValueError, KeyError, TypeError) as exc:
        return _fail(f"the checkpoint is malformed: {exc}", 0, 0, None, False)
    try:
        carried, arcs = carried_material(header)
    except (ValueError, TypeError) as exc:
        return _fail(f"the export's audit block is malformed: {exc}", 0, 0, None, False)
    try:
        flt = parse_filter(header.get("filter"), kind)
    except ValueError as exc:
        return _fail(f"the export's filter is malformed: {exc}", 0, 0, None, True)
    problem = checkpoint_problem(checkpoint, as_trust(trusted), carried, arcs)
    if problem:
        return _fail(problem, 0, checkpoint.tree_size, None, flt is not None)
    return verify_leaves(records, checkpoint, flt, header.get("count"), kind)


def verify_leaves(
    lines: Iterable[Mapping[str, Any]],
    checkpoint: Checkpoint,
    flt: Mapping[str, str] | None,
    announced: Any,
    kind: ExportKind,
) -> Report:
    """The lines of an export against its (already trusted) checkpoint: each line's leaf
    (``kind.leaf_of`` recomputes it from its content) must equal its stated ``leaf_hash``;
    then the whole tree is recomputed (full export, ``flt`` None: seqs 0..size-1 in order)
    or each line's inclusion ``proof`` checked and its content matched against ``flt``
    (filtered export of ``announced`` lines). The first failure names the line's seq.
    Shared by both ledgers' exports."""
    one, many = kind.nouns.one, kind.nouns.many
    filtered = flt is not None
    size = checkpoint.tree_size
    stream = StreamingRoot()
    count = 0
    previous = -1
    if filtered and (type(announced) is not int or announced < 0):
        return _fail(
            f"the filtered export does not announce how many {many} it holds", 0, size, None, True
        )
    try:
        for raw in lines:
            if not isinstance(raw, Mapping):
                raise ValueError("the line is not a JSON object")
            seq, computed, values = kind.leaf_of(raw)
            if filtered and seq <= previous:
                return _fail(
                    f"{one} {seq} is out of order or repeated (after {previous})",
                    count,
                    size,
                    seq,
                    True,
                )
            if filtered and seq >= size:
                return _fail(
                    f"{one} {seq} lies beyond the checkpoint (size {size})", count, size, seq, True
                )
            if not filtered and seq != previous + 1:
                what = "missing" if seq > previous + 1 else "out of order or repeated"
                expected = previous + 1
                return _fail(
                    f"{one} {expected} is {what}: found {one} {seq} in its place",
                    count,
                    size,
                    expected,
                    False,
                )
            if raw.get("leaf_hash") != computed.hex():
                return _fail(
                    f"{one} {seq} was altered: its content does not match its hash",
                    count,
                    size,
                    seq,
                    filtered,
                )
            if flt is not None:
                proof = _proof(raw.get("proof"))
                if proof is None or not verify_inclusion(
                    computed, seq, size, proof, checkpoint.root_hash
                ):
                    return _fail(
                        f"{one} {seq} is not included in the signed tree", count, size, seq, True
                    )
                unmet = filter_mismatch(values, flt, kind)
                if unmet is not None:
                    return _fail(
                        f"{one} {seq} does not match the export's filter ({unmet})",
                        count,
                        size,
                        seq,
                        True,
                    )
            else:
                if seq >= size:
                    return _fail(
                        f"{one} {seq} lies beyond the checkpoint (size {size})",
                        count,
                        size,
                        seq,
                        False,
                    )
                stream.add(computed)
            previous = seq
            count += 1
    except (ValueError, KeyError, TypeError) as exc:
        return _fail(
            f"{one} after {previous} is malformed: {exc}", count, size, previous + 1, filtered
        )
    if flt is not None:
        if announced != count:
            return _fail(
                f"the export announces {announced} {many} but holds {count}",
                count,
                size,
                None,
                True,
            )
        return Report(
            True,
            f"{count} {many} verified by inclusion proofs against the signed tree of {size} "
            f"{many}, each matching the filter {_describe(flt)}; "
            + NOT_COMPLETE.format(one=one, many=many),
            count,
            size,
            None,
            True,
            False,
            flt,
        )
    if count != size:
        return _fail(
            f"the export ends after {one} {count - 1} but the checkpoint covers {size} "
            f"{many} (truncated)",
            count,
            size,
            count,
            False,
        )
    if stream.root() != checkpoint.root_hash:
        return _fail("the recomputed tree does not match the signed root", count, size, None, False)
    return Report(
        True,
        f"all {count} {many} verified: the tree matches the signed checkpoint",
        count,
        size,
        None,
        False,
        True,
    )


def _describe(flt: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in flt.items())


def _proof(value: Any) -> list[bytes] | None:
    if not isinstance(value, list):
        return None
    try:
        out = [bytes.fromhex(h) for h in value]
    except (TypeError, ValueError):
        return None
    return out if all(len(h) == 32 for h in out) else None


def verify_consistency_between(
    old: Checkpoint,
    new: Checkpoint,
    proof: Sequence[bytes],
    trusted: LedgerTrust | x509.Certificate,
    carried: Sequence[x509.Certificate] = (),
    arcs: Sequence[OidArc] = (),
) -> Report:
    """Both checkpoints accepted by ``trusted`` (each judged at its own signing time, so they
    may be signed by different audit certificates) and ``new`` an append-only extension of
    ``old``."""
    trust = as_trust(trusted)
    for name, cp in (("old", old), ("new", new)):
        problem = checkpoint_problem(cp, trust, carried, arcs)
        if problem:
            return _fail(f"{name} checkpoint: {problem}", 0, cp.tree_size, None, False)
    if old.tree_size == 0:
        return Report(True, "the old checkpoint is empty: trivially consistent", 0, new.tree_size)
    if not verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof):
        return _fail(
            f"the tree of {new.tree_size} entries is NOT an append-only extension of "
            f"the tree of {old.tree_size} entries",
            0,
            new.tree_size,
            None,
            False,
        )
    return Report(
        True,
        f"consistent: the tree of {new.tree_size} entries extends the tree of "
        f"{old.tree_size} entries without changing it",
        0,
        new.tree_size,
    )


def verify_checkpoint_document(
    doc: Mapping[str, Any], trusted: LedgerTrust | x509.Certificate
) -> Report:
    """A checkpoint file alone (``ledger checkpoint --out``): its audit certificate and
    signature, judged at its own time; it proves the tree head, not any entry."""
    try:
        name = doc.get("ledger")  # either ledger's checkpoint: the name is signed
        cp = Checkpoint.from_json(doc, name if name in LEDGER_NAMES else LEDGER_NAME)
        carried, arcs = carried_material(doc)
        chain = doc.get("chain_pem")
        if isinstance(chain, str):
            carried += tuple(x509.load_pem_x509_certificates(chain.encode()))
    except (ValueError, TypeError) as exc:
        return _fail(f"the checkpoint is malformed: {exc}", 0, 0, None, False)
    problem = checkpoint_problem(cp, as_trust(trusted), carried, arcs)
    if problem:
        return _fail(problem, 0, cp.tree_size, None, False)
    return Report(
        True,
        f"the checkpoint of {cp.tree_size} entries signed at {cp.timestamp} verifies "
        f"(a tree head only: verify an export to check entries)",
        0,
        cp.tree_size,
    )
