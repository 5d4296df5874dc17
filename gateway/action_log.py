"""The gateway's local action log: every decision as an RFC 9162-hashed, checkpointed record
(issue 18, decision 0055).

    actions = ActionLog("/var/lib/agentca-gateway/actions", "orders-1", "gateway-key.pem")
    verifier = Verifier(..., actions=actions)
    ActionShipper(actions, ca_url, token_file).start()       # gateway.action_shipper

A directory holds four files:

``actions.log``
    One record per line: the leaf bytes of an :class:`~wire.actions.ActionRecord` (canonical
    JSON, which never holds a raw newline) and ``\\n``. Line ``n`` is record ``seq = n``.
``checkpoints.log``
    One signed :class:`~wire.actions.GatewayCheckpoint` per line (canonical JSON), each
    written after the records it covers are on disk.
``shipped``
    The shipping cursor: ``{"next_seq": n}``, the first record the CA has not acknowledged
    (replaced atomically by :meth:`ActionLog.mark_shipped`).
``head``
    The newest checkpoint's ``{"tree_size", "root_hash"}`` (replaced atomically after each
    checkpoint is on disk): opening refuses a ``checkpoints.log`` that lost checkpoints.
``lock``
    Held (``flock``) by the one process that has the log open.

Requests only queue the decision-log object they already build (a C ``SimpleQueue.put``);
one writer thread per log, waking every 50 ms like ``gateway.decision_log``, builds the
records (``gateway.action_record``), appends them in one write, ``fsync``\\ s once per batch,
extends the Merkle tree (``wire.merkle``) and signs a checkpoint every ``checkpoint_seconds``
or ``checkpoint_records``. Opening a log verifies it whole: every line parses, is canonical
and has its sequence number, every checkpoint's root is recomputed and its signature checked
with the gateway's key (or one of ``previous_keys``), and ``head`` names a checkpoint that is
there; a torn final line (a crash in mid-write) is completed or cut off, anything else that
is wrong (records with no checkpoint, a checkpoint of another key, a missing checkpoint)
refuses the log with :class:`ActionLogError` naming the problem, so the gateway never signs
over records it could not verify against its last checkpoint. An operator then moves the
directory aside and starts a new log (decision 0055, "Recovering a refused log").

The log is the shipper's spool. While it cannot take records (``max_unshipped_records`` or
``max_unshipped_bytes`` not yet acknowledged by the CA, a write failed, or the queue is full)
:attr:`ActionLog.refusing` says why and the verifier refuses every request with 503
``action-log-unavailable``: the product promises that every action is logged. Denials
before an identity (no credentials, a chain that does not verify: records with no agent)
may hold at most ``anonymous_share`` of ``max_unshipped_records``; beyond it they are
counted and written as one ``unauthenticated-summary`` record per ``summary_seconds``, so
a flood of requests without credentials cannot shut the gateway for the agents.

``python -m gateway.action_log keygen --out key.pem`` makes a key (printing its public key);
``python -m gateway.action_log verify DIR --public-key pub.pem [--proof SEQ]`` checks a log
offline.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import stat
import sys
import threading
import time
import uuid
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.action_record import UNMATCHED, Pending, record_bytes
from gateway.problems import Check
from wire.actions import GATEWAY_ID, ActionRecord, GatewayCheckpoint, record_time
from wire.canonical import canonical
from wire.merkle import MerkleTree, StreamingRoot, leaf_hash, verify_inclusion

log = logging.getLogger("agentca.gateway.actions")

RECORDS: Final = "actions.log"
CHECKPOINTS: Final = "checkpoints.log"
CURSOR: Final = "shipped"
HEAD: Final = "head"
LOCK: Final = "lock"
INTERVAL: Final = 0.05
"""Seconds between two rounds of the writer (:meth:`ActionLog.flush` does not wait for it)."""
BATCH: Final = 4096
"""Records the writer appends (and fsyncs) at most at once."""
CAPACITY: Final = 65_536
"""Decisions waiting for the writer before the log refuses requests (it cannot keep up)."""
YIELD_EVERY: Final = 32
"""Records the writer builds (about 20 us each) before it lets requests have the GIL."""
SUMMARY: Final = "unauthenticated-summary"
"""The ``check`` of a record summarising unauthenticated denials not recorded one by one."""
INDEX_EVERY: Final = 256
"""One byte offset kept in memory per this many records (to read records for shipping)."""

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class ActionLogError(Exception):
    """The log cannot be opened or verified: edited, truncated, another gateway's, or locked."""


# -- keys -------------------------------------------------------------------------------------


def key_id(public_key: PublicKey) -> str:
    """Hex SHA-256 of the key's SubjectPublicKeyInfo (DER): a checkpoint's ``key_id``."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def load_private_key(path: Path | str) -> PrivateKey:
    """The gateway key (PEM, unencrypted): ECDSA P-256 or Ed25519; anything else is refused,
    and so is a key file that group or others may read or write (as ssh does)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise ActionLogError(
                f"{path}: the gateway key file has mode {mode:04o}: group or others may read "
                f"it; run chmod 600 {path}"
            )
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ActionLogError(f"{path}: cannot read the gateway key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ActionLogError(f"{path}: the gateway key must be ECDSA P-256 or Ed25519")


def load_public_key(path: Path | str) -> PublicKey:
    """A gateway's public key (PEM SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ActionLogError(f"{path}: cannot read the public key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ActionLogError(f"{path}: a gateway key is ECDSA P-256 or Ed25519")


def sign(key: PrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 (DER signature) or Ed25519 over ``message``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def signature_ok(key: PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``key``'s over ``message``."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def make_checkpoint(
    key: PrivateKey, gateway: str, tree_size: int, root: bytes, timestamp: str
) -> GatewayCheckpoint:
    """A signed tree head of ``gateway``'s log."""
    from wire.actions import checkpoint_statement

    statement = checkpoint_statement(gateway, tree_size, root, timestamp)
    return GatewayCheckpoint(
        gateway, tree_size, root, timestamp, sign(key, statement), key_id(key.public_key())
    )


# -- reading and verifying a log ----------------------------------------------------------------


@dataclass
class Scan:
    """What reading a log directory found (see :func:`scan`)."""

    gateway: str | None
    size: int = 0  # complete, valid records
    end: int = 0  # byte offset just after the last complete record
    tail: bytes = b""  # a torn final line (no newline), empty if none
    tail_record: bytes | None = None  # the torn line, if it is in fact the complete next record
    root: bytes = b""
    tree: StreamingRoot = field(default_factory=StreamingRoot)  # the tree head, to extend
    checkpoints: list[GatewayCheckpoint] = field(default_factory=list)
    checkpoints_end: int = 0
    checkpoints_tail: bytes = b""
    index: array[int] = field(default_factory=lambda: array("Q"))
    leaves: bytearray | None = None  # every leaf hash, when asked for (proofs)
    unverified: int = 0  # checkpoints signed by a key not given (root still checked)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each line of ``path``, the last one possibly without newline."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        offset = 0
        for line in f:
            yield offset, line
            offset += len(line)


def _record(line: bytes, gateway: str | None, seq: int, where: str) -> ActionRecord:
    """The record of one line; :class:`ActionLogError` unless it is exactly what this log
    would have written as record ``seq``."""
    try:
        record = ActionRecord.from_json(json.loads(line))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ActionLogError(f"{where}: record {seq} is not a valid action record: {exc}") from None
    if record.leaf_bytes() != line:
        raise ActionLogError(f"{where}: record {seq} is not in canonical form (edited)")
    if record.seq != seq:
        raise ActionLogError(
            f"{where}: line {seq + 1} holds record seq {record.seq}: records were removed, "
            "inserted or reordered"
        )
    if gateway is not None and record.gateway != gateway:
        raise ActionLogError(f"{where}: record {seq} belongs to gateway {record.gateway!r}")
    return record


def _read_checkpoints(
    path: Path, gateway: str | None
) -> tuple[list[GatewayCheckpoint], int, bytes]:
    out: list[GatewayCheckpoint] = []
    end = 0
    for offset, line in _lines(path):
        if not line.endswith(b"\n"):
            return out, end, line
        where = f"{path}: checkpoint {len(out) + 1}"
        try:
            cp = GatewayCheckpoint.from_json(json.loads(line[:-1]))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ActionLogError(f"{where} is not a valid checkpoint: {exc}") from None
        if canonical(cp.to_json()) != line[:-1]:
            raise ActionLogError(f"{where} is not in canonical form (edited)")
        if gateway is not None and cp.gateway != gateway:
            raise ActionLogError(f"{where} belongs to gateway {cp.gateway!r}")
        if out and cp.tree_size <= out[-1].tree_size:
            raise ActionLogError(f"{where} does not cover more records than the one before it")
        out.append(cp)
        end = offset + len(line)
    return out, end, b""


def scan(
    directory: Path | str,
    gateway: str | None = None,
    keys: Sequence[PublicKey] = (),
    *,
    require_keys: bool = False,
    leaves: bool = False,
) -> Scan:
    """Read and verify the log in ``directory`` without changing it.

    Every complete line must be the canonical record with its sequence number (and of
    ``gateway``, when given); every checkpoint must cover no more records than are there, and
    its root must be the recomputed tree head at its size; its signature must verify with the
    key of ``keys`` its ``key_id`` names (``require_keys``: a checkpoint signed by any other
    key is an error; else it is counted in ``unverified``). ``leaves`` keeps every leaf hash
    (for proofs). :class:`ActionLogError` on the first problem, naming it."""
    base = Path(directory)
    by_id = {key_id(k): k for k in keys}
    cps, cps_end, cps_tail = _read_checkpoints(base / CHECKPOINTS, gateway)
    result = Scan(gateway, checkpoints=cps, checkpoints_end=cps_end, checkpoints_tail=cps_tail)
    result.leaves = bytearray() if leaves else None
    root = result.tree
    pending = iter(cps)
    next_cp = next(pending, None)
    where = str(base / RECORDS)

    def check_checkpoints(size: int) -> None:
        nonlocal next_cp
        while next_cp is not None and next_cp.tree_size == size:
            if next_cp.root_hash != root.root():
                raise ActionLogError(
                    f"{base / CHECKPOINTS}: the checkpoint of {size} records does not match "
                    f"records 0..{size - 1}: a record was changed, removed or reordered"
                )
            verifier_key = by_id.get(next_cp.key_id)
            if verifier_key is None:
                if require_keys:
                    raise ActionLogError(
                        f"{base / CHECKPOINTS}: the checkpoint of {size} records is signed by "
                        f"key {next_cp.key_id}, which was not given"
                    )
                result.unverified += 1
            elif not signature_ok(verifier_key, next_cp.signature, next_cp.statement()):
                raise ActionLogError(
                    f"{base / CHECKPOINTS}: the signature of the checkpoint of {size} records "
                    "does not verify"
                )
            next_cp = next(pending, None)

    check_checkpoints(0)
    for offset, line in _lines(base / RECORDS):
        seq = result.size
        if not line.endswith(b"\n"):
            result.tail = line
            with contextlib.suppress(ActionLogError):
                _record(line, result.gateway, seq, where)
                result.tail_record = line
            break
        record = _record(line[:-1], result.gateway, seq, where)
        if result.gateway is None:
            result.gateway = record.gateway
        if seq % INDEX_EVERY == 0:
            result.index.append(offset)
        digest = leaf_hash(line[:-1])
        root.add(digest)
        if result.leaves is not None:
            result.leaves += digest
        result.size = seq + 1
        result.end = offset + len(line)
        check_checkpoints(result.size)
    if next_cp is not None:
        raise ActionLogError(
            f"{base / CHECKPOINTS}: a checkpoint covers {next_cp.tree_size} records but the "
            f"log holds {result.size}: records were removed"
        )
    result.root = root.root()
    return result


# -- the log ----------------------------------------------------------------------------------


class _Flush:
    """A marker in the queue: set once everything before it is on disk (and, with
    ``checkpoint``, covered by a checkpoint)."""

    __slots__ = ("checkpoint", "done")

    def __init__(self, checkpoint: bool = False) -> None:
        self.checkpoint = checkpoint
        self.done = threading.Event()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_fsync(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync; on failure cut what part of it reached the file (unbuffered,
    so that nothing of it is written later by a buffer's flush)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


class ActionLog:
    """A gateway's append-only action log (see the module docstring). Thread-safe; one per
    process (the directory is locked; a forked child must open its own)."""

    def __init__(
        self,
        directory: Path | str,
        gateway_id: str,
        key_file: Path | str,
        *,
        checkpoint_seconds: float = 10.0,
        checkpoint_records: int = 1000,
        max_unshipped_records: int = 1_000_000,
        max_unshipped_bytes: int = 1 << 30,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.time,
        previous_keys: Sequence[PublicKey] = (),
        anonymous_share: float = 0.25,
        summary_seconds: float = 10.0,
    ) -> None:
        """Open (or create) the log of gateway ``gateway_id`` (the name of its CA API token)
        in ``directory``, checkpointed with the key in ``key_file`` every
        ``checkpoint_seconds`` or ``checkpoint_records``, whichever comes first; refusing
        requests while ``max_unshipped_records`` or ``max_unshipped_bytes`` are not shipped.
        Verifies the whole log (:func:`scan`): every checkpoint must be signed by this key or
        one of ``previous_keys`` (after a key rotation); :class:`ActionLogError` if it was
        edited. Unauthenticated denials use at most ``anonymous_share`` of the record bound
        (then one summary record per ``summary_seconds``)."""
        if not 0 < anonymous_share < 1 or summary_seconds <= 0:
            raise ValueError("anonymous_share must be in (0, 1), summary_seconds positive")
        if not GATEWAY_ID.fullmatch(gateway_id):
            raise ActionLogError(f"{gateway_id!r} is not a gateway identifier")
        if checkpoint_seconds <= 0 or checkpoint_records < 1:
            raise ValueError("checkpoint_seconds and checkpoint_records must be positive")
        if max_unshipped_records < 1 or max_unshipped_bytes < 1:
            raise ValueError("max_unshipped_records and max_unshipped_bytes must be positive")
        self.directory = Path(directory)
        self.gateway = gateway_id
        self.key = load_private_key(key_file)
        self.key_id = key_id(self.key.public_key())
        self.previous_keys = tuple(previous_keys)
        self.checkpoint_seconds = checkpoint_seconds
        self.checkpoint_records = checkpoint_records
        self.max_unshipped_records = max_unshipped_records
        self.max_unshipped_bytes = max_unshipped_bytes
        self.capacity = capacity
        self.clock = clock
        self.refusing: str | None = None
        """Why the log takes no records now (the verifier refuses every request), or None."""
        self.dropped = 0
        self.max_anonymous = max(1, int(max_unshipped_records * anonymous_share))
        """Unshipped records of unauthenticated denials at most (then summarised)."""
        self.summary_seconds = summary_seconds
        self.summarised = 0
        """Unauthenticated denials counted in summary records, not recorded one by one."""
        self._anonymous: deque[int] = deque()  # seqs of unshipped unauthenticated denials
        self._summary: Counter[str] = Counter()  # by check, not yet written
        self._summary_since = 0.0
        self._summary_at = clock()
        """Refusals not recorded because the log was refusing (approximate: not locked)."""
        self._state = threading.Lock()
        self._closed = False
        self._write_error: str | None = None
        self._pid = os.getpid()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._queue: queue.SimpleQueue[Pending | _Flush | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._run, name="agentca-action-log", daemon=True)
        self._writer.start()
        os.register_at_fork(after_in_child=self._forked)
        atexit.register(self.close, 2.0)

    # -- opening

    def _take_lock(self) -> int:
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ActionLogError(
                f"{self.directory}: the action log is open in another process (one log per "
                "process: give each worker its own directory and gateway ID)"
            ) from None
        return fd

    def _recover(self) -> None:
        keys = [self.key.public_key(), *self.previous_keys]
        found = scan(self.directory, self.gateway, keys, require_keys=True)
        records = self.directory / RECORDS
        if found.tail:
            if found.tail_record is not None:  # complete but for its newline: keep it
                log.warning("%s: completing record %d (its newline was not written)",
                            records, found.size)  # fmt: skip
                _append_fsync(records, b"\n")
                found = scan(self.directory, self.gateway, keys, require_keys=True)
            else:
                log.warning("%s: cutting a torn final record (%d bytes) after record %d",
                            records, len(found.tail), found.size - 1)  # fmt: skip
                os.truncate(records, found.end)
        if found.checkpoints_tail:
            log.warning("%s: cutting a torn final checkpoint", self.directory / CHECKPOINTS)
            os.truncate(self.directory / CHECKPOINTS, found.checkpoints_end)
        fresh = found.size == 0 and not found.checkpoints
        self._head_size = self._check_head(found, fresh)
        if not records.exists():
            records.touch(0o600)
            _fsync_dir(self.directory)
        if fresh:
            self._write_head(0, b"")
        self.size = found.size
        """Records on disk (fsynced): the next record gets ``seq = size``."""
        self._end = found.end
        self._index = found.index
        self._root = found.tree
        self._checkpoints: list[GatewayCheckpoint] = list(found.checkpoints)
        self._last_checkpoint_at = self.clock()
        self.shipped = self._read_cursor()
        """The first record the CA has not acknowledged (the shipping cursor)."""
        self._shipped_offset = self._offset(self.shipped)
        self._anonymous.extend(self._unshipped_anonymous())
        self._trim_checkpoints()
        self._update_state()

    def _check_head(self, found: Scan, fresh: bool) -> int:
        """The tree size ``head`` names, checked against the checkpoints ``found``: it must
        be one that is there (the newest, or the one before it after a crash between writing
        a checkpoint and ``head``), and records need a checkpoint. Else :class:`ActionLogError`:
        checkpoints were removed, and the records since cannot be verified."""
        where = f"{self.directory}: the action log"
        refuse = (
            " The gateway will not sign over records it cannot verify: move the directory "
            "aside and start a new log (the CA keeps what was shipped)."
        )
        path = self.directory / HEAD
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            if fresh:
                return 0
            raise ActionLogError(
                f"{where} has no {HEAD} file ({found.size} records, {len(found.checkpoints)} "
                "checkpoints): it was removed, or the log was edited." + refuse
            ) from None
        except ValueError as exc:
            raise ActionLogError(f"{path}: not a checkpoint head: {exc}" + refuse) from None
        size = data.get("tree_size") if isinstance(data, dict) else None
        root = data.get("root_hash") if isinstance(data, dict) else None
        if type(size) is not int or not isinstance(root, str) or size < 0:
            raise ActionLogError(f"{path}: not a checkpoint head" + refuse)
        cps = found.checkpoints
        sizes = [cp.tree_size for cp in cps]
        if size and size not in sizes:
            raise ActionLogError(
                f"{where}: {HEAD} names the checkpoint of {size} records, but "
                f"{CHECKPOINTS} holds no such checkpoint ({len(cps)} checkpoints, newest of "
                f"{sizes[-1] if sizes else 0} records): checkpoints were removed." + refuse
            )
        if size and base64.b64encode(cps[sizes.index(size)].root_hash).decode() != root:
            raise ActionLogError(
                f"{where}: the checkpoint of {size} records is not the one {HEAD} names." + refuse
            )
        newer = sum(1 for s in sizes if s > size)
        if newer > 1:
            raise ActionLogError(
                f"{where}: {HEAD} names the checkpoint of {size} records but {newer} newer "
                f"checkpoints are in {CHECKPOINTS}: the files were edited." + refuse
            )
        if found.size and not cps:
            raise ActionLogError(
                f"{where} holds {found.size} records but no checkpoint: {CHECKPOINTS} was "
                "removed (or the gateway stopped before its first checkpoint), so the records "
                "cannot be verified." + refuse
            )
        return sizes[-1] if newer else size

    def _write_head(self, tree_size: int, root: bytes) -> None:
        """Replace ``head`` atomically (fsynced, with the directory)."""
        path = self.directory / HEAD
        tmp = path.with_name(HEAD + ".tmp")
        doc = {"tree_size": tree_size, "root_hash": base64.b64encode(root).decode()}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(canonical(doc) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def _unshipped_anonymous(self) -> Iterator[int]:
        """The seqs of unshipped records without an agent (the budget's use at open)."""
        seq = self.shipped
        with (self.directory / RECORDS).open("rb") as f:
            f.seek(self._shipped_offset)
            while seq < self.size:
                if _anonymous_record(json.loads(f.readline())):
                    yield seq
                seq += 1

    def _read_cursor(self) -> int:
        path = self.directory / CURSOR
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise ActionLogError(f"{path}: not a shipping cursor: {exc}") from None
        value = data.get("next_seq") if isinstance(data, dict) else None
        if type(value) is not int or not 0 <= value <= self.size:
            raise ActionLogError(
                f"{path}: the shipping cursor {value!r} is not between 0 and the log's "
                f"{self.size} records"
            )
        return value

    # -- the request path

    def append(self, line: Pending) -> None:
        """Queue one logged decision for the writer (the request's only cost)."""
        denial = line.decision.denial
        if denial is not None and (
            self.refusing is not None or denial.check is Check.ACTION_LOG_UNAVAILABLE
        ):
            # refusals while the log refuses are counted, not recorded: else a client could
            # grow the spool past its bound with requests the shells refuse before the
            # verifier (a path not in normal form, a body too large). An allowed request
            # already in flight is recorded.
            self.dropped += 1
            return
        self._queue.put(line)
        if self._queue.qsize() >= self.capacity:
            with self._state:
                self._update_state()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is on disk; False if ``timeout`` passed."""
        if self._closed or os.getpid() != self._pid:
            return True
        marker = _Flush()
        self._queue.put(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    # -- the writer

    def _run(self) -> None:
        get_nowait = self._queue.get_nowait
        carry: list[Pending] = []  # decisions of a failed write: first in the next one
        held: list[_Flush] = []
        while True:
            self._wake.wait(INTERVAL)
            self._wake.clear()
            stop = False
            while True:
                batch, carry = carry, []
                markers, held = held, []
                with contextlib.suppress(queue.Empty):
                    while len(batch) < BATCH and not markers:
                        item = get_nowait()
                        if item is None:
                            stop = True
                            break
                        if isinstance(item, _Flush):
                            markers.append(item)  # what came before it is in this batch
                        else:
                            batch.append(item)
                if not self._write(batch):
                    carry, held = batch, markers
                    if stop:  # closing with the disk failing: say what is lost
                        log.error("action log closed with %d decisions unwritten", len(carry))
                        return
                    time.sleep(INTERVAL)
                    break
                if not self._write_summary(force=stop or any(m.checkpoint for m in markers)):
                    carry, held = [], markers
                    time.sleep(INTERVAL)
                    break
                self._maybe_checkpoint(force=stop or any(m.checkpoint for m in markers))
                for marker in markers:
                    marker.done.set()
                if stop:
                    return
                if len(batch) < BATCH and not markers:
                    break

    def _write(self, batch: list[Pending]) -> bool:
        """Append ``batch`` as records and fsync; False (and refusing) if the disk fails."""
        if not batch:
            return True
        seq = self.size
        lines: list[bytes] = []
        anonymous: list[int] = []  # seqs of unauthenticated denials in this batch
        summary: Counter[str] = Counter()  # those over the budget, counted only
        budget = self.max_anonymous - len(self._anonymous)
        for i, pending in enumerate(batch, 1):
            d = pending.decision
            if d.identity is None and d.denial is not None:
                if len(anonymous) >= budget:
                    summary[d.denial.check.value] += 1
                    continue
                anonymous.append(seq + len(lines))
            try:
                lines.append(record_bytes(pending, self.gateway, seq + len(lines)))
            except Exception:  # a bug must not stop recording the others: say so loudly
                if anonymous and anonymous[-1] == seq + len(lines):
                    anonymous.pop()
                log.exception("action record not built (decision dropped from the log)")
            if not i % YIELD_EVERY:
                time.sleep(0)  # let a request that waits for the GIL have it back
        if not lines:
            self._count_summary(summary)
            return True
        if not self._append(lines):
            return False
        with self._state:
            self._anonymous.extend(anonymous)
        self._count_summary(summary)
        return True

    def _count_summary(self, summary: Counter[str]) -> None:
        if summary:
            if not self._summary:
                self._summary_since = self.clock()
                log.warning(
                    "action log: unauthenticated denials hold %d unshipped records (their "
                    "share); summarising the rest",
                    len(self._anonymous),
                )
            self._summary.update(summary)

    def _write_summary(self, force: bool = False) -> bool:
        """Write the summary record of the unauthenticated denials counted since the last
        one, every ``summary_seconds`` (``force``: now); False if the disk fails."""
        now = self.clock()
        if not self._summary or (not force and now - self._summary_at < self.summary_seconds):
            return True
        total = sum(self._summary.values())
        counts = ", ".join(f"{check} {n}" for check, n in sorted(self._summary.items()))
        since = record_time(datetime.fromtimestamp(self._summary_since, UTC))
        record = ActionRecord(
            gateway=self.gateway,
            seq=self.size,
            time=record_time(datetime.fromtimestamp(now, UTC)),
            request_id=uuid.uuid4().hex,
            outcome="deny",
            method="*",
            route=UNMATCHED,
            check=SUMMARY,
            detail=f"{total} denials before an identity since {since}, not recorded one by one "
            f"(their share of the spool, {self.max_anonymous} records, is full): {counts}"[:1024],
        )
        if not self._append([record.leaf_bytes()]):
            return False
        with self._state:
            self._anonymous.append(record.seq)
        self.summarised += total
        self._summary.clear()
        self._summary_at = now
        return True

    def _append(self, lines: list[bytes]) -> bool:
        """Append records ``self.size``, ... and fsync; False (and refusing) on failure."""
        seq = self.size
        data = b"".join(line + b"\n" for line in lines)
        try:
            _append_fsync(self.directory / RECORDS, data)
        except OSError as exc:
            with self._state:
                first = self._write_error is None
                self._write_error = f"the action log cannot be written ({exc.strerror or exc})"
                self._update_state()
            if first:
                log.error("action log write failed: %s", exc)
            return False
        offset = self._end
        for line in lines:
            if seq % INDEX_EVERY == 0:
                self._index.append(offset)
            self._root.add(leaf_hash(line))
            offset += len(line) + 1
            seq += 1
        with self._state:
            self._end = offset
            self.size = seq
            self._write_error = None
            self._update_state()
        return True

    def _maybe_checkpoint(self, force: bool = False) -> None:
        last = self._checkpoints[-1].tree_size if self._checkpoints else 0
        if self._head_size != last:  # the last head write failed: no checkpoint before it
            try:
                self._write_head(last, self._checkpoints[-1].root_hash)
            except OSError as exc:
                log.error("action log checkpoint head not written: %s", exc)
                return
            self._head_size = last
        if self.size == last:
            return
        now = self.clock()
        due = (
            force
            or self.size - last >= self.checkpoint_records
            or now - self._last_checkpoint_at >= self.checkpoint_seconds
        )
        if not due:
            return
        cp = make_checkpoint(
            self.key,
            self.gateway,
            self.size,
            self._root.root(),
            record_time(datetime.fromtimestamp(now, UTC)),
        )
        try:
            _append_fsync(self.directory / CHECKPOINTS, canonical(cp.to_json()) + b"\n")
        except OSError as exc:
            log.error("action log checkpoint not written: %s", exc)
            return
        self._last_checkpoint_at = now
        with self._state:
            self._checkpoints.append(cp)
            self._trim_checkpoints()
        try:
            self._write_head(cp.tree_size, cp.root_hash)
        except OSError as exc:
            log.error("action log checkpoint head not written: %s", exc)
            return
        self._head_size = cp.tree_size

    def checkpoint_now(self, timeout: float = 5.0) -> GatewayCheckpoint | None:
        """Write everything queued and a checkpoint covering it; the newest checkpoint."""
        if not self._closed and os.getpid() == self._pid:
            marker = _Flush(checkpoint=True)
            self._queue.put(marker)
            self._wake.set()
            marker.done.wait(timeout)
        return self.latest_checkpoint()

    # -- state

    def _update_state(self) -> None:
        """Recompute :attr:`refusing` (caller holds ``_state``)."""
        reason: str | None = None
        unshipped = self.size - self.shipped
        if self._pid != os.getpid():
            reason = "the action log was opened before this process forked (open it here)"
        elif self._closed:
            reason = "the action log is closed"
        elif self._write_error is not None:
            reason = self._write_error
        elif unshipped >= self.max_unshipped_records:
            reason = (
                f"{unshipped} action records are not yet acknowledged by the CA (the spool "
                f"holds at most {self.max_unshipped_records})"
            )
        elif self._end - self._shipped_offset >= self.max_unshipped_bytes:
            reason = (
                f"{self._end - self._shipped_offset} bytes of action records are not yet "
                f"acknowledged by the CA (the spool holds at most {self.max_unshipped_bytes})"
            )
        elif self._queue_full():
            reason = "the action log's writer cannot keep up"
        if reason != self.refusing and not self._closed:
            if reason is None:
                log.warning("action log accepting records again (%d refusals not recorded "
                            "so far)", self.dropped)  # fmt: skip
            else:
                log.error("action log refusing requests: %s", reason)
        self.refusing = reason

    def _queue_full(self) -> bool:
        q = getattr(self, "_queue", None)
        return q is not None and q.qsize() >= self.capacity

    def _forked(self) -> None:
        # the writer thread and the directory lock stay with the parent
        self.refusing = "the action log was opened before this process forked (open it here)"

    # -- for the shipper

    def _offset(self, seq: int) -> int:
        """The byte offset of record ``seq`` (``seq == size``: the end)."""
        if seq >= self.size:
            return self._end
        base = seq // INDEX_EVERY
        offset = self._index[base]
        skip = seq - base * INDEX_EVERY
        if not skip:
            return offset
        with (self.directory / RECORDS).open("rb") as f:
            f.seek(offset)
            for _ in range(skip):
                offset += len(f.readline())
        return offset

    def read(self, seq: int, limit: int, max_bytes: int = 1 << 20) -> list[bytes]:
        """The leaf bytes of records ``seq``, ``seq + 1``, ... on disk (at most ``limit``
        records and about ``max_bytes``, at least one if there is one)."""
        with self._state:
            size = self.size
        if not 0 <= seq <= size:
            raise ValueError(f"record {seq} is not in the log ({size} records)")
        out: list[bytes] = []
        total = 0
        with (self.directory / RECORDS).open("rb") as f:
            f.seek(self._offset(seq))
            while seq + len(out) < size and len(out) < limit:
                line = f.readline()
                if not line.endswith(b"\n"):  # pragma: no cover - below size it is whole
                    break
                if out and total + len(line) > max_bytes:
                    break
                out.append(line[:-1])
                total += len(line)
        return out

    def latest_checkpoint(self, upto: int | None = None) -> GatewayCheckpoint | None:
        """The newest checkpoint covering at most ``upto`` records (None: any)."""
        with self._state:
            for cp in reversed(self._checkpoints):
                if upto is None or cp.tree_size <= upto:
                    return cp
        return None

    def mark_shipped(self, next_seq: int) -> None:
        """Record that the CA holds every record before ``next_seq`` (atomically on disk)."""
        if not 0 <= next_seq <= self.size:
            raise ValueError(f"next_seq {next_seq} is outside the log (0..{self.size})")
        if next_seq == self.shipped:
            return
        path = self.directory / CURSOR
        tmp = path.with_name(CURSOR + ".tmp")
        with tmp.open("wb") as f:
            f.write(canonical({"next_seq": next_seq}) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        offset = self._offset(next_seq)
        with self._state:
            self.shipped = next_seq
            self._shipped_offset = offset
            while self._anonymous and self._anonymous[0] < next_seq:
                self._anonymous.popleft()
            self._trim_checkpoints()
            self._update_state()

    def _trim_checkpoints(self) -> None:
        """Keep the checkpoints shipping may still send: the newest at or below the cursor
        and every later one (caller holds ``_state`` or is opening)."""
        keep = 0
        for i, cp in enumerate(self._checkpoints):
            if cp.tree_size <= self.shipped:
                keep = i
        if keep:
            del self._checkpoints[:keep]

    # -- closing

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, checkpoint it, stop the writer and release the directory."""
        if self._closed or os.getpid() != self._pid:
            return
        self._queue.put(None)
        self._wake.set()
        self._writer.join(timeout)
        with self._state:
            self._closed = True
            self._update_state()
        os.close(self._lock_fd)

    def __enter__(self) -> ActionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _anonymous_record(record: Any) -> bool:
    """Whether a record (its JSON) is a denial before an identity (no agent, no serial)."""
    return (
        isinstance(record, dict)
        and record.get("outcome") == "deny"
        and "agent" not in record
        and "serial" not in record
    )


# -- proofs -----------------------------------------------------------------------------------


def inclusion(found: Scan, seq: int, tree_size: int | None = None) -> dict[str, Any]:
    """An RFC 9162 inclusion proof of record ``seq`` in the tree of ``tree_size`` records
    (default: the newest checkpoint's), from a :func:`scan` with ``leaves=True``; checked."""
    if found.leaves is None:
        raise ValueError("scan(..., leaves=True) is needed for proofs")
    if tree_size is None:
        if not found.checkpoints:
            raise ActionLogError("the log has no checkpoint to prove inclusion against")
        tree_size = found.checkpoints[-1].tree_size
    if not 0 <= seq < tree_size <= found.size:
        raise ActionLogError(f"record {seq} is not in the tree of {tree_size} records")
    tree = MerkleTree(bytes(found.leaves[: tree_size * 32]))
    proof = tree.inclusion_proof(seq, tree_size)
    root = tree.root(tree_size)
    leaf = tree.leaf(seq)
    if not verify_inclusion(leaf, seq, tree_size, proof, root):  # pragma: no cover
        raise ActionLogError("internal: the inclusion proof does not verify")
    return {
        "seq": seq,
        "tree_size": tree_size,
        "leaf_hash": base64.b64encode(leaf).decode(),
        "root_hash": base64.b64encode(root).decode(),
        "proof": [base64.b64encode(p).decode() for p in proof],
    }


# -- command line -----------------------------------------------------------------------------


def keygen(out: Path, kind: str = "p256") -> bytes:
    """Write a new gateway key to ``out`` (PKCS#8 PEM, mode 0600; never over a file);
    returns its public key PEM."""
    key: PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.action_log", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("keygen", help="make a gateway checkpoint key; prints its public key")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--type", choices=("p256", "ed25519"), default="p256")
    ver = sub.add_parser("verify", help="verify a log directory offline")
    ver.add_argument("directory", type=Path)
    ver.add_argument("--public-key", type=Path, action="append", required=True)
    ver.add_argument("--gateway", help="the gateway ID the records must carry")
    ver.add_argument("--proof", type=int, action="append", default=[], metavar="SEQ",
                     help="print an inclusion proof of record SEQ (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "keygen":
        try:
            public = keygen(args.out, args.type)
        except FileExistsError:
            print(f"{args.out}: exists; not overwritten", file=sys.stderr)
            return 2
        sys.stdout.write(public.decode())
        return 0
    try:
        keys = [load_public_key(p) for p in args.public_key]
        found = scan(args.directory, args.gateway, keys, require_keys=True, leaves=bool(args.proof))
        proofs = [inclusion(found, seq) for seq in args.proof]
    except ActionLogError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    covered = found.checkpoints[-1].tree_size if found.checkpoints else 0
    report: dict[str, Any] = {
        "ok": True,
        "gateway": found.gateway,
        "records": found.size,
        "checkpoints": len(found.checkpoints),
        "checkpointed_records": covered,
        "root_hash": base64.b64encode(found.root).decode(),
        "torn_tail_bytes": len(found.tail),
    }
    if proofs:
        report["proofs"] = proofs
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
