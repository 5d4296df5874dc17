"""Delegated signers held by a worker: loaded from ``ocsp_signers``, keys from the HSM."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from ca.errors import CAError, ErrorCode
from ocsp.response import Signer
from ocsp.rotation import SignerRotator
from ocsp.signer import needs_rotation
from ocsp.status import StatusSource

log = logging.getLogger("agentca.ocsp")


class KeyLookup(Protocol):
    def get(self, label: str) -> Any: ...


class StaticSigners:
    """A fixed signer per issuer (tests, and tools that sign with software keys)."""

    def __init__(self, signers: dict[int, Signer]) -> None:
        self.signers = signers

    def signer_for(self, issuer_id: int) -> Signer:
        try:
            return self.signers[issuer_id]
        except KeyError:
            raise CAError(ErrorCode.NOT_INITIALISED, "no OCSP signer for this issuer") from None

    def reload(self) -> None:
        pass

    def check(self) -> None:
        pass


class HsmSigners:
    """The newest signer per issuer; creates or rotates through ``rotator`` when needed."""

    def __init__(
        self,
        source: StatusSource,
        keys: KeyLookup,
        rotator: SignerRotator | None,
        clock: Callable[[], datetime],
        renew_fraction: float,
    ) -> None:
        self.source = source
        self.keys = keys
        self.rotator = rotator
        self.clock = clock
        self.renew_fraction = renew_fraction
        self._signers: dict[int, Signer] = {}
        self._rows: dict[int, tuple[datetime, datetime]] = {}

    def reload(self) -> None:
        """Re-read the newest signer of every issuer (after the feed saw a new one)."""
        signers: dict[int, Signer] = {}
        rows: dict[int, tuple[datetime, datetime]] = {}
        for info in self.source.signers():
            current = self._signers.get(info.issuer_id)
            if current is not None and current.row_id == info.id:
                signers[info.issuer_id] = current
            else:
                key = self.keys.get(info.key_label)
                signers[info.issuer_id] = Signer(info.certificate_der, key, info.not_after, info.id)
            rows[info.issuer_id] = (info.not_before, info.not_after)
        self._signers, self._rows = signers, rows

    def signer_for(self, issuer_id: int) -> Signer:
        signer = self._signers.get(issuer_id)
        if signer is None and self.rotator is not None:
            self.rotator.ensure(issuer_id)
            self.reload()
            signer = self._signers.get(issuer_id)
        if signer is None:
            raise CAError(ErrorCode.NOT_INITIALISED, "no OCSP signer for this issuer")
        return signer

    def check(self) -> None:
        """Rotate signers that are past their renewal point (guarded in the database)."""
        if self.rotator is None:
            return
        now = self.clock()
        rotated = False
        for issuer_id, (not_before, not_after) in list(self._rows.items()):
            if needs_rotation(not_before, not_after, now, self.renew_fraction):
                result = self.rotator.ensure(issuer_id)
                log.info("OCSP signer for %s: %s", result.issuer_name, result.key_label)
                rotated = True
        if rotated:
            self.reload()
