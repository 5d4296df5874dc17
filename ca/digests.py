"""Provenance digests for the CA: :mod:`wire.digests`, with the CA's errors.

There is one implementation of the hashing rules (``wire.digests``, which the agent SDK uses
too and which depends on nothing of the server), so the digests the CA certifies and the
digests an agent computes at run time cannot drift apart. Rules (see docs/oids.md, "Digests"):

* prompt: SHA-256 of the prompt file's exact bytes (no normalisation of any kind);
* model: SHA-256 of the weights manifest, one line ``"<sha256-hex>  <size>  <path>\\n"`` per
  regular file, paths relative and ``/``-separated (the basename for a single file), sorted
  bytewise by UTF-8 path; symlinks only inside the directory; files streamed in 1 MiB chunks,
  so memory stays constant whatever the model size;
* config: SHA-256 of canonical JSON (sorted keys, no white space, UTF-8, finite numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import wraps
from typing import ParamSpec, TypeVar

from ca.errors import CAError, ErrorCode
from wire import digests as _impl
from wire import oms
from wire.digests import DigestError, manifest_digest, sha256_stream

CHUNK_SIZE = _impl.CHUNK_SIZE
ManifestEntry = _impl.ManifestEntry
StrPath = _impl.StrPath

__all__ = [
    "CHUNK_SIZE",
    "ManifestEntry",
    "StrPath",
    "canonical_json",
    "config_digest",
    "manifest_digest",
    "model_digest",
    "model_manifest",
    "oms_model_digest",
    "prompt_digest",
    "prompt_digest_file",
    "sha256_stream",
]

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


prompt_digest = _impl.prompt_digest
prompt_digest_file: Callable[[StrPath], bytes] = _as_ca_errors(_impl.prompt_digest_file)
model_digest: Callable[[StrPath], bytes] = _as_ca_errors(_impl.model_digest)


def oms_model_digest(
    path: StrPath, *, ignore: Iterable[str] = (), allow_symlinks: bool = False
) -> oms.ModelDigest:
    """The OpenSSF Model Signing root digest of a model (:func:`wire.oms.model_digest`)."""
    try:
        return oms.model_digest(path, ignore=ignore, allow_symlinks=allow_symlinks)
    except DigestError as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None


canonical_json: Callable[[Mapping[str, object]], bytes] = _as_ca_errors(_impl.canonical_json)
config_digest: Callable[[Mapping[str, object]], bytes] = _as_ca_errors(_impl.config_digest)


def model_manifest(path: StrPath) -> Iterator[ManifestEntry]:
    """The manifest entries of a weights file or directory, in manifest order (streamed)."""
    try:
        yield from _impl.model_manifest(path)
    except DigestError as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None
