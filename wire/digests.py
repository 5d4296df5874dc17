"""Provenance digests: the one implementation the CA certifies and agents run (docs/oids.md).

* prompt: SHA-256 of the prompt file's exact bytes (no normalisation of any kind);
* model: SHA-256 of the weights manifest, one line ``"<sha256-hex>  <size>  <path>\\n"`` per
  regular file, paths relative and ``/``-separated (the basename for a single file), sorted
  bytewise by UTF-8 path; symlinks only inside the directory; files streamed in 1 MiB chunks;
* config: SHA-256 of canonical JSON (sorted keys, no white space, UTF-8, finite numbers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

CHUNK_SIZE: Final = 1024 * 1024
StrPath = str | os.PathLike[str]


class DigestError(ValueError):
    """A file, directory or configuration that cannot be digested by these rules."""


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: relative POSIX path, size in bytes, SHA-256."""

    path: str
    size: int
    sha256: bytes

    def line(self) -> bytes:
        return f"{self.sha256.hex()}  {self.size}  {self.path}\n".encode()


def sha256_stream(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> tuple[bytes, int]:
    """SHA-256 and length of everything left in ``fileobj``, read in fixed-size chunks."""
    h = hashlib.sha256()
    size = 0
    while chunk := fileobj.read(chunk_size):
        h.update(chunk)
        size += len(chunk)
    return h.digest(), size


def prompt_digest(data: bytes) -> bytes:
    """SHA-256 of the system prompt's exact bytes."""
    return hashlib.sha256(data).digest()


def prompt_digest_file(path: StrPath) -> bytes:
    """:func:`prompt_digest` of a file."""
    try:
        with open(path, "rb") as f:
            return sha256_stream(f)[0]
    except OSError as exc:
        raise DigestError(f"cannot read prompt file {os.fspath(path)!r}: {exc.strerror}") from None


def _check_rel(rel: str) -> bytes:
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise DigestError(f"file name is not valid UTF-8: {rel!r}") from None
    if "\n" in rel or "\r" in rel:
        raise DigestError(f"file name contains a line break: {rel!r}")
    return encoded


def _within(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _collect(root: str) -> list[tuple[bytes, str, str]]:
    real_root = os.path.realpath(root)
    found: list[tuple[bytes, str, str]] = []

    # iterative (a stack of directories): a deep tree cannot exhaust Python's recursion limit
    pending: list[tuple[str, str, frozenset[str]]] = [(root, "", frozenset({real_root}))]
    while pending:
        fs_dir, rel_dir, active = pending.pop()
        try:
            with os.scandir(fs_dir) as it:
                entries = list(it)
        except OSError as exc:
            raise DigestError(f"cannot list {fs_dir!r}: {exc.strerror}") from None
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            if entry.is_symlink():
                if not _within(real_root, os.path.realpath(entry.path)):
                    raise DigestError(f"symlink {rel!r} points outside the model directory")
                try:
                    mode = os.stat(entry.path).st_mode
                except OSError:
                    raise DigestError(f"symlink {rel!r} is broken") from None
            else:
                mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                real = os.path.realpath(entry.path)
                if real in active:
                    raise DigestError(f"symlink loop at {rel!r}")
                pending.append((entry.path, rel + "/", active | {real}))
            elif stat.S_ISREG(mode):
                found.append((_check_rel(rel), rel, entry.path))
            else:
                raise DigestError(f"{rel!r} is not a regular file or directory")
    return found


def _files(path: StrPath) -> list[tuple[bytes, str, str]]:
    fs_root = os.fspath(path)
    try:
        mode = os.stat(fs_root).st_mode
    except OSError as exc:
        raise DigestError(f"cannot read model path {fs_root!r}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        name = Path(fs_root).name
        files = [(_check_rel(name), name, fs_root)]
    elif stat.S_ISDIR(mode):
        files = _collect(fs_root)
        if not files:
            raise DigestError(f"model directory {fs_root!r} has no files")
    else:
        raise DigestError(f"model path {fs_root!r} is not a file or directory")
    files.sort(key=lambda item: item[0])
    return files


def model_manifest(path: StrPath) -> Iterator[ManifestEntry]:
    """The manifest entries of a model file or directory, sorted bytewise by UTF-8 path."""
    for _, rel, fs_path in _files(path):
        try:
            with open(fs_path, "rb") as f:
                digest, size = sha256_stream(f)
        except OSError as exc:
            raise DigestError(f"cannot read model file {rel!r}: {exc.strerror}") from None
        yield ManifestEntry(rel, size, digest)


def manifest_digest(entries: Iterable[ManifestEntry]) -> bytes:
    """SHA-256 over the manifest lines of ``entries`` (already in manifest order)."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(entry.line())
    return h.digest()


def model_digest(path: StrPath) -> bytes:
    """SHA-256 of the model manifest (streamed: memory stays constant whatever the size)."""
    return manifest_digest(model_manifest(path))


def model_fingerprint(path: StrPath) -> tuple[tuple[str, int, int], ...]:
    """A cheap change detector: ``(path, size, mtime_ns)`` of every file (no hashing)."""
    out = []
    for _, rel, fs_path in _files(path):
        st = os.stat(fs_path)
        out.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(out)


def model_stamps(path: StrPath) -> tuple[tuple[str, int, int, int, int, int], ...]:
    """``(path, size, mtime_ns, ctime_ns, inode, device)`` of every file: a change detector
    that also sees a file swapped for another of the same size and mtime (no hashing)."""
    out = []
    for _, rel, fs_path in _files(path):
        try:
            st = os.stat(fs_path)
        except OSError as exc:
            raise DigestError(f"cannot stat model file {rel!r}: {exc.strerror}") from None
        out.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return tuple(out)


def _check_json(value: object, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise DigestError(f"config value at {where} is not a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DigestError(f"config key at {where} is not a string: {key!r}")
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")


def canonical_json(obj: Mapping[str, object]) -> bytes:
    """Sorted keys, ``,``/``:`` separators, UTF-8, finite numbers only."""
    if not isinstance(obj, Mapping):
        raise DigestError("config must be a JSON object (mapping)")
    _check_json(obj, "$")
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")  # a lone surrogate fails here (UnicodeEncodeError)
    except (TypeError, ValueError) as exc:
        raise DigestError(f"config is not canonical JSON: {exc}") from None


def config_digest(obj: Mapping[str, object]) -> bytes:
    """SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(obj)).digest()
