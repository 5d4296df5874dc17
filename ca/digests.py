"""Provenance digests for the CA: the agent SDK's implementation, with the CA's errors.

There is one implementation of the hashing rules (``agent.digests``, which agents run and which
depends on nothing of the server), so the digests the CA certifies and the digests an agent
computes at run time cannot drift apart. Rules (see docs/oids.md, "Digests"):

* prompt: SHA-256 of the prompt file's exact bytes (no normalisation of any kind);
* model: SHA-256 of the weights manifest, one line ``"<sha256-hex>  <size>  <path>\\n"`` per
  regular file, paths relative and ``/``-separated (the basename for a single file), sorted
  bytewise by UTF-8 path; symlinks only inside the directory; files streamed in 1 MiB chunks,
  so memory stays constant whatever the model size;
* config: SHA-256 of canonical JSON (sorted keys, no white space, UTF-8, finite numbers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import wraps
from typing import BinaryIO, ParamSpec, TypeVar

from agent import digests as _impl
from agent.errors import DigestError
from ca.errors import CAError, ErrorCode

CHUNK_SIZE = _impl.CHUNK_SIZE
ManifestEntry = _impl.ManifestEntry
StrPath = _impl.StrPath

P = ParamSpec("P")
R = TypeVar("R")


def _as_ca_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DigestError as exc:
            raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None

    return wrapper


def sha256_stream(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> tuple[bytes, int]:
    """SHA-256 and length of everything left in ``fileobj``, read in fixed-size chunks."""
    h = hashlib.sha256()
    size = 0
    while chunk := fileobj.read(chunk_size):
        h.update(chunk)
        size += len(chunk)
    return h.digest(), size


def manifest_digest(entries: Iterable[ManifestEntry]) -> bytes:
    """SHA-256 over the manifest lines of ``entries`` (already in manifest order)."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(entry.line())
    return h.digest()


prompt_digest = _impl.prompt_digest
prompt_digest_file: Callable[[StrPath], bytes] = _as_ca_errors(_impl.prompt_digest_file)
model_digest: Callable[[StrPath], bytes] = _as_ca_errors(_impl.model_digest)
canonical_json: Callable[[Mapping[str, object]], bytes] = _as_ca_errors(_impl.canonical_json)
config_digest: Callable[[Mapping[str, object]], bytes] = _as_ca_errors(_impl.config_digest)


def model_manifest(path: StrPath) -> Iterator[ManifestEntry]:
    """The manifest entries of a weights file or directory, in manifest order (streamed)."""
    try:
        yield from _impl.model_manifest(path)
    except DigestError as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None
