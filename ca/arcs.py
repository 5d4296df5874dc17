"""The CA's OID arc: the current one and the previous ones it still accepts (pure values).

The arc is recorded with the issuers (``issuers.oid_arc``, decision 0022). Moving a CA to a
new arc keeps the old one accepted for ``max_validity_hours`` after the move: no agent
certificate issued under it can outlive that (issuance refuses longer validity), so a verifier
that takes its accepted arcs from the CA metadata never refuses a certificate that may still be
valid. ``issuers.previous_oid_arcs`` holds them as JSON ``[{"arc": ..., "until": ...}]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from ca.errors import CAError, ErrorCode
from ca.oids import DEFAULT_ARC, OidArc, OidArcError, parse_arc


@dataclass(frozen=True)
class PreviousArc:
    """An arc the CA issued under before, accepted until ``until``."""

    arc: OidArc
    until: datetime


@dataclass(frozen=True)
class ArcState:
    """The CA's current arc and its previous arcs."""

    current: OidArc
    previous: tuple[PreviousArc, ...] = ()

    def accepted(self, now: datetime) -> tuple[OidArc, ...]:
        """The current arc, then every previous arc still accepted at ``now``."""
        out = [self.current]
        for p in self.previous:
            if p.until > now and p.arc not in out:
                out.append(p.arc)
        return tuple(out)

    @property
    def every_arc(self) -> tuple[OidArc, ...]:
        """Every arc this CA has issued under (to read its own old certificates)."""
        out = [self.current]
        out.extend(p.arc for p in self.previous if p.arc not in out)
        return tuple(out)

    def moved_to(self, arc: OidArc, now: datetime, keep: timedelta) -> ArcState:
        """This state after moving to ``arc`` at ``now``: the current arc is accepted for
        ``keep`` more (listed first of the previous arcs), arcs no longer accepted are
        dropped, ``arc`` is no longer previous."""
        kept = [p for p in self.previous if p.until > now and p.arc != arc]
        if self.current != arc:
            kept = [p for p in kept if p.arc != self.current]
            kept.insert(0, PreviousArc(self.current, now + keep))  # newest first
        return ArcState(arc, tuple(kept))


def arc_setting(value: str) -> OidArc:
    """The arc a ``oid_arc`` setting or ``--oid-arc`` names (empty: the default example arc);
    ``CONFIG`` if it is not a usable arc."""
    try:
        return parse_arc(value.strip()) if value.strip() else DEFAULT_ARC
    except OidArcError as exc:
        raise CAError(ErrorCode.CONFIG, f"oid_arc: {exc}") from None


def encode_previous(previous: tuple[PreviousArc, ...]) -> str:
    """The ``issuers.previous_oid_arcs`` column value."""
    return json.dumps(
        [{"arc": p.arc.dotted, "until": p.until.isoformat()} for p in previous],
        separators=(",", ":"),
    )


def decode_previous(text: str) -> tuple[PreviousArc, ...]:
    """Parse ``issuers.previous_oid_arcs`` (``INTERNAL`` if the stored value is corrupt)."""
    if not text:
        return ()
    try:
        items = json.loads(text)
        return tuple(
            PreviousArc(OidArc(i["arc"]), datetime.fromisoformat(i["until"])) for i in items
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise CAError(ErrorCode.INTERNAL, f"issuers.previous_oid_arcs is corrupt: {exc}") from None
