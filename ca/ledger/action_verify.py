"""Offline verification of action-ledger exports: no database, no network (decision 0056).

Format (JSON Lines; CSV carries the same fields with the header on a ``#`` line): line 1
``{"format": "agentca-action-export", "version": 1, "filter": null|{...}, "count": n,
"checkpoint": {... "ledger": "agentca-actions" ...}, "audit": {...}}``, then one record per
line: ``{"seq", "record", "leaf_hash"}`` and, in a filtered export, its RFC 9162 inclusion
``proof`` against the checkpoint's tree. ``record`` is the gateway's action record
(:class:`wire.actions.ActionRecord`); its leaf hash is recomputed from its canonical bytes,
so a changed member fails at that record.

Trust works as for issuance exports (:mod:`ca.ledger.trust`); the checkpoint must name the
action ledger, whose name is signed, so an issuance checkpoint never verifies here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cryptography import x509

from ca.ledger.entries import ACTIONS_LEDGER_NAME, Checkpoint
from ca.ledger.trust import LedgerTrust, checkpoint_problem
from ca.ledger.verify import Report, _fail, _proof, as_trust, carried_material
from wire.actions import ActionRecord
from wire.merkle import StreamingRoot, verify_inclusion

ACTION_EXPORT_FORMAT = "agentca-action-export"
CSV_FIELDS = ["seq", "record", "leaf_hash", "proof"]


def parse_action_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield the header, then each record line, from a JSON Lines or CSV action export."""
    it = iter(lines)
    first = next(it, "")
    if first.startswith("#"):
        yield json.loads(first[1:].strip())
        for row in csv.DictReader(it):
            line: dict[str, Any] = {
                "seq": int(row["seq"]),
                "record": json.loads(row["record"]),
                "leaf_hash": row["leaf_hash"],
            }
            if row.get("proof"):
                line["proof"] = row["proof"].split()
            yield line
        return
    if first.strip():
        yield json.loads(first)
    for text in it:
        if text.strip():
            yield json.loads(text)


def verify_action_export(lines: Iterable[str], trusted: LedgerTrust | x509.Certificate) -> Report:
    """Verify an action export: its checkpoint (trust as for issuance exports, ledger name
    ``agentca-actions``), then every record's hash and either the whole tree (full export)
    or every inclusion proof (filtered export). The first failure names the record."""
    try:
        records = parse_action_lines(lines)
        header = next(records, None)
    except (ValueError, KeyError) as exc:
        return _fail(f"the export header is unreadable: {exc}", 0, 0, None, False)
    if not isinstance(header, Mapping) or header.get("format") != ACTION_EXPORT_FORMAT:
        return _fail("not an agentca action export (bad header line)", 0, 0, None, False)
    try:
        checkpoint = Checkpoint.from_json(header["checkpoint"], ACTIONS_LEDGER_NAME)
        carried, arcs = carried_material(header)
    except (ValueError, KeyError, TypeError) as exc:
        return _fail(f"the checkpoint is malformed: {exc}", 0, 0, None, False)
    problem = checkpoint_problem(checkpoint, as_trust(trusted), carried, arcs)
    if problem:
        return _fail(problem, 0, checkpoint.tree_size, None, False)
    filtered = header.get("filter") is not None
    size = checkpoint.tree_size
    stream = StreamingRoot()
    count, previous = 0, -1
    try:
        for raw in records:
            seq = raw["seq"]
            if type(seq) is not int:
                raise ValueError("'seq' is not an integer")
            if seq >= size:
                return _fail(
                    f"record {seq} lies beyond the checkpoint (size {size})",
                    count,
                    size,
                    seq,
                    filtered,
                )
            if filtered and seq <= previous:
                return _fail(
                    f"record {seq} is out of order or repeated (after {previous})",
                    count,
                    size,
                    seq,
                    True,
                )
            if not filtered and seq != previous + 1:
                what = "missing" if seq > previous + 1 else "out of order or repeated"
                return _fail(
                    f"record {previous + 1} is {what}: found record {seq} in its place",
                    count,
                    size,
                    previous + 1,
                    False,
                )
            try:
                computed = ActionRecord.from_json(raw["record"]).leaf_hash()
            except (ValueError, TypeError) as exc:
                return _fail(
                    f"record {seq} is not a valid action record: {exc}", count, size, seq, filtered
                )
            if raw.get("leaf_hash") != computed.hex():
                return _fail(
                    f"record {seq} was altered: its content does not match its hash",
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
                        f"record {seq} is not included in the signed tree", count, size, seq, True
                    )
            else:
                stream.add(computed)
            previous = seq
            count += 1
    except (ValueError, KeyError, TypeError) as exc:
        return _fail(
            f"record after {previous} is malformed: {exc}", count, size, previous + 1, filtered
        )
    if filtered:
        if header.get("count") != count:
            return _fail(
                f"the export announces {header.get('count')} records but holds {count}",
                count,
                size,
                None,
                True,
            )
        return Report(
            True,
            f"{count} action records verified by inclusion proofs against the signed "
            f"tree of {size} records",
            count,
            size,
            None,
            True,
        )
    if count != size:
        return _fail(
            f"the export ends after record {count - 1} but the checkpoint covers {size} "
            "records (truncated)",
            count,
            size,
            count,
            False,
        )
    if stream.root() != checkpoint.root_hash:
        return _fail("the recomputed tree does not match the signed root", count, size, None, False)
    return Report(
        True,
        f"all {count} action records verified: the tree matches the signed checkpoint",
        count,
        size,
        None,
        False,
    )


def export_kind(first_line: str) -> str | None:
    """``"actions"``, ``"issuance"`` or ``None``: which export a file's first line opens."""
    text = first_line[1:] if first_line.startswith("#") else first_line
    try:
        header = json.loads(text)
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    fmt = header.get("format")
    if fmt == ACTION_EXPORT_FORMAT:
        return "actions"
    return "issuance" if fmt is not None else None
