"""The CA metadata document (``GET /ca/metadata.json``): the parts SDKs configure from.

Fetching is the caller's job (or :mod:`wire.refresh`'s); these functions only parse the
JSON, strictly: the SDKs take the arcs a CA accepts and the arc it issues under from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wire.oids import OidArc, OidArcError, parse_arc, parse_arcs

#: The media type and path the CA serves the document at.
METADATA_PATH = "/ca/metadata.json"
MAX_METADATA_BYTES = 256 * 1024


class MetadataError(ValueError):
    """A CA metadata document that is not what ``/ca/metadata.json`` serves."""


@dataclass(frozen=True)
class CAMetadataArcs:
    """The OID arcs of a CA: the one it issues under and every one it accepts."""

    oid_arc: OidArc
    accepted_oid_arcs: tuple[OidArc, ...]


def _document(doc: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(doc, Mapping):
        return doc
    if len(doc) > MAX_METADATA_BYTES:
        raise MetadataError(f"CA metadata: larger than {MAX_METADATA_BYTES} bytes")
    try:
        parsed = json.loads(doc)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"CA metadata: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise MetadataError("CA metadata: not a JSON object")
    return parsed


def arcs_from_metadata(doc: bytes | str | Mapping[str, Any]) -> CAMetadataArcs:
    """The arcs of a CA metadata document (JSON text or parsed); :class:`MetadataError` if
    ``oid_arc`` or ``accepted_oid_arcs`` is missing or not valid arcs, or the current arc is
    not among the accepted ones."""
    data = _document(doc)
    current, accepted = data.get("oid_arc"), data.get("accepted_oid_arcs")
    if not isinstance(current, str):
        raise MetadataError("CA metadata: 'oid_arc' must be a dotted OID string")
    if not isinstance(accepted, list) or not all(isinstance(a, str) for a in accepted):
        raise MetadataError("CA metadata: 'accepted_oid_arcs' must be a list of dotted OIDs")
    try:
        arc, arcs = parse_arc(current), parse_arcs(accepted)
    except OidArcError as exc:
        raise MetadataError(f"CA metadata: {exc}") from None
    if arc not in arcs:
        raise MetadataError(f"CA metadata: 'oid_arc' {arc} is not in 'accepted_oid_arcs'")
    return CAMetadataArcs(arc, arcs)
