"""The delegated signers a responder process answers with, loaded and never made here.

``CurrentSigners`` reads the published ``ocsp_signers`` rows (the CA side writes them, see
``ca.responder_certs``) and loads their keys from the responder's own token. Per issuer it uses
the newest signer that is valid now and whose key the token holds; an issuer without one gets
``tryLater`` (``NOT_INITIALISED``) until the CA side publishes one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from ca.errors import CAError, ErrorCode
from hsm import KeyManager, KeyNotFound
from ocsp.response import Signer
from ocsp.status import SignerInfo, StatusSource

log = logging.getLogger("agentca.ocsp")


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

    def check(self) -> bool:
        return False


class CurrentSigners:
    """The newest valid, loadable signer per issuer (see the module docstring)."""

    def __init__(
        self, source: StatusSource, keys: KeyManager, clock: Callable[[], datetime]
    ) -> None:
        self.source = source
        self.keys = keys
        self.clock = clock
        self._signers: dict[int, Signer] = {}
        self._missing: set[str] = set()  # labels already reported as not in the token

    def _load(self, info: SignerInfo, held: Signer | None) -> Signer | None:
        if held is not None and held.row_id == info.id:
            return held
        try:
            key = self.keys.get(info.key_label)
        except KeyNotFound:
            if info.key_label not in self._missing:
                self._missing.add(info.key_label)
                log.warning(
                    "OCSP signer %s: its key is not in the responder token; skipped (run "
                    "'agentca ocsp rotate-signer' on the CA side)",
                    info.key_label,
                )
            return None
        return Signer(info.certificate_der, key, info.not_after, info.id)

    def reload(self) -> None:
        """Re-read the published signers and pick, per issuer, the newest usable one."""
        now = self.clock()
        chosen: dict[int, Signer] = {}
        for info in self.source.signers(now):  # newest first
            if info.issuer_id in chosen or info.not_before > now:
                continue
            signer = self._load(info, self._signers.get(info.issuer_id))
            if signer is not None:
                chosen[info.issuer_id] = signer
        self._signers = chosen

    def signer_for(self, issuer_id: int) -> Signer:
        signer = self._signers.get(issuer_id)
        if signer is None:
            raise CAError(ErrorCode.NOT_INITIALISED, "no OCSP signer for this issuer")
        return signer

    def check(self) -> bool:
        """Re-pick the signers (one expired, or a newer one became usable); True if any
        changed, so that the answers signed by the old one are dropped."""
        before = {i: s.row_id for i, s in self._signers.items()}
        self.reload()
        return before != {i: s.row_id for i, s in self._signers.items()}
