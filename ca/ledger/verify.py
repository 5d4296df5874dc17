"""Offline verification of ledger exports and checkpoints: no database, no network.

Export format (JSON Lines; CSV carries the same fields, with the header on a ``#`` line):
line 1 ``{"format": "agentca-ledger-export", "version": 1, "filter": null|{...},
"count": n, "checkpoint": {...}, "audit": {...}}``, then one entry per line with its
``leaf_hash`` and, in a filtered export, its RFC 9162 inclusion ``proof`` against the
checkpoint's tree. ``audit`` (added in the same version: older exports lack it and still
verify) carries what an offline auditor needs to anchor trust at the CA root: every audit
certificate (``certificates``, PEM, newest first), the CA ``chain`` (issuing CA, root) and the
OID ``arcs`` the CA issues or issued under (decision 0027).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ca.ledger.entries import LEDGER_NAME, LEDGER_NAMES, Checkpoint, LedgerEntry
from ca.ledger.trust import LedgerTrust, checkpoint_problem, parse_arcs
from ca.oids import OidArc
from wire.merkle import StreamingRoot, verify_consistency, verify_inclusion

EXPORT_FORMAT = "agentca-ledger-export"
CSV_FIELDS = ["seq", "time", "actor", "event", "body", "leaf_hash", "proof"]


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


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield the header, then each entry, from a JSON Lines or CSV export."""
    it = iter(lines)
    first = next(it, "")
    if first.startswith("#"):
        yield json.loads(first[1:].strip())
        reader = csv.DictReader(it)
        for row in reader:
            entry: dict[str, Any] = {
                "seq": int(row["seq"]),
                "time": row["time"],
                "actor": row["actor"],
                "event": row["event"],
                "body": json.loads(row["body"]),
                "leaf_hash": row["leaf_hash"],
            }
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
    if not isinstance(header, Mapping) or header.get("format") != EXPORT_FORMAT:
        return _fail("not an agentca ledger export (bad header line)", 0, 0, None, False)
    try:
        checkpoint = Checkpoint.from_json(header["checkpoint"])
    except (ValueError, KeyError) as exc:
        return _fail(f"the checkpoint is malformed: {exc}", 0, 0, None, False)
    try:
        carried, arcs = carried_material(header)
    except (ValueError, TypeError) as exc:
        return _fail(f"the export's audit block is malformed: {exc}", 0, 0, None, False)
    problem = checkpoint_problem(checkpoint, as_trust(trusted), carried, arcs)
    if problem:
        return _fail(problem, 0, checkpoint.tree_size, None, False)
    filtered = header.get("filter") is not None
    size = checkpoint.tree_size
    stream = StreamingRoot()
    count = 0
    previous = -1
    try:
        for raw in records:
            entry = LedgerEntry.from_json(raw)
            seq = entry.seq
            if filtered:
                if seq <= previous:
                    return _fail(
                        f"entry {seq} is out of order or repeated (after {previous})",
                        count,
                        size,
                        seq,
                        True,
                    )
                if seq >= size:
                    return _fail(
                        f"entry {seq} lies beyond the checkpoint (size {size})",
                        count,
                        size,
                        seq,
                        True,
                    )
            elif seq != previous + 1:
                what = "missing" if seq > previous + 1 else "out of order or repeated"
                expected = previous + 1
                return _fail(
                    f"entry {expected} is {what}: found entry {seq} in its place",
                    count,
                    size,
                    expected,
                    False,
                )
            computed = entry.leaf_hash(check=False)
            if raw.get("leaf_hash") != computed.hex():
                return _fail(
                    f"entry {seq} was altered: its content does not match its hash",
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
                        f"entry {seq} is not included in the signed tree", count, size, seq, True
                    )
            else:
                if seq >= size:
                    return _fail(
                        f"entry {seq} lies beyond the checkpoint (size {size})",
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
            f"entry after {previous} is malformed: {exc}", count, size, previous + 1, filtered
        )
    if filtered:
        expected_count = header.get("count")
        if expected_count is not None and expected_count != count:
            return _fail(
                f"the export announces {expected_count} entries but holds {count}",
                count,
                size,
                None,
                True,
            )
        return Report(
            True,
            f"{count} entries verified by inclusion proofs against the signed "
            f"tree of {size} entries",
            count,
            size,
            None,
            True,
        )
    if count != size:
        return _fail(
            f"the export ends after entry {count - 1} but the checkpoint covers {size} "
            f"entries (truncated)",
            count,
            size,
            count,
            False,
        )
    if stream.root() != checkpoint.root_hash:
        return _fail("the recomputed tree does not match the signed root", count, size, None, False)
    return Report(
        True,
        f"all {count} entries verified: the tree matches the signed checkpoint",
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
