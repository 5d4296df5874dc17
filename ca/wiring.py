"""Wiring: build the store, the key store and the CA service from :class:`Settings`.

This is the only place that turns configuration into live objects; the CLI, the CA HTTP app
and the OCSP responder all start here.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ca.apitokens import ApiTokens
from ca.authority import CertificateAuthority
from ca.clock import Clock, utcnow
from ca.clockcheck import SkewMonitor
from ca.config import Settings
from ca.enrollment import EnrollmentService
from ca.errors import CAError, ErrorCode
from ca.keysetup import guard_signing, open_key_store
from ca.ledger.actions import ActionLedger
from ca.ledger.gateways import Gateways
from ca.ledger.signer import CheckpointSigner
from ca.ledger.store import LedgerStore
from ca.operations import Operations
from ca.queries import CertificateQueries
from ca.registry import Registry
from ca.store.db import (
    make_engine,
    make_session_factory,
    migrate_if_behind,
    require_database_file,
    require_schema,
)
from ca.store.read_replica import ReplicaSessions
from ca.tokens import EnrollmentTokens
from hsm import KeyManager

log = logging.getLogger("agentca.wiring")


@dataclass
class Runtime:
    """Live objects for one process: engine, sessions, key store and CA service."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: KeyManager
    authority: CertificateAuthority
    registry: Registry
    enrollment: EnrollmentService
    enrollment_tokens: EnrollmentTokens
    operations: Operations
    ledger: LedgerStore
    checkpoints: CheckpointSigner
    api_tokens: ApiTokens
    clock_check: SkewMonitor | None = None
    # sessions for read-only endpoints: a fresh streaming replica, else the primary
    read_sessions: sessionmaker[Session] | None = None

    @cached_property
    def actions(self) -> ActionLedger:
        """The action ledger (gateway decisions, decision 0056)."""
        return ActionLedger(self.sessions, self.authority.clock)

    @cached_property
    def action_checkpoints(self) -> CheckpointSigner:
        """Signs the action ledger's checkpoints with the same audit key."""
        return CheckpointSigner(self.authority, self.actions)

    @cached_property
    def gateways(self) -> Gateways:
        """The gateways registered to ship their decisions."""
        return Gateways(self.sessions, self.authority.clock)

    @property
    def read_registry(self) -> Registry:
        """The registry for reads a replica may serve (``read_database_url``)."""
        if self.read_sessions is None:
            return self.registry
        return Registry(self.read_sessions, self.registry.clock)

    @property
    def read_queries(self) -> CertificateQueries:
        """Certificate lookups a replica may serve (``read_database_url``)."""
        if self.read_sessions is None:
            return self.authority.queries
        return CertificateQueries(self.read_sessions)

    def close(self) -> None:
        self.keys.close()
        if isinstance(self.read_sessions, ReplicaSessions):
            self.read_sessions.replica_engine.dispose()
        self.engine.dispose()


def open_runtime(settings: Settings, create: bool = False, clock: Clock = utcnow) -> Runtime:
    """Open (and with ``create`` also provision and migrate) everything a process needs."""
    if create:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        require_database_file(settings.effective_database_url)
    secure_data_dir(settings)
    if create:
        migrate_if_behind(
            settings.effective_database_url, settings.effective_migration_database_url
        )
        secure_data_dir(settings)  # the database file and token the upgrade may have created
    engine = make_engine(settings.effective_database_url)
    if not create:
        try:
            require_schema(engine)
        except CAError:
            engine.dispose()
            raise
    sessions = make_session_factory(engine)
    keys = open_key_store(settings, create=create)
    clock_check = guard_signing(keys, engine, settings)
    authority = CertificateAuthority(settings, sessions, keys, clock)
    registry = Registry(sessions, clock, settings.signed_model_environments)
    tokens = EnrollmentTokens(sessions, clock, settings.pending_bound)
    enrollment = EnrollmentService(settings, authority, registry, tokens)
    ledger = LedgerStore(sessions)
    return Runtime(
        settings,
        engine,
        sessions,
        keys,
        authority,
        registry,
        enrollment,
        tokens,
        Operations(authority),
        ledger,
        CheckpointSigner(authority, ledger),
        ApiTokens(sessions, clock, settings.api_token_default_ttl, settings.api_token_max_ttl),
        clock_check,
        _read_sessions(settings, sessions),
    )


def _read_sessions(
    settings: Settings, sessions: sessionmaker[Session]
) -> sessionmaker[Session] | None:
    """The replica's read sessions when ``read_database_url`` names one (decision 0029)."""
    if not settings.read_database_url:
        return None
    replica = make_engine(settings.read_database_url)
    return ReplicaSessions(sessions, replica, settings.read_max_lag_ms / 1000)


def secure_data_dir(settings: Settings) -> int:
    """Refuse a data directory owned by another user; take group/other permissions away.

    Everything under ``settings.data_dir`` (SQLite files, PINs, the SoftHSM2 token) becomes
    owner-only (directories 0700, files 0600 at most), except the published CRLs, which are
    public by design. Symbolic links are neither followed nor changed. Returns how many paths
    were tightened (each start logs a warning when there were any). A missing directory is
    left alone: it is created 0700 when needed.
    """
    root = settings.data_dir
    try:
        st = root.stat()
    except FileNotFoundError:
        return 0
    uid = os.geteuid()
    if st.st_uid != uid:
        raise CAError(
            ErrorCode.CONFIG,
            f"the data directory {root} belongs to uid {st.st_uid}, not to this user "
            f"(uid {uid}); refusing to use it",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CAError(ErrorCode.CONFIG, f"the data directory {root} is not a directory")
    public = settings.effective_crl_publish_dir.resolve()
    tightened = _tighten(root, st, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here.resolve() == public:
            dirnames.clear()
            continue
        for name in [*dirnames, *filenames]:
            path = here / name
            try:
                entry = path.lstat()
            except FileNotFoundError:
                continue
            if not (stat.S_ISDIR(entry.st_mode) or stat.S_ISREG(entry.st_mode)):
                continue  # symbolic links are not followed; sockets and FIFOs left alone
            if stat.S_ISDIR(entry.st_mode) and path.resolve() == public:
                continue
            tightened += _tighten(path, entry, uid)
    if tightened:
        log.warning(
            "tightened the permissions of %d path(s) under %s to owner-only", tightened, root
        )
    return tightened


def _tighten(path: Path, st: os.stat_result, uid: int) -> int:
    """Take group/other bits away from one file or directory (1 if it changed)."""
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return 0
    if st.st_uid != uid:
        raise CAError(
            ErrorCode.CONFIG,
            f"{path} in the data directory belongs to uid {st.st_uid} and is accessible "
            "to others; fix its owner or permissions",
        )
    # Without following links (fchmodat AT_SYMLINK_NOFOLLOW): a path swapped for a symbolic
    # link meanwhile cannot redirect the chmod; it then fails and the start is refused.
    try:
        os.chmod(path, mode & 0o700, follow_symlinks=False)
    except (OSError, NotImplementedError) as exc:
        raise CAError(ErrorCode.CONFIG, f"cannot tighten the permissions of {path}") from exc
    return 1


def ensure_initialised(settings: Settings, actor: str = "system") -> bool:
    """First-run setup used by ``agentca serve`` and ``make run``: token, schema, hierarchy.

    Returns True when it created the hierarchy, False when everything already existed.
    """
    rt = open_runtime(settings, create=True)
    try:
        if rt.authority.is_initialised():
            return False
        from ca.responder_certs import FirstResponderCerts

        first_signers = FirstResponderCerts.prepare(settings)  # decision 0018
        root_keys = None
        if settings.root_offline:  # decision 0034: the root key in its own token
            from ca.keysetup import open_root_key_store

            root_keys = open_root_key_store(settings, create=True)
            guard_signing(root_keys, rt.engine, settings)
        rt.authority.initialise(settings.root_key_type, settings.issuing_key_type, actor, root_keys)
        first_signers.publish(rt.sessions, rt.keys)
        if root_keys is not None:  # the first ceremony: what the root owes until the next
            from ca.ceremony import sign_root_duties

            try:
                sign_root_duties(
                    settings, rt.sessions, root_keys, first_signers.responder_keys, actor
                )
            finally:
                root_keys.close()
        return True
    finally:
        rt.close()
