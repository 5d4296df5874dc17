"""Responder tuning (validity periods, cache sizes, limits) with safe defaults.

Deployment settings (database, HSM, listen address) come from ``ca.config.Settings``; these
knobs are the responder's own and are set by ``agentca ocsp serve`` options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class OcspOptions:
    """How long answers live, how often workers look for changes, limits. (Responder
    certificates are the CA side's: ``ca.responder_certs.ResponderCertPolicy``.)"""

    response_validity: timedelta = timedelta(hours=1)  # nextUpdate - thisUpdate
    refresh_fraction: float = 0.5  # cached answers are re-signed after this share of validity
    poll_interval: float = 0.2  # seconds between status_changes polls, per worker
    outage_poll_interval: float = 1.0  # while the database is unreachable
    signer_check_interval: float = 60.0  # seconds between re-picks of the newest valid signer
    # Freshness bound (decision 0012): an answer, pre-signed or not, is given only while the
    # last successful feed poll is at most this many seconds old; past it, tryLater. So every
    # answer reflects each revocation committed more than this long before it was asked, also
    # when the database stopped between the commit and the next poll. Never below
    # ``poll_interval`` (between polls of a healthy database the state is that old).
    status_freshness: float = 1.0
    # Availability over freshness, chosen explicitly (``--serve-stale-for``): keep answering
    # from what was known at the last good poll for this many extra seconds of an outage. The
    # cost: a revocation committed in the last poll interval before the outage is answered
    # "good" for up to this long. Answers still stop at their refresh time (half the validity).
    serve_stale_for: float = 0.0
    # How long a shared cache in front of the responder (deploy/nginx, a CDN) may keep a GET
    # answer: ``s-maxage`` (RFC 9111 5.2.2.10), which shared caches use instead of max-age. A
    # revocation reaches clients behind the cache within this plus ``status_freshness``.
    shared_cache_seconds: int = 1
    max_request_bytes: int = 16 * 1024
    max_cert_ids: int = 64
    # The per-worker hot cache in front of the shared store (decision 0038): bounded, oldest
    # entry out first, so a worker's memory is flat in the number of certificates. Two keys
    # per answer (the request bytes and the CertID).
    max_cached_responses: int = 20_000
    max_cached_statuses: int = 20_000
    # The host's answer map (decision 0050): a directory only the OCSP service may write,
    # where one worker of the host snapshots the shared store every ``answer_map_interval``
    # seconds for all workers to map. Empty: no map (the store and the hot cache only).
    answer_map_dir: str = ""
    answer_map_interval: float = 60.0
    db_connect_timeout: int = 2  # seconds (PostgreSQL)
    # Signatures made for one client address (nonce, multi-CertID and uncached requests), per
    # worker: a token bucket. A request costs 1 + (CertIDs - 1) // 8 tokens. Over budget, a
    # nonce request is answered with the pre-signed answer when one is cached (RFC 8954 lets
    # a responder leave the nonce out) and anything else with tryLater. 0 turns it off.
    sign_rate_per_client: float = 5.0
    sign_burst_per_client: int = 20

    @property
    def vouch_for(self) -> float:
        """Seconds after the last successful poll during which answers may still be given."""
        return max(self.status_freshness, self.poll_interval) + max(0.0, self.serve_stale_for)

    @property
    def refresh_after(self) -> timedelta:
        return self.response_validity * self.refresh_fraction

    def replace(self, **changes: Any) -> OcspOptions:
        return dataclasses.replace(self, **changes)
