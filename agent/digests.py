"""Provenance digests (docs/oids.md, "Digests"): :mod:`wire.digests` with the SDK's errors.

This public SDK module stays importable; the one implementation, which the CA uses too, is
``wire.digests``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import wraps
from typing import ParamSpec, TypeVar

from agent.errors import DigestError
from wire import digests as _impl
from wire import oms as _oms

CHUNK_SIZE = _impl.CHUNK_SIZE
OmsModelDigest = _oms.ModelDigest
ManifestEntry = _impl.ManifestEntry
StrPath = _impl.StrPath

P = ParamSpec("P")
R = TypeVar("R")


def _as_sdk_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _impl.DigestError as exc:
            raise DigestError(str(exc)) from None

    return wrapper


prompt_digest = _impl.prompt_digest
prompt_digest_file: Callable[[StrPath], bytes] = _as_sdk_errors(_impl.prompt_digest_file)
model_digest: Callable[[StrPath], bytes] = _as_sdk_errors(_impl.model_digest)
model_fingerprint: Callable[[StrPath], tuple[tuple[str, int, int], ...]] = _as_sdk_errors(
    _impl.model_fingerprint
)
canonical_json: Callable[[Mapping[str, object]], bytes] = _as_sdk_errors(_impl.canonical_json)
config_digest: Callable[[Mapping[str, object]], bytes] = _as_sdk_errors(_impl.config_digest)


def oms_model_digest(
    path: StrPath, *, ignore: Iterable[str] = (), allow_symlinks: bool = False
) -> OmsModelDigest:
    """The OpenSSF Model Signing (OMS v1.0) root digest of a model file or directory, with
    its resources and the stamps of the files hashed (:func:`wire.oms.model_digest`)."""
    try:
        return _oms.model_digest(path, ignore=ignore, allow_symlinks=allow_symlinks)
    except _impl.DigestError as exc:
        raise DigestError(str(exc)) from None


def model_manifest(path: StrPath) -> Iterator[ManifestEntry]:
    """The manifest entries of a model file or directory, sorted bytewise by UTF-8 path."""
    try:
        yield from _impl.model_manifest(path)
    except _impl.DigestError as exc:
        raise DigestError(str(exc)) from None
