"""The runtime attestation an agent's launcher hands it, carried into enrollment and renewal.

The orchestrator that launched the agent writes a signed statement (a compact JWS, decision
0051) binding the agent's public key to the provenance it saw running, into a file only the
agent can read. The SDK reads that file afresh at every enrollment and renewal, so a launcher
that refreshes it gives each renewal a fresh attestation. The statement is never passed on a
command line (``ps`` shows argv to every user): only its path, directly or through the
environment variable :data:`ENV_VAR`.

The file holds either a compact JWS from the orchestrator or, for an agent in an AMD SEV-SNP
confidential VM, the ``agentca-sev-snp-v1`` JSON envelope (the firmware's report, the VCEK
certificate and the claims; about 4 KiB, docs/agents.md). The SDK sends it as read, in the
JSON body's ``attestation`` member, and the CA tells the two apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.errors import AgentError

ENV_VAR: Final = "AGENTCA_ATTESTATION_FILE"
MAX_BYTES: Final = 16 * 1024  # the CA's own bound (an SNP envelope; a JWS is at most 8 KiB)


class AttestationError(AgentError):
    """The launcher's attestation cannot be read."""


@dataclass(frozen=True)
class AttestationSource:
    """Where the launcher leaves the attestation: a file, re-read for every request."""

    path: Path

    @classmethod
    def from_env(cls, var: str = ENV_VAR) -> AttestationSource | None:
        """The file named by ``$AGENTCA_ATTESTATION_FILE`` (None when it is unset)."""
        value = os.environ.get(var, "").strip()
        return cls(Path(value)) if value else None

    def read(self) -> str:
        """The attestation now in the file (a compact JWS or an SEV-SNP JSON envelope,
        surrounding blanks stripped)."""
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise AttestationError(
                f"cannot read the attestation file {self.path}: {exc.strerror}"
            ) from None
        if len(raw) > MAX_BYTES:
            raise AttestationError(f"the attestation file {self.path} is over {MAX_BYTES} bytes")
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise AttestationError(
                f"the attestation file {self.path} is not a compact JWS"
            ) from None
        if text.startswith("{") and text.endswith("}"):
            return text  # an SEV-SNP envelope: the CA checks its contents
        if text.count(".") != 2:
            raise AttestationError(
                f"the attestation file {self.path} is not a compact JWS or an SEV-SNP envelope"
            )
        return text
