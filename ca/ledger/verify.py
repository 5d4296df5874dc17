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
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ca.ledger.entries import (
    ACTIONS_LEDGER_NAME,
    LEDGER_NAME,
    LEDGER_NAMES,
    Checkpoint,
    LedgerEntry,
)
from ca.ledger.trust import LedgerTrust, checkpoint_problem, parse_arcs
from ca.oids import OidArc
from wire.actions import ActionRecord
from wire.merkle import StreamingRoot, verify_consistency, verify_inclusion

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


def _fail(msg: str, entries: int, size: int, seq: int | None, filtered: bool) -> Report:
    return Report(False, msg, entries, size, seq, filtered)


def _entry_row(row: Mapping[str, str]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "time": row["time"],
        "actor": row["actor"],
        "event": row["event"],
        "body": json.loads(row["body"]),
        "leaf_hash": row["leaf_hash"],
    }


def _record_row(row: Mapping[str, str]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "record": json.loads(row["record"]),
        "leaf_hash": row["leaf_hash"],
    }


def _entry_leaf(raw: Mapping[str, Any]) -> tuple[int, bytes]:
    entry = LedgerEntry.from_json(raw)
    return entry.seq, entry.leaf_hash(check=False)


def _record_leaf(raw: Mapping[str, Any]) -> tuple[int, bytes]:
    seq = raw["seq"]
    if type(seq) is not int:
        raise ValueError("'seq' is not an integer")
    return seq, ActionRecord.from_json(raw["record"]).leaf_hash()


@dataclass(frozen=True)
class Nouns:
    """What the lines of an export are called in reports (``entry``, ``record``)."""

    one: str
    many: str


@dataclass(frozen=True)
class ExportKind:
    """One ledger's export: its checkpoints' ledger name, how a CSV row reads, how a line's
    leaf is recomputed from its content, and what its lines are called."""

    ledger: str
    from_csv: Callable[[Mapping[str, str]], dict[str, Any]]
    leaf_of: Callable[[Mapping[str, Any]], tuple[int, bytes]]
    nouns: Nouns


#: The exports ``verify_export`` knows, by their header's ``format``.
KINDS = {
    EXPORT_FORMAT: ExportKind(LEDGER_NAME, _entry_row, _entry_leaf, Nouns("entry", "entries")),
    ACTION_EXPORT_FORMAT: ExportKind(
        ACTIONS_LEDGER_NAME, _record_row, _record_leaf, Nouns("record", "records")
    ),
}


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield the header, then each line, from a JSON Lines or CSV export (either ledger's)."""
    it = iter(lines)
    first = next(it, "")
    if first.startswith("#"):
        header = json.loads(first[1:].strip())
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
        yield json.loads(first)
    for line in it:
        if line.strip():
            yield json.loads(line)


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
    problem = checkpoint_problem(checkpoint, as_trust(trusted), carried, arcs)
    if problem:
        return _fail(problem, 0, checkpoint.tree_size, None, False)
    return verify_leaves(
        records,
        checkpoint,
        header.get("filter") is not None,
        header.get("count"),
        kind.leaf_of,
        kind.nouns,
    )


def verify_leaves(
    lines: Iterable[Mapping[str, Any]],
    checkpoint: Checkpoint,
    filtered: bool,
    announced: Any,
    leaf_of: Callable[[Mapping[str, Any]], tuple[int, bytes]],
    nouns: Nouns,
) -> Report:
    """The lines of an export against its (already trusted) checkpoint: each line's leaf
    (``leaf_of`` recomputes ``(seq, leaf hash)`` from its content) must equal its stated
    ``leaf_hash``; then the whole tree is recomputed (full export: seqs 0..size-1 in order)
    or each line's inclusion ``proof`` checked (filtered export, ``announced`` lines). The
    first failure names the line's seq. Shared by both ledgers' exports."""
    one, many = nouns.one, nouns.many
    size = checkpoint.tree_size
    stream = StreamingRoot()
    count = 0
    previous = -1
    try:
        for raw in lines:
            seq, computed = leaf_of(raw)
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
            if filtered:
                proof = _proof(raw.get("proof"))
                if proof is None or not verify_inclusion(
                    computed, seq, size, proof, checkpoint.root_hash
                ):
                    return _fail(
                        f"{one} {seq} is not included in the signed tree", count, size, seq, True
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
    if filtered:
        if announced is not None and announced != count:
            return _fail(
                f"the export announces {announced} {many} but holds {count}",
                count,
                size,
                None,
                True,
            )
        return Report(
            True,
            f"{count} {many} verified by inclusion proofs against the signed tree of {size} {many}",
            count,
            size,
            None,
            True,
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
    )


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
