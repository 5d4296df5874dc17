"""What the CA API's ``/metrics`` reports about shared state, read at scrape time (decision
0031): the published CRLs' thisUpdate and the ledger's size and last checkpoint.

The CRL publisher and the ledger checkpointer are separate processes with no HTTP server; what
they produce is in the publish directory and the database, so any CA API worker can measure
it when scraped. Bounded work: one small query per table and the header of two CRL files per
issuer (``ca.crl.read_crl_info`` seeks past the entries).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.crl import read_crl_info
from ca.store.models import Issuer, LedgerCheckpointRow, LedgerHead

CRL_KINDS = (("full", ""), ("delta", "-delta"))  # label, file name suffix


@dataclass(frozen=True)
class PublishedState:
    """The scrape-time facts (UNIX times; None: nothing of that kind yet)."""

    crl_this_update: dict[tuple[str, str], float]  # (issuer name, full|delta) -> thisUpdate
    ledger_entries: int
    checkpoint_size: int | None
    checkpoint_at: float | None


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def published_state(session: Session, publish_dir: Path) -> PublishedState:
    """Read the published CRLs' headers and the ledger's head and last checkpoint."""
    names = list(session.scalars(select(Issuer.name).order_by(Issuer.id)))
    size = session.scalar(select(LedgerHead.size).where(LedgerHead.id == 1))
    last = session.execute(
        select(LedgerCheckpointRow.tree_size, LedgerCheckpointRow.timestamp)
        .order_by(LedgerCheckpointRow.id.desc())
        .limit(1)
    ).first()
    crls: dict[tuple[str, str], float] = {}
    for name in names:
        for kind, suffix in CRL_KINDS:
            path = publish_dir / f"{name}{suffix}.crl"
            try:
                with path.open("rb") as fh:
                    crls[(name, kind)] = _epoch(read_crl_info(fh).this_update)
            except (OSError, ValueError):
                continue  # not published (yet): the sample is absent, alert on absent()
    checkpoint_at = None
    if last is not None:
        checkpoint_at = datetime.fromisoformat(last[1].replace("Z", "+00:00")).timestamp()
    return PublishedState(
        crl_this_update=crls,
        ledger_entries=int(size or 0),
        checkpoint_size=int(last[0]) if last is not None else None,
        checkpoint_at=checkpoint_at,
    )
