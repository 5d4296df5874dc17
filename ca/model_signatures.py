"""Model producers' trust anchors from the settings, and bundle checks as CA errors.

The verification itself is :mod:`wire.oms_signature` (pure, offline). This module reads the
``model_producers`` setting (``NAME=PEM-FILE``: public keys and/or CA certificates) once per
distinct value, and turns a refused bundle into a ``policy-refused`` problem that names why.
Decision 0052.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from ca.config import Settings
from ca.errors import CAError, ErrorCode
from wire.oms_signature import (
    MAX_BUNDLE_BYTES,
    Producer,
    SignatureError,
    VerifiedModel,
    parse_producers,
    verify_bundle,
    verify_model,
)


@lru_cache(maxsize=8)
def _producers(entries: tuple[str, ...]) -> tuple[Producer, ...]:
    return parse_producers(entries)


def producers(settings: Settings) -> tuple[Producer, ...]:
    """The configured producers: none is a refusal (403); an unreadable file a CONFIG error."""
    if not settings.model_producers:  # the request is refused, the CA is not broken
        raise CAError(
            ErrorCode.POLICY_REFUSED,
            "model signature refused: no model producer is configured (setting "
            "model_producers = ['NAME=PEM-FILE', ...])",
        )
    try:
        return _producers(tuple(settings.model_producers))
    except SignatureError as exc:
        raise CAError(ErrorCode.CONFIG, f"model_producers: {exc}") from None


def read_bundle(path: str | os.PathLike[str]) -> bytes:
    """A signature bundle file, read at most :data:`MAX_BUNDLE_BYTES` + 1 bytes (a huge or
    endless file, e.g. ``/dev/zero``, is refused without being read whole)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise CAError(
            ErrorCode.TOO_LARGE,
            f"the signature bundle {path} is larger than {MAX_BUNDLE_BYTES} bytes",
        )
    return data


def check_bundle(settings: Settings, bundle: bytes) -> VerifiedModel:
    """Verify ``bundle``'s signature and statement (the API: the files are not here)."""
    anchors = producers(settings)
    try:
        return verify_bundle(bundle, anchors)
    except SignatureError as exc:
        raise CAError(ErrorCode.POLICY_REFUSED, f"model signature refused: {exc}") from None


def check_model(settings: Settings, model: Path, bundle: bytes) -> VerifiedModel:
    """Verify ``bundle`` and that the directory ``model`` is exactly what it signs."""
    anchors = producers(settings)
    try:
        return verify_model(model, bundle, anchors)
    except SignatureError as exc:
        raise CAError(ErrorCode.POLICY_REFUSED, f"model signature refused: {exc}") from None
