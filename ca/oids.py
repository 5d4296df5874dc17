"""Object identifiers of agentca: the CA's name for :mod:`wire.oids`, where they are defined once.

The arc is a property of each CA (recorded with its issuers, ``ca.arcs``); nothing on the CA
side derives an OID from a global. See ``docs/oids.md`` for the table and the ASN.1 module.
"""

from __future__ import annotations

from wire.oids import (
    DEFAULT_ACCEPTED_ARCS,
    DEFAULT_ARC,
    LARGE_ARC_REFUSED_BY,
    LEGACY_ARC,
    OidArc,
    OidArcError,
    arc_warnings,
    example_arc_warning,
    large_arc_warning,
    large_components,
    parse_arc,
    parse_arcs,
)

__all__ = [
    "DEFAULT_ACCEPTED_ARCS",
    "DEFAULT_ARC",
    "LARGE_ARC_REFUSED_BY",
    "LEGACY_ARC",
    "OidArc",
    "OidArcError",
    "arc_warnings",
    "example_arc_warning",
    "large_arc_warning",
    "large_components",
    "parse_arc",
    "parse_arcs",
]
