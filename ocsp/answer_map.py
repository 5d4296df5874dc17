"""A host's memory-mapped copy of the shared pre-signed OCSP answers (decision 0050).

The shared store (``ocsp_responses``, decision 0038) costs a database round trip per miss,
and a per-worker hot cache big enough for 100,000 certificates would cost every worker its own
copy. So one process per host, whichever holds the build lock, writes a snapshot of every
usable stored answer to one file; every worker maps it read-only. The answers then sit once in
the page cache, a warm answer needs no I/O and no thread hop, and workers stay small (the
mapped pages are shared file pages, not per-process memory).

What makes a snapshot safe to serve from is decided by the responder, not here: the file
records ``built_at`` and ``built_mono`` (wall and host-monotonic time read *before* its
database snapshot began, with the host's boot id, so a clock step cannot reorder a change and
a snapshot) and ``feed_id``
(the highest ``status_changes`` id in that snapshot); a worker skips an entry whose serial it
has seen change since ``built_at``, and a file whose ``feed_id`` is older than what its own
feed reading covers (``ocsp.responder``).

File layout (little-endian): a 64-byte header, the records, then a slot table of
``(hash, offset)`` pairs (open addressing, linear probing, load at most 1/2). The key is the
DER of the one plain request for that CertID (``OCSPRequest`` holding only it, which DER makes
unique), hashed with BLAKE2b-64: a worker finds a request's answer from its bytes alone,
without parsing it (:meth:`AnswerMap.get_request`). Files are written to a
temporary name, fsynced and renamed, so a reader sees a whole file or the previous one.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select, text

from ca.store.models import StatusChange
from ca.store.tables import certificates as cert_table
from ca.store.tables import ocsp_responses
from ocsp.status import STILL_TRUE, STORED_COLUMNS, STORED_JOIN

log = logging.getLogger("agentca.ocsp")

MAGIC = b"AGCAOMAP"
VERSION = 3  # 2: keyed by the plain request's DER; 3: monotonic build time and boot id
# magic version count slots pad table built_at feed_id built_mono boot_id
_HEADER = struct.Struct("<8sIIIIQdQd16s")
_RECORD = struct.Struct("<IIBqqqHHI")  # issuer signer status this next refresh lens
_SLOT = struct.Struct("<QQ")
HEADER_SIZE = _HEADER.size
_STATUSES = ("issued", "revoked")  # certificates.status of the rows the presigner signs
FILE_NAME = "answers.map"


class MapError(ValueError):
    """A file that is not a whole answer map of this version."""


@dataclass(frozen=True)
class MappedAnswer:
    """One stored answer as the map holds it (the fields of ``ocsp.status.StoredAnswer`` plus
    the issuer and the responder certificate that signed it)."""

    issuer_id: int
    signer_id: int
    serial_hex: str
    cert_id_der: bytes
    der: bytes
    cert_status: str
    this_update: int
    next_update: int
    refresh_at: int


def _key_hash(cert_id_der: bytes) -> int:
    value = int.from_bytes(hashlib.blake2b(cert_id_der, digest_size=8).digest(), "little")
    return value or 1  # 0 marks an empty slot


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def plain_request(cert_id_der: bytes) -> bytes:
    """The DER of the ``OCSPRequest`` that asks for ``cert_id_der`` alone (RFC 6960 4.1.1:
    tbsRequest, requestList and Request are SEQUENCEs; nothing optional present)."""
    der = cert_id_der
    for _ in range(4):  # Request, requestList, TBSRequest, OCSPRequest
        der = b"\x30" + _der_length(len(der)) + der
    return der


def _slots_for(count: int) -> int:
    slots = 8
    while slots < 2 * count:
        slots *= 2
    return slots


def boot_id() -> bytes:
    """This host's boot id (16 bytes): ``time.monotonic`` values compare only within one boot."""
    try:
        text_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return bytes.fromhex(text_id.replace("-", ""))[:16].ljust(16, b"\0")
    except (OSError, ValueError):
        return bytes(16)


def write_map(
    path: Path,
    answers: Iterable[MappedAnswer],
    built_at: float,
    feed_id: int,
    built_mono: float | None = None,
) -> int:
    """Write ``answers`` to ``path`` atomically (temporary file, fsync, rename); return how
    many it holds. A CertID that comes twice keeps its first answer. ``built_mono``: the
    host's ``time.monotonic()`` when the snapshot began (default: now)."""
    mono = time.monotonic() if built_mono is None else built_mono
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    entries = array("Q")
    try:
        with open(tmp, "wb") as out:
            out.write(bytes(HEADER_SIZE))
            offset = HEADER_SIZE
            for answer in answers:
                if answer.cert_status not in _STATUSES:
                    continue  # never a row the presigner writes; not worth a wrong answer
                serial = answer.serial_hex.encode("ascii")
                request = plain_request(answer.cert_id_der)
                record = (
                    _RECORD.pack(
                        answer.issuer_id,
                        answer.signer_id,
                        _STATUSES.index(answer.cert_status),
                        answer.this_update,
                        answer.next_update,
                        answer.refresh_at,
                        len(serial),
                        len(request),
                        len(answer.der),
                    )
                    + serial
                    + request
                    + answer.der
                )
                out.write(record)
                entries.append(_key_hash(request))
                entries.append(offset)
                offset += len(record)
            count = len(entries) // 2
            slots = _slots_for(count)
            table = bytearray(slots * _SLOT.size)
            stored = 0
            for i in range(count):
                key, where = entries[2 * i], entries[2 * i + 1]
                slot = key % slots
                while True:
                    at = slot * _SLOT.size
                    taken, _ = _SLOT.unpack_from(table, at)
                    if taken == 0:
                        _SLOT.pack_into(table, at, key, where)
                        stored += 1
                        break
                    slot = (slot + 1) % slots
            out.write(table)
            out.seek(0)
            out.write(
                _HEADER.pack(
                    MAGIC, VERSION, stored, slots, 0, offset, built_at, feed_id, mono, boot_id()
                )
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return stored


class AnswerMap:
    """One answer-map file mapped read-only. Readers on several threads may share it; it is
    closed when the last reference goes (never explicitly while another thread may read)."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size < HEADER_SIZE:
                raise MapError(f"{path}: shorter than a header")
            # MAP_POPULATE: the page tables are filled here (the map's own thread), not by
            # the first request to touch each page (the cold pass's p99, docs/performance.md)
            self._mm = mmap.mmap(
                handle.fileno(),
                0,
                flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                prot=mmap.PROT_READ,
            )
        self.identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stat.st_uid != os.geteuid() or stat.st_mode & 0o022:
            raise MapError(f"{path}: not owned by this user, or writable by others")
        magic, version, count, slots, _, table, built_at, feed_id, mono, boot = _HEADER.unpack_from(
            self._mm
        )
        if magic != MAGIC or version != VERSION:
            raise MapError(f"{path}: not an answer map of version {VERSION}")
        if slots < 8 or slots & (slots - 1) or table + slots * _SLOT.size != stat.st_size:
            raise MapError(f"{path}: truncated or inconsistent")
        self.count, self._slots, self._table = count, slots, table
        self.built_at: float = built_at
        self.feed_id: int = feed_id
        self.built_mono: float = mono
        self.boot_id: bytes = boot

    def get(self, cert_id_der: bytes) -> MappedAnswer | None:
        """The answer stored for this CertID DER, or None."""
        return self.get_request(plain_request(cert_id_der))

    def get_request(self, request_der: bytes) -> MappedAnswer | None:
        """The answer to this exact request DER (a plain one-CertID request), or None."""
        key = _key_hash(request_der)
        mm, slots, table = self._mm, self._slots, self._table
        slot = key % slots
        for _ in range(slots):
            taken, where = _SLOT.unpack_from(mm, table + slot * _SLOT.size)
            if taken == 0:
                return None
            if taken == key:
                found = self._record(where, request_der)
                if found is not None:
                    return found
            slot = (slot + 1) % slots
        return None

    def _record(self, where: int, request_der: bytes) -> MappedAnswer | None:
        mm = self._mm
        fields = _RECORD.unpack_from(mm, where)
        issuer, signer, status, this, next_, refresh, n_serial, n_request, n_der = fields
        start = where + _RECORD.size
        request_at = start + n_serial
        der_at = request_at + n_request
        if mm[request_at:der_at] != request_der or der_at + n_der > self._table:
            return None
        cert_id_der = _cert_id_of(request_der)
        if cert_id_der is None:
            return None
        return MappedAnswer(
            issuer,
            signer,
            mm[start:request_at].decode("ascii"),
            cert_id_der,
            mm[der_at : der_at + n_der],
            _STATUSES[status],
            this,
            next_,
            refresh,
        )


def _cert_id_of(request_der: bytes) -> bytes | None:
    """The CertID inside a :func:`plain_request` DER (the innermost of four SEQUENCEs)."""
    der = request_der
    for _ in range(4):
        if len(der) < 2 or der[0] != 0x30:
            return None
        first = der[1]
        header = 2 if first < 0x80 else 2 + (first & 0x7F)
        der = der[header:]
    return der


def open_map(path: Path) -> AnswerMap | None:
    """The map at ``path``, or None when there is none (yet) or it cannot be used."""
    try:
        return AnswerMap(path)
    except FileNotFoundError:
        return None
    except (OSError, MapError, struct.error, ValueError) as exc:
        log.warning("OCSP answer map %s not used: %s", path, exc)
        return None


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """What tells one written file from the next (inode, mtime, size); None if absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


# -- building from the database ---------------------------------------------------------------

#: every stored answer that still reflects its certificate (the rule of ``STORED_QUERY``)
MAP_QUERY = (
    select(ocsp_responses.c.issuer_id, *STORED_COLUMNS)
    .join(cert_table, STORED_JOIN)
    .where(*STILL_TRUE)
)


def build_from_database(
    engine: Engine,
    path: Path,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Snapshot every usable stored answer into the map at ``path``; return the count.

    ``built_at`` is read before the snapshot begins and ``feed_id`` inside it, in one
    read-only transaction (REPEATABLE READ on PostgreSQL), so a status change missing from
    the file either committed after ``built_at`` or has an id above ``feed_id``.
    """
    built_at, built_mono = clock(), monotonic()
    postgresql = engine.dialect.name == "postgresql"
    options = {"isolation_level": "REPEATABLE READ"} if postgresql else {}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        if postgresql:
            conn.execute(text("SET TRANSACTION READ ONLY"))
        feed_id = conn.execute(select(func.coalesce(func.max(StatusChange.id), 0))).scalar_one()
        result = conn.execution_options(yield_per=2000).execute(MAP_QUERY, {"now": int(clock())})

        def rows() -> Iterator[MappedAnswer]:
            for row in result:
                yield MappedAnswer(
                    row.issuer_id,
                    row.signer_id,
                    row.serial_hex,
                    bytes(row.cert_id_der),
                    bytes(row.der),
                    row.cert_status,
                    row.this_update,
                    row.next_update,
                    row.refresh_at,
                )

        return write_map(path, rows(), built_at, int(feed_id), built_mono)


class MapBuilder:
    """Rebuilds ``directory/answers.map`` every ``interval`` seconds on a daemon thread, in
    the one process of the host that holds ``answers.map.lock`` (the others wait for it, so a
    builder that dies is replaced by the next worker to take the lock)."""

    def __init__(
        self,
        build: Callable[[Path], int],
        directory: Path,
        interval: float = 60.0,
    ) -> None:
        self.build = build
        self.path = directory / FILE_NAME
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.builds = 0

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            directory = self.path.parent
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.stat()
            if info.st_uid != os.geteuid():
                log.warning("OCSP answer map: %s is not owned by this user; not built", directory)
                return
            if info.st_mode & 0o077:
                os.chmod(directory, 0o700)
            self._thread = threading.Thread(target=self._run, name="ocsp-map", daemon=True)
            self._thread.start()

    def soon(self) -> None:
        """Ask for a build now (the map cannot serve: a signer or an issuer changed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        lock_path = self.path.with_name(FILE_NAME + ".lock")
        with open(lock_path, "a") as lock:
            while not self._stop.is_set():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    self._stop.wait(self.interval / 4)
            for stale in self.path.parent.glob(f".{FILE_NAME}.*.tmp"):  # a builder that died
                stale.unlink(missing_ok=True)
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    count = self.build(self.path)
                    self.builds += 1
                    took = time.monotonic() - started
                    log.debug("OCSP answer map: %d answers in %.2f s", count, took)
                except Exception as exc:
                    log.warning("OCSP answer map build failed: %s", exc)
                self._wake.wait(max(1.0, self.interval - (time.monotonic() - started)))
                self._wake.clear()
