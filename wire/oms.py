"""The OpenSSF Model Signing (OMS v1.0) model digest, without the ``model-signing`` package.

An OMS signature is a DSSE envelope over an in-toto statement whose predicate lists one
resource per file (``name``: path relative to the model, ``/``-separated; ``digest``: SHA-256
of the file) and whose single subject carries the *root digest*: SHA-256 over the raw 32-byte
file digests concatenated in resource order. Certifying that root digest lets a verifier
check an OMS signature against a certificate without hashing the weights again.

This module reproduces ``model_signing.hashing.hash(path)`` (1.1.x, default configuration:
file serialization, SHA-256, 1 MiB reads) exactly where it produces a digest, and is stricter
where it would be silent:

* files are ordered by their path components (``pathlib.PurePosixPath`` order: ``a/b`` sorts
  before ``a.txt``), not by the joined string;
* ``.git``, ``.gitattributes``, ``.github`` and ``.gitignore`` at the top of the directory,
  and everything under them, are ignored (a nested ``sub/.gitignore`` is hashed), plus any
  extra ``ignore`` paths (e.g. the signature file, as ``model_signing sign`` does);
* a single-file model is one resource named ``.``;
* a symlink anywhere (ignored trees included) is refused, as OMS does by default; with
  ``allow_symlinks`` a symlink to a file is hashed through (OMS's rule) but a symlink to a
  directory is refused, where OMS would skip its contents silently;
* refused too: fifos, sockets, devices, unreadable directories (OMS's glob skips those
  silently), names that are not UTF-8, and a model with no file left to hash;
* each file is opened once (``O_NOFOLLOW`` unless symlinks are allowed), checked to be a
  regular file on the open descriptor and streamed in 1 MiB chunks: memory stays constant
  whatever the size, and a file whose size or mtime changes while it is read is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from wire.digests import CHUNK_SIZE, DigestError, StrPath

#: Paths OMS ignores by default (``ignore_git_paths=True``), relative to the model directory.
GIT_PATHS: Final = (".git", ".gitattributes", ".github", ".gitignore")
#: The in-toto statement type, predicate type and DSSE payload type of an OMS v1.0 signature.
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

Key = tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """One OMS resource: the file's name in the manifest, its SHA-256 and its size."""

    name: str
    sha256: bytes
    size: int


@dataclass(frozen=True)
class FileStamp:
    """What identifies one hashed file on disk (a swap or rewrite changes at least one)."""

    name: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int


@dataclass(frozen=True)
class ModelDigest:
    """The OMS root digest of a model and the resources it was computed over, in order."""

    root: bytes
    resources: tuple[Resource, ...]
    stamps: tuple[FileStamp, ...]


@dataclass(frozen=True)
class _File:
    key: Key
    name: str
    fs_path: str


def _parts(path: str, what: str) -> Key:
    """``path`` as PurePosixPath components; refuses absolute, ``..``, empty and ``\\``."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise DigestError(f"{what} {path!r} must be a relative '/'-separated path")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if not parts or ".." in parts:
        raise DigestError(f"{what} {path!r} must name something inside the model directory")
    return parts


def _utf8(name: str, rel: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DigestError(f"file name is not valid UTF-8: {rel!r}") from None


def _ignored(key: Key, ignore: Sequence[Key]) -> bool:
    return any(key[: len(i)] == i for i in ignore)


def _collect(root: str, ignore: Sequence[Key], allow_symlinks: bool) -> list[_File]:
    """Every file under ``root`` (iteratively: a deep tree cannot exhaust the stack)."""
    found: list[_File] = []
    pending: list[tuple[str, Key]] = [(root, ())]
    while pending:
        fs_dir, key_dir = pending.pop()
        try:
            with os.scandir(fs_dir) as it:
                entries = list(it)
        except OSError as exc:
            raise DigestError(f"cannot list {fs_dir!r}: {exc.strerror}") from None
        for entry in entries:
            key = (*key_dir, entry.name)
            rel = "/".join(key)
            _utf8(entry.name, rel)
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    if not allow_symlinks:
                        raise DigestError(f"{rel!r} is a symlink (OMS refuses symlinks)")
                    mode = os.stat(entry.path).st_mode
                    if stat.S_ISDIR(mode):
                        raise DigestError(f"{rel!r} is a symlink to a directory")
            except FileNotFoundError:
                raise DigestError(f"{rel!r} is a broken symlink or vanished") from None
            except OSError as exc:
                raise DigestError(f"cannot stat {rel!r}: {exc.strerror}") from None
            if stat.S_ISDIR(mode):
                pending.append((entry.path, key))
            elif stat.S_ISREG(mode):
                if not _ignored(key, ignore):
                    found.append(_File(key, rel, entry.path))
            else:
                raise DigestError(f"{rel!r} is not a regular file or directory")
    return found


def model_files(
    path: StrPath, *, ignore: Iterable[str] = (), allow_symlinks: bool = False
) -> list[tuple[str, str]]:
    """``(resource name, file system path)`` of every file OMS hashes, in resource order."""
    fs_root = os.fspath(path)
    try:
        if not allow_symlinks and stat.S_ISLNK(os.lstat(fs_root).st_mode):
            raise DigestError(f"model path {fs_root!r} is a symlink (OMS refuses symlinks)")
        mode = os.stat(fs_root).st_mode
    except OSError as exc:
        raise DigestError(f"cannot read model path {fs_root!r}: {exc.strerror}") from None
    rules = [_parts(p, "ignored path") for p in (*GIT_PATHS, *ignore)]
    if stat.S_ISREG(mode):
        return [(".", fs_root)]
    if not stat.S_ISDIR(mode):
        raise DigestError(f"model path {fs_root!r} is not a file or directory")
    files = _collect(fs_root, rules, allow_symlinks)
    if not files:
        raise DigestError(f"model directory {fs_root!r} has no file to hash")
    files.sort(key=lambda f: f.key)
    return [(f.name, f.fs_path) for f in files]


def _stamp(name: str, st: os.stat_result) -> FileStamp:
    return FileStamp(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def hash_file(
    name: str, fs_path: str, *, follow: bool = False, chunk_size: int = CHUNK_SIZE
) -> tuple[Resource, FileStamp]:
    """SHA-256 of one regular file, read once through one descriptor in fixed-size chunks."""
    flags = _OPEN_FLAGS | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(fs_path, flags)
    except OSError as exc:
        raise DigestError(f"cannot read model file {name!r}: {exc.strerror}") from None
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):  # before fdopen, which refuses a directory itself
        os.close(fd)
        raise DigestError(f"{name!r} is not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        h = hashlib.sha256()
        size = 0
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
        after = os.fstat(fd)
    # ctime too: an in-place write whose mtime was set back still moves the ctime
    was = (before.st_size, before.st_mtime_ns, before.st_ctime_ns)
    if (size, *was[1:]) != (after.st_size, after.st_mtime_ns, after.st_ctime_ns) or size != was[0]:
        raise DigestError(f"model file {name!r} changed while it was being hashed")
    return Resource(name, h.digest(), size), _stamp(name, after)


def root_digest(file_digests: Iterable[bytes]) -> bytes:
    """The OMS root (subject) digest: SHA-256 over the file digests in resource order."""
    h = hashlib.sha256()
    for d in file_digests:
        if len(d) != 32:
            raise DigestError("an OMS resource digest must be 32 bytes (SHA-256)")
        h.update(d)
    return h.digest()


def model_digest(
    path: StrPath, *, ignore: Iterable[str] = (), allow_symlinks: bool = False
) -> ModelDigest:
    """The OMS root digest of a model file or directory, its resources and file stamps."""
    resources: list[Resource] = []
    stamps: list[FileStamp] = []
    for name, fs_path in model_files(path, ignore=ignore, allow_symlinks=allow_symlinks):
        resource, st = hash_file(name, fs_path, follow=allow_symlinks)
        resources.append(resource)
        stamps.append(st)
    return ModelDigest(root_digest(r.sha256 for r in resources), tuple(resources), tuple(stamps))


def model_fingerprint(
    path: StrPath, *, ignore: Iterable[str] = (), allow_symlinks: bool = False
) -> tuple[FileStamp, ...]:
    """A cheap change detector (no hashing): the stamps :func:`model_digest` would record."""
    out = []
    for name, fs_path in model_files(path, ignore=ignore, allow_symlinks=allow_symlinks):
        try:
            st = os.stat(fs_path, follow_symlinks=allow_symlinks)
        except OSError as exc:
            raise DigestError(f"cannot stat model file {name!r}: {exc.strerror}") from None
        out.append(_stamp(name, st))
    return tuple(out)


def _resource_key(name: object) -> Key:
    if not isinstance(name, str):
        raise DigestError("an OMS resource name must be a string")
    if name == ".":
        return ()
    parts = _parts(name, "OMS resource name")
    if "/".join(parts) != name:
        raise DigestError(f"OMS resource name {name!r} is not in canonical form")
    return parts


def statement_digest(statement: Mapping[str, object]) -> tuple[bytes, tuple[Resource, ...]]:
    """The subject (root) digest of an OMS v1.0 in-toto statement, after checking it.

    Checks the statement and predicate types, one subject, file serialization with SHA-256,
    canonical, unique, traversal-free resource names in OMS order, and that the resources
    hash to the subject digest. It does not check any signature: that is the envelope's job.
    Resource sizes are unknown here and reported as -1.
    """
    if statement.get("_type") != STATEMENT_TYPE:
        raise DigestError("not an in-toto v1 statement")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise DigestError(f"predicate type is not {PREDICATE_TYPE}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise DigestError("an OMS statement has exactly one subject")
    subject_digest = subjects[0].get("digest")
    if not isinstance(subject_digest, dict) or not isinstance(subject_digest.get("sha256"), str):
        raise DigestError("the OMS subject has no sha256 digest")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise DigestError("the OMS statement has no predicate")
    ser = predicate.get("serialization")
    if (
        not isinstance(ser, dict)
        or ser.get("method") != "files"
        or ser.get("hash_type") != ("sha256")
    ):
        raise DigestError("only OMS file serialization with SHA-256 is supported")
    items = predicate.get("resources")
    if not isinstance(items, list) or not items:
        raise DigestError("the OMS predicate lists no resources")
    resources: list[Resource] = []
    keys: list[Key] = []
    for item in items:
        if not isinstance(item, dict) or item.get("algorithm") != "sha256":
            raise DigestError("every OMS resource must be a sha256 digest")
        digest = item.get("digest")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise DigestError("an OMS resource digest must be 64 lowercase hex digits")
        keys.append(_resource_key(item.get("name")))
        resources.append(Resource(str(item["name"]), bytes.fromhex(digest), -1))
    if keys != sorted(set(keys)) or (() in keys and len(keys) != 1):
        raise DigestError("OMS resources must be unique and in OMS order")
    root = root_digest(r.sha256 for r in resources)
    if root.hex() != subject_digest["sha256"]:
        raise DigestError("the OMS resources do not hash to the subject digest")
    return root, tuple(resources)
