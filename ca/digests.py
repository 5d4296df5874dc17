"""Provenance digests: system prompt, model weights manifest, runtime configuration.

* ``prompt_digest``: SHA-256 of the prompt file's bytes exactly as stored. No normalisation at
  all (no newline, BOM, whitespace or Unicode handling): change one byte, change the digest.
* ``model_digest``: SHA-256 of a manifest, whether the model is one file or a directory. The
  manifest has one UTF-8 line per regular file, ``"<sha256-hex>  <size>  <path>\\n"``, where
  ``path`` is relative and POSIX-separated (the basename for a single file), lines sorted
  bytewise by the UTF-8 path. Files are streamed in 1 MiB chunks (constant memory).
* ``config_digest``: SHA-256 of canonical JSON (sorted keys, no whitespace, UTF-8).
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

from ca.errors import CAError, ErrorCode

CHUNK_SIZE: Final = 1024 * 1024

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: a file's relative POSIX path, size in bytes and SHA-256."""

    path: str
    size: int
    sha256: bytes

    def line(self) -> bytes:
        """The manifest line, ``b"<hex>  <size>  <path>\\n"``."""
        return f"{self.sha256.hex()}  {self.size}  {self.path}\n".encode()


def sha256_stream(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> tuple[bytes, int]:
    """SHA-256 and length of everything left in ``fileobj``, read in fixed-size chunks."""
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    size = 0
    while True:
        n = fileobj.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        h.update(view[:n])
        size += n
    return h.digest(), size


def prompt_digest(data: bytes) -> bytes:
    """SHA-256 of the system prompt's exact bytes (no normalisation of any kind)."""
    return hashlib.sha256(data).digest()


def prompt_digest_file(path: StrPath) -> bytes:
    """:func:`prompt_digest` of a file, streamed."""
    try:
        with open(path, "rb") as f:
            return sha256_stream(f)[0]
    except OSError as exc:
        raise CAError(
            ErrorCode.INVALID_DIGEST, f"cannot read prompt file {os.fspath(path)!r}: {exc.strerror}"
        ) from None


def manifest_digest(entries: Iterable[ManifestEntry]) -> bytes:
    """SHA-256 of the manifest made of ``entries`` (already sorted by UTF-8 path)."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(entry.line())
    return h.digest()


def _check_rel(rel: str) -> bytes:
    """The UTF-8 bytes of a manifest path, refusing names the line format cannot carry."""
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise CAError(ErrorCode.INVALID_DIGEST, f"file name is not valid UTF-8: {rel!r}") from None
    if "\n" in rel or "\r" in rel:
        raise CAError(ErrorCode.INVALID_DIGEST, f"file name contains a line break: {rel!r}")
    return encoded


def _within(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _collect(root: str) -> list[tuple[bytes, str, str]]:
    """``(utf8_path, rel_path, fs_path)`` for every regular file under ``root``."""
    real_root = os.path.realpath(root)
    found: list[tuple[bytes, str, str]] = []

    def walk(fs_dir: str, rel_dir: str, active: frozenset[str]) -> None:
        try:
            with os.scandir(fs_dir) as it:
                entries = list(it)
        except OSError as exc:
            raise CAError(
                ErrorCode.INVALID_DIGEST, f"cannot list {fs_dir!r}: {exc.strerror}"
            ) from None
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            fs_path = entry.path
            if entry.is_symlink():
                target = os.path.realpath(fs_path)
                if not _within(real_root, target):
                    raise CAError(
                        ErrorCode.INVALID_DIGEST,
                        f"symlink {rel!r} points outside the model directory",
                    )
                try:
                    mode = os.stat(fs_path).st_mode
                except OSError:
                    raise CAError(ErrorCode.INVALID_DIGEST, f"symlink {rel!r} is broken") from None
            else:
                mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                real = os.path.realpath(fs_path)
                if real in active:
                    raise CAError(ErrorCode.INVALID_DIGEST, f"symlink loop at {rel!r}")
                walk(fs_path, rel + "/", active | {real})
            elif stat.S_ISREG(mode):
                found.append((_check_rel(rel), rel, fs_path))
            else:
                raise CAError(
                    ErrorCode.INVALID_DIGEST,
                    f"{rel!r} is not a regular file or directory (fifo, socket or device)",
                )

    walk(root, "", frozenset({real_root}))
    return found


def model_manifest(path: StrPath) -> Iterator[ManifestEntry]:
    """The manifest entries of a model file or directory, sorted bytewise by UTF-8 path.

    A single file yields one entry named by its basename. In a directory every regular file is
    listed (hidden files included); directories themselves add nothing; symlinks are followed
    only if they stay inside the directory (otherwise ``INVALID_DIGEST``); fifos, sockets and
    devices are refused. Paths are collected first, contents hashed lazily one file at a time.
    """
    fs_root = os.fspath(path)
    try:
        mode = os.stat(fs_root).st_mode
    except OSError as exc:
        raise CAError(
            ErrorCode.INVALID_DIGEST, f"cannot read model path {fs_root!r}: {exc.strerror}"
        ) from None
    if stat.S_ISREG(mode):
        name = Path(fs_root).name
        files = [(_check_rel(name), name, fs_root)]
    elif stat.S_ISDIR(mode):
        files = _collect(fs_root)
        if not files:
            raise CAError(ErrorCode.INVALID_DIGEST, f"model directory {fs_root!r} has no files")
    else:
        raise CAError(
            ErrorCode.INVALID_DIGEST, f"model path {fs_root!r} is not a file or directory"
        )
    files.sort(key=lambda item: item[0])
    return _hash_files(files)


def _hash_files(files: list[tuple[bytes, str, str]]) -> Iterator[ManifestEntry]:
    for _, rel, fs_path in files:
        try:
            with open(fs_path, "rb") as f:
                digest, size = sha256_stream(f)
        except OSError as exc:
            raise CAError(
                ErrorCode.INVALID_DIGEST, f"cannot read model file {rel!r}: {exc.strerror}"
            ) from None
        yield ManifestEntry(rel, size, digest)


def model_digest(path: StrPath) -> bytes:
    """SHA-256 of the model manifest (see :func:`model_manifest`) of a file or directory."""
    return manifest_digest(model_manifest(path))


def _check_json(value: object, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise CAError(ErrorCode.INVALID_DIGEST, f"config value at {where} is not a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CAError(
                    ErrorCode.INVALID_DIGEST, f"config key at {where} is not a string: {key!r}"
                )
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")


def canonical_json(obj: Mapping[str, object]) -> bytes:
    """Canonical JSON bytes: sorted keys, ``,``/``:`` separators, UTF-8, finite numbers only."""
    if not isinstance(obj, Mapping):
        raise CAError(ErrorCode.INVALID_DIGEST, "config must be a JSON object (mapping)")
    _check_json(obj, "$")
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, f"config is not canonical JSON: {exc}") from None


def config_digest(obj: Mapping[str, object]) -> bytes:
    """SHA-256 of :func:`canonical_json` of the runtime configuration."""
    return hashlib.sha256(canonical_json(obj)).digest()
