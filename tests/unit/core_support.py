"""A CA core on a throwaway SQLite file with a software key store and a fake clock.

For the unit tests of issuance, revocation and reconciliation: no PostgreSQL, no SoftHSM2,
no network. The schema comes from the models (``create_all``) plus the one seeded row the
ledger migration writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ca.authority import CertificateAuthority
from ca.config import Settings
from ca.operations import Operations
from ca.policy import Registration
from ca.records import CertificateRecord
from ca.registry import Registry
from ca.requests import IssuanceRequest, RenewalLink
from ca.store.db import make_engine, make_session_factory
from ca.store.models import Base, Certificate, LedgerEntryRow, StatusChange
from ca.tokens import EnrollmentTokens
from hsm import HSMUnavailable, SoftKeyStore
from tests.unit.helpers import MODEL, NOW, PROMPT, sample_extensions


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Core:
    """The CA core wired as ``ca.wiring`` wires it, over SQLite and a software key store."""

    settings: Settings
    sessions: sessionmaker[Session]
    keys: SoftKeyStore
    clock: FakeClock
    authority: CertificateAuthority
    registry: Registry
    tokens: EnrollmentTokens
    operations: Operations
    hsm_down: list[bool] = field(default_factory=list)
    _during_signing: list[Callable[[], object]] = field(default_factory=list)
    _proofs: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    def request(self, validity: timedelta = timedelta(hours=1), **kw: object) -> IssuanceRequest:
        key = ec.generate_private_key(ec.SECP256R1())
        return IssuanceRequest(
            public_key=key.public_key(),
            agent_name=str(kw.get("agent_name", "exec-agent")),
            extensions=sample_extensions(),
            validity=validity,
            ledger_note={"outside_policy": False},
        )

    def issue(self, **kw: object) -> CertificateRecord:
        return self.authority.issue(self.request(), actor="test", **kw)  # type: ignore[arg-type]

    def renew(self, parent: CertificateRecord) -> CertificateRecord:
        return self.authority.issue(self.request(), actor="test", renewal=self.link(parent))

    def link(self, parent: CertificateRecord) -> RenewalLink:
        return RenewalLink(parent.serial_hex, parent.issuer_name, f"{next(self._proofs):064x}")

    def status(self, record: CertificateRecord) -> tuple[str, int | None]:
        with self.sessions() as s:
            row = s.scalars(
                select(Certificate).where(Certificate.serial_hex == record.serial_hex)
            ).one()
            return row.status.value, row.revocation_reason

    def statuses(self) -> list[str]:
        with self.sessions() as s:
            return [str(v) for v in s.scalars(select(Certificate.status).order_by(Certificate.id))]

    def events(self) -> list[str]:
        with self.sessions() as s:
            return list(s.scalars(select(LedgerEntryRow.event).order_by(LedgerEntryRow.seq)))

    def status_changes(self) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(StatusChange)) or 0)

    def register(self, name: str = "exec-agent") -> Registration:
        self.registry.add_scope("query_anonymized_order_book")
        self.registry.add_scope("submit_limit_order")
        env = "production-eu-west-1"
        self.registry.add_model(MODEL, "claude-3.5-sonnet-v2", env)
        return self.registry.register_agent(
            name,
            "compliance-officer@enterprise.io",
            env,
            "claude-3.5-sonnet-v2",
            ["query_anonymized_order_book", "submit_limit_order"],
            [MODEL],
            [PROMPT],
            organization="Enterprise Inc",
        )

    def while_signing(self, action: Callable[[], object]) -> None:
        """Run ``action`` once, inside the next signature (between reserve and commit)."""
        self._during_signing.append(action)

    def _guard(self) -> None:
        """The key store's guard, called before every signature."""
        if self.hsm_down:
            raise HSMUnavailable("the token went away")
        if self._during_signing:
            self._during_signing.pop()()


def make_core(tmp_path: Path) -> Core:
    """A fresh, initialised CA core (root P-384, issuing P-256, both software keys)."""
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/core.db")
    engine = make_engine(settings.effective_database_url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ledger_head (id, size) VALUES (1, 0)"))
    sessions = make_session_factory(engine)
    keys = SoftKeyStore()
    clock = FakeClock()
    authority = CertificateAuthority(settings, sessions, keys, clock)
    core = Core(
        settings,
        sessions,
        keys,
        clock,
        authority,
        Registry(sessions, clock),
        EnrollmentTokens(sessions, clock, settings.pending_bound),
        Operations(authority),
    )
    keys.set_guard(core._guard)  # before any key is fetched: fetched keys keep their guard
    authority.initialise("ec-p384", "ec-p256")
    return core
