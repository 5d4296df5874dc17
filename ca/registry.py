"""Registrations, model inventory and scope catalogue: the policy's inputs.

Enrollment tokens live in ca/tokens.py, API tokens in ca/apitokens.py and their roles in
ca/roles.py. (About 470 lines: the three stores share the look-alike and catalogue checks
that make a registration consistent with the scopes and models it names, so they stay one
module.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ca.clock import Clock, utcnow
from ca.errors import CAError, ErrorCode
from ca.ledger.store import append
from ca.names import (
    MAX_ORGANIZATION_LEN,
    admit_identifier,
    admit_text,
    identifier_key,
    normalise_scopes,
    parse_sha256_hex,
    validate_agent_name,
    validate_environment,
    validate_model_type,
    validate_officer,
    validate_organization,
    validate_scope,
)
from ca.policy import InventoryModel, Registration
from ca.store.db import lock_for_write
from ca.store.models import AgentRegistration, ModelInventoryEntry, ScopeDefinition
from wire.extensions import ExtensionError, ModelDigestScheme
from wire.oms_signature import VerifiedModel

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519")


@dataclass(frozen=True)
class ScopeRecord:
    name: str
    description: str | None


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


#: The ``agents`` columns a policy decision rests on: an enrollment's reservation issues only
#: while they hold the values the decision read (a content check: ``updated_at`` could repeat).
POLICY_COLUMNS: tuple[str, ...] = (
    "status",
    "organization",
    "officer",
    "environment",
    "model_type",
    "allowed_scopes",
    "allowed_model_digests",
    "allowed_prompt_digests",
    "allowed_config_digests",
    "allowed_key_types",
    "max_validity_seconds",
    "require_attestation",
)


def policy_values(found: object) -> tuple[object, ...]:
    """The :data:`POLICY_COLUMNS` of a row (an ORM object or a named row)."""
    return tuple(getattr(found, c) for c in POLICY_COLUMNS)


def registration_of(row: AgentRegistration) -> Registration:
    return Registration(
        id=row.id,
        name=row.name,
        organization=row.organization,
        officer=row.officer,
        environment=row.environment,
        model_type=row.model_type,
        allowed_scopes=_split(row.allowed_scopes),
        allowed_model_digests=_split(row.allowed_model_digests),
        allowed_prompt_digests=_split(row.allowed_prompt_digests),
        allowed_config_digests=_split(row.allowed_config_digests or ""),
        allowed_key_types=_split(row.allowed_key_types),
        max_validity=timedelta(seconds=row.max_validity_seconds),
        active=row.status == "active",
        require_attestation=bool(row.require_attestation),
        version=policy_values(row),
    )


def _model(row: ModelInventoryEntry) -> InventoryModel:
    return InventoryModel(
        digest=row.digest,
        model_type=row.model_type,
        environment=row.environment,
        active=row.status == "active",
        digest_scheme=row.digest_scheme,
        signed_by=row.signed_by,
        signature_method=row.signature_method,
        signer=row.signer,
        signature_sha256=row.signature_sha256,
    )


def _digests(values: Iterable[str], what: str, optional: bool = False) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        raise CAError(ErrorCode.INVALID_DIGEST, f"{what} digests must be a list, not one string")
    out = sorted({parse_sha256_hex(v).hex() for v in values})
    if not out and not optional:
        raise CAError(ErrorCode.INVALID_DIGEST, f"at least one {what} digest is required")
    return tuple(out)


def _key_types(values: Iterable[str]) -> tuple[str, ...]:
    out = tuple(sorted(set(values)))
    unknown = [v for v in out if v not in KEY_TYPES]
    if unknown or not out:
        raise CAError(
            ErrorCode.UNSUPPORTED_KEY,
            f"unknown key types {', '.join(unknown) or '(none)'} (known: {', '.join(KEY_TYPES)})",
        )
    return out


class Registry:
    """Reads and writes the policy inputs."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock = utcnow,
        signed_environments: Iterable[str] = (),
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        #: environment names or ``prefix*`` patterns whose inventory takes signed models only
        self.signed_environments = tuple(signed_environments)

    def requires_signature(self, environment: str) -> bool:
        """True if ``environment`` takes only models with a verified OMS signature.

        Case and look-alikes do not matter (:func:`ca.names.identifier_key`, and case folding
        alone, since that key keeps ``I`` apart from ``i``): a setting spelled ``Production``
        covers ``production``. Matching more names only widens the requirement.
        """
        env = (identifier_key(environment), environment.casefold())
        for p in self.signed_environments:
            prefix, exact = (p[:-1], False) if p.endswith("*") else (p, True)
            pat = (identifier_key(prefix), prefix.casefold())
            if any(e == q if exact else e.startswith(q) for e, q in zip(env, pat, strict=True)):
                return True
        return False

    # -- scopes -------------------------------------------------------------------------------
    def add_scope(
        self, name: str, description: str | None = None, actor: str = "system"
    ) -> ScopeRecord:
        """Add a scope to the catalogue."""
        validate_scope(name)
        now = self.clock()
        try:
            with self.sessions.begin() as s:
                key = identifier_key(name)
                for existing in s.scalars(select(ScopeDefinition.name)):
                    if existing != name and identifier_key(existing) == key:
                        raise CAError(
                            ErrorCode.CONFLICT,
                            f"scope '{name}' looks like the existing scope '{existing}'",
                        )
                s.add(ScopeDefinition(name=name, description=description, created_at=now))
                s.flush()
                append(s, actor, "scope.added", {"scope": name, "description": description}, now)
        except IntegrityError as exc:
            raise CAError(ErrorCode.CONFLICT, f"scope '{name}' already exists") from exc
        return ScopeRecord(name, description)

    def list_scopes(self) -> list[ScopeRecord]:
        with self.sessions() as s:
            rows = s.scalars(select(ScopeDefinition).order_by(ScopeDefinition.name)).all()
            return [ScopeRecord(r.name, r.description) for r in rows]

    def scopes_outside_catalogue(
        self, scopes: Sequence[str], session: Session | None = None
    ) -> list[str]:
        """The scopes of ``scopes`` that the catalogue does not hold, in the order given."""
        with use_session(self.sessions, session) as s:
            return self._missing_scopes(s, scopes)

    @staticmethod
    def _missing_scopes(s: Session, scopes: Sequence[str]) -> list[str]:
        known = set(s.scalars(select(ScopeDefinition.name).where(ScopeDefinition.name.in_(scopes))))
        return [sc for sc in scopes if sc not in known]

    def _check_catalogue(self, s: Session, scopes: Sequence[str]) -> None:
        missing = self._missing_scopes(s, scopes)
        if missing:
            raise CAError(
                ErrorCode.INVALID_SCOPE,
                f"scopes not in the catalogue: {', '.join(missing)} (add them with "
                "'agentca scope add' or POST /v1/scopes)",
            )

    # -- model inventory ----------------------------------------------------------------------
    def add_model(
        self,
        digest: str,
        model_type: str,
        environment: str,
        description: str | None = None,
        actor: str = "system",
        digest_scheme: str = "agentca-manifest-v1",
        signature: VerifiedModel | None = None,
        bundle: bytes | None = None,
    ) -> InventoryModel:
        """Authorise a model digest, computed under ``digest_scheme`` (``oms-v1`` for new
        models, decision 0049), for an environment (re-activates a retired entry).

        ``signature`` is a bundle the caller verified (``wire.oms_signature``) and ``bundle``
        its bytes: its root digest must be ``digest`` under ``oms-v1``. An environment of
        ``signed_environments`` refuses an entry without one (decision 0052).
        """
        hex_digest = parse_sha256_hex(digest).hex()
        scheme = _scheme(digest_scheme)
        if signature is not None:
            if bundle is None or hashlib.sha256(bundle).hexdigest() != signature.bundle_sha256:
                raise CAError(ErrorCode.BAD_REQUEST, "the verified bundle's bytes are missing")
            if scheme != "oms-v1":
                raise CAError(
                    ErrorCode.INVALID_DIGEST, "a signed model's digest scheme must be oms-v1"
                )
            if signature.root.hex() != hex_digest:
                raise CAError(
                    ErrorCode.POLICY_REFUSED,
                    f"the signature is for model {signature.root.hex()}, not {hex_digest}",
                )
        elif self.requires_signature(environment):
            raise CAError(
                ErrorCode.POLICY_REFUSED,
                f"environment '{environment}' takes only models with a verified signature "
                "(agentca model add --signature, setting signed_model_environments)",
            )
        validate_model_type(admit_identifier(model_type, "model type"))
        validate_environment(admit_identifier(environment, "environment"))
        now = self.clock()
        with self.sessions.begin() as s:
            _check_environment(s, environment)
            row = s.scalar(
                select(ModelInventoryEntry).where(
                    ModelInventoryEntry.digest == hex_digest,
                    ModelInventoryEntry.environment == environment,
                )
            )
            if row is not None and row.status == "active":
                raise CAError(
                    ErrorCode.CONFLICT,
                    f"model {hex_digest} is already active in environment '{environment}'",
                )
            if row is not None and row.digest_scheme != scheme:
                raise CAError(
                    ErrorCode.CONFLICT,
                    f"model {hex_digest} was registered under scheme {row.digest_scheme}, "
                    f"not {scheme}",
                )
            if row is None:
                row = ModelInventoryEntry(
                    digest=hex_digest,
                    model_type=model_type,
                    environment=environment,
                    description=description,
                    created_at=now,
                    digest_scheme=scheme,
                )
                s.add(row)
            row.status = "active"
            row.model_type = model_type
            row.retired_at = None
            _sign(row, signature, bundle)
            s.flush()
            append(
                s,
                actor,
                "model.added",
                {"digest": hex_digest, "model_type": model_type, "environment": environment}
                | ({} if scheme == "agentca-manifest-v1" else {"digest_scheme": scheme})
                | ({} if signature is None else {"signature": signature_record(signature)}),
                now,
            )
            return _model(row)

    def retire_model(
        self, digest: str, environment: str | None = None, actor: str = "system"
    ) -> list[InventoryModel]:
        """Retire a model digest (in one environment, or all): new issuance stops at once."""
        with self.sessions.begin() as s:
            return retire_models(s, digest, environment, actor, self.clock())

    def list_models(
        self, environment: str | None = None, status: str | None = None
    ) -> list[InventoryModel]:
        query = select(ModelInventoryEntry).order_by(ModelInventoryEntry.id)
        if environment is not None:
            query = query.where(ModelInventoryEntry.environment == environment)
        if status is not None:
            query = query.where(ModelInventoryEntry.status == status)
        with self.sessions() as s:
            return [_model(r) for r in s.scalars(query).all()]

    def inventory(
        self, digests: Iterable[str], environment: str, session: Session | None = None
    ) -> dict[tuple[str, str], InventoryModel]:
        """The inventory entries for ``digests`` in ``environment``, keyed for ``policy.decide``."""
        params = {"digests": list(digests), "env": environment}
        with use_session(self.sessions, session) as s:
            return {
                (d, env): InventoryModel(d, mt, env, st == "active", sc)
                for d, mt, env, st, sc in s.connection().execute(_INVENTORY, params).all()
            }

    # -- agents -------------------------------------------------------------------------------
    def register_agent(
        self,
        name: str,
        officer: str,
        environment: str,
        model_type: str,
        scopes: Iterable[str],
        model_digests: Iterable[str],
        prompt_digests: Iterable[str],
        key_types: Iterable[str] = ("ec-p256", "ec-p384", "ed25519"),
        max_validity: timedelta = timedelta(hours=24),
        organization: str | None = None,
        actor: str = "system",
        config_digests: Iterable[str] = (),
        require_attestation: bool = False,
    ) -> Registration:
        """Register an agent; every scope must be in the catalogue.

        ``config_digests`` empty: the agent's CSRs must declare no config digest; otherwise
        they must declare one of these. A name that differs from a registered one only by case
        or look-alike characters (:func:`ca.names.identifier_key`) is a conflict.
        """
        validate_agent_name(name)
        validate_officer(officer)
        validate_environment(admit_identifier(environment, "environment"))
        validate_model_type(admit_identifier(model_type, "model type"))
        if organization is not None:
            validate_organization(admit_text(organization, "organization", MAX_ORGANIZATION_LEN))
        scope_list = normalise_scopes(list(scopes))
        models = _digests(model_digests, "model")
        prompts = _digests(prompt_digests, "prompt")
        configs = _digests(config_digests, "config", optional=True)
        keys = _key_types(key_types)
        if max_validity <= timedelta(0):
            raise CAError(ErrorCode.INVALID_VALIDITY, "maximum validity must be positive")
        now = self.clock()
        try:
            with self.sessions.begin() as s:
                self._check_catalogue(s, scope_list)
                _check_environment(s, environment)
                key = identifier_key(name)
                twin = s.scalar(
                    select(AgentRegistration.name).where(AgentRegistration.name_key == key)
                )
                if twin is not None and twin != name:
                    raise CAError(
                        ErrorCode.CONFLICT,
                        f"agent '{name}' looks like the registered agent '{twin}' (names must "
                        "differ by more than case or look-alike characters)",
                    )
                row = AgentRegistration(
                    name=name,
                    name_key=key,
                    organization=organization,
                    officer=officer,
                    environment=environment,
                    model_type=model_type,
                    allowed_scopes=" ".join(scope_list),
                    allowed_model_digests=" ".join(models),
                    allowed_prompt_digests=" ".join(prompts),
                    allowed_config_digests=" ".join(configs),
                    allowed_key_types=" ".join(keys),
                    max_validity_seconds=int(max_validity.total_seconds()),
                    require_attestation=bool(require_attestation),
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
                reg = registration_of(row)
                append(s, actor, "agent.registered", _ledger_body(reg), now)
                return reg
        except IntegrityError as exc:
            raise CAError(
                ErrorCode.CONFLICT, f"agent '{name}' (or a look-alike name) is already registered"
            ) from exc

    def update_agent(
        self,
        name: str,
        *,
        officer: str | None = None,
        scopes: Iterable[str] | None = None,
        model_digests: Iterable[str] | None = None,
        prompt_digests: Iterable[str] | None = None,
        key_types: Iterable[str] | None = None,
        max_validity: timedelta | None = None,
        active: bool | None = None,
        actor: str = "system",
        config_digests: Iterable[str] | None = None,
        require_attestation: bool | None = None,
    ) -> Registration:
        """Change a registration; only the given fields change (``config_digests=()`` clears)."""
        with self.sessions.begin() as s:
            row = self._agent_row(s, name, for_update=True)
            if officer is not None:
                row.officer = validate_officer(officer)
            if scopes is not None:
                scope_list = normalise_scopes(list(scopes))
                self._check_catalogue(s, scope_list)
                row.allowed_scopes = " ".join(scope_list)
            if model_digests is not None:
                row.allowed_model_digests = " ".join(_digests(model_digests, "model"))
            if prompt_digests is not None:
                row.allowed_prompt_digests = " ".join(_digests(prompt_digests, "prompt"))
            if config_digests is not None:
                row.allowed_config_digests = " ".join(
                    _digests(config_digests, "config", optional=True)
                )
            if key_types is not None:
                row.allowed_key_types = " ".join(_key_types(key_types))
            if max_validity is not None:
                if max_validity <= timedelta(0):
                    raise CAError(ErrorCode.INVALID_VALIDITY, "maximum validity must be positive")
                row.max_validity_seconds = int(max_validity.total_seconds())
            if active is not None:
                row.status = "active" if active else "disabled"
            if require_attestation is not None:
                row.require_attestation = bool(require_attestation)
            row.updated_at = self.clock()
            s.flush()
            reg = registration_of(row)
            append(s, actor, "agent.updated", _ledger_body(reg), row.updated_at)
            return reg

    def get_agent(self, name: str) -> Registration:
        with self.sessions() as s:
            return registration_of(self._agent_row(s, name))

    def list_agents(self) -> list[Registration]:
        with self.sessions() as s:
            rows = s.scalars(select(AgentRegistration).order_by(AgentRegistration.name)).all()
            return [registration_of(r) for r in rows]

    @staticmethod
    def _agent_row(s: Session, name: str, for_update: bool = False) -> AgentRegistration:
        query = select(AgentRegistration).where(AgentRegistration.name == name)
        if for_update:
            lock_for_write(s)
            query = query.with_for_update()
        row = s.scalar(query)
        if row is None:
            raise CAError(ErrorCode.NOT_FOUND, f"no agent registered as '{name}'")
        return row

    def confirm_decision(
        self,
        s: Session,
        agent_id: int | None,
        model_digest_hex: str,
        environment: str,
        version: tuple[object, ...] | None = None,
    ) -> None:
        """In the reservation: :meth:`confirm_active` and :meth:`confirm_model_active` at once.

        ``version``: the registration's policy columns the decision read; any change since
        (tightened scopes or digests, attestation newly required) refuses the issuance with
        a 409 to send again, which decides anew on the changed registration.

        On PostgreSQL one ``SELECT ... FOR SHARE`` of both rows: a disable or a retirement
        (which update or lock those rows) waits for this reservation's commit, and one
        committed first is seen (the locked rows are re-read), so it refuses the issuance as
        the two no-op UPDATEs do; but concurrent enrollments of one agent no longer queue on
        its row (decision 0039). Elsewhere (SQLite), and to name what changed, the UPDATEs.
        """
        if agent_id is not None and s.get_bind().dialect.name == "postgresql":
            found = (
                s.connection()
                .execute(
                    _BOTH_ACTIVE,
                    {"agent_id": agent_id, "digest": model_digest_hex, "env": environment},
                )
                .first()
            )
            if found is not None and (version is None or policy_values(found) == version):
                return
        self.confirm_active(s, agent_id, version)
        self.confirm_model_active(s, model_digest_hex, environment)

    def confirm_active(
        self, s: Session, agent_id: int | None, version: tuple[object, ...] | None = None
    ) -> None:
        """In the reservation: the registration a decision was made on is still active.

        A conditional no-op UPDATE, so the row is locked (PostgreSQL) or the write lock is
        taken (SQLite) with the check: a disable committed after the decision refuses the
        issuance instead of racing it.
        """
        if agent_id is None:
            return
        result = s.execute(
            update(AgentRegistration)
            .where(AgentRegistration.id == agent_id, AgentRegistration.status == "active")
            .values(status="active")
        )
        if getattr(result, "rowcount", 0) == 1 and version is not None:
            current = s.execute(select(*_POLICY).where(AgentRegistration.id == agent_id)).first()
            if current is None or policy_values(current) != version:
                raise CAError(
                    ErrorCode.CONFLICT,
                    "the agent's registration changed while the request was decided; "
                    "send the request again",
                )
        if getattr(result, "rowcount", 0) != 1:
            raise CAError(
                ErrorCode.POLICY_REFUSED,
                "the agent's registration was disabled while the request was decided",
                reasons=["registration disabled"],
            )

    def confirm_model_active(self, s: Session, model_digest_hex: str, environment: str) -> None:
        """In the reservation: the model a decision admitted is still active in ``environment``.

        As :meth:`confirm_active`, a conditional no-op UPDATE: a retirement committed after
        the decision refuses the issuance, and one still in progress is waited for (its
        bulk revocation fails reservations made before it, ``ca.revoking.revoke_matching``).
        """
        result = s.execute(
            update(ModelInventoryEntry)
            .where(
                ModelInventoryEntry.digest == model_digest_hex,
                ModelInventoryEntry.environment == environment,
                ModelInventoryEntry.status == "active",
            )
            .values(status="active")
        )
        if getattr(result, "rowcount", 0) != 1:
            raise CAError(
                ErrorCode.POLICY_REFUSED,
                f"model digest {model_digest_hex} was retired while the request was decided",
                reasons=[f"model digest {model_digest_hex} is retired"],
            )


_POLICY = tuple(getattr(AgentRegistration, c) for c in POLICY_COLUMNS)
_BOTH_ACTIVE = (
    select(*_POLICY, ModelInventoryEntry.id)
    .join_from(AgentRegistration, ModelInventoryEntry, true())
    .where(
        AgentRegistration.id == bindparam("agent_id"),
        AgentRegistration.status == "active",
        ModelInventoryEntry.digest == bindparam("digest"),
        ModelInventoryEntry.environment == bindparam("env"),
        ModelInventoryEntry.status == "active",
    )
    .with_for_update(read=True)
)
_INVENTORY = select(
    ModelInventoryEntry.digest,
    ModelInventoryEntry.model_type,
    ModelInventoryEntry.environment,
    ModelInventoryEntry.status,
    ModelInventoryEntry.digest_scheme,
).where(
    ModelInventoryEntry.digest.in_(bindparam("digests", expanding=True)),
    ModelInventoryEntry.environment == bindparam("env"),
)


@contextmanager
def use_session(sessions: sessionmaker[Session], session: Session | None) -> Iterator[Session]:
    """The caller's session when given, else a short-lived one."""
    if session is not None:
        yield session
        return
    with sessions() as s:
        yield s


def retire_models(
    s: Session,
    digest: str,
    environment: str | None,
    actor: str,
    now: datetime,
    already_retired_ok: bool = False,
) -> list[InventoryModel]:
    """In the caller's transaction: retire the active entries of ``digest`` (in one
    environment, or all), one ledger entry each; ``not-found`` when there is none (with
    ``already_retired_ok``, only when there is no entry at all: retired ones give ``[]``)."""
    hex_digest = parse_sha256_hex(digest).hex()
    lock_for_write(s)
    query = select(ModelInventoryEntry).where(ModelInventoryEntry.digest == hex_digest)
    if environment is not None:
        query = query.where(ModelInventoryEntry.environment == environment)
    rows = s.scalars(query.where(ModelInventoryEntry.status == "active").with_for_update()).all()
    if not rows:
        if already_retired_ok and s.scalar(query.limit(1)) is not None:
            return []
        raise CAError(ErrorCode.NOT_FOUND, f"no active model {hex_digest} to retire")
    for row in rows:
        row.status = "retired"
        row.retired_at = now
        append(
            s, actor, "model.retired", {"digest": hex_digest, "environment": row.environment}, now
        )
    s.flush()
    return [_model(r) for r in rows]


def _scheme(value: str) -> str:
    try:
        return ModelDigestScheme.parse(value).label
    except ExtensionError as exc:
        raise CAError(ErrorCode.INVALID_DIGEST, str(exc)) from None


def registration_body(r: Registration) -> dict[str, Any]:
    """A registration as a JSON object, as the API answers it."""
    return {
        "name": r.name,
        "officer": r.officer,
        "organization": r.organization,
        "environment": r.environment,
        "model_type": r.model_type,
        "scopes": list(r.allowed_scopes),
        "model_digests": list(r.allowed_model_digests),
        "prompt_digests": list(r.allowed_prompt_digests),
        "config_digests": list(r.allowed_config_digests),
        "key_types": list(r.allowed_key_types),
        "max_validity_seconds": int(r.max_validity.total_seconds()),
        "status": "active" if r.active else "disabled",
        "require_attestation": r.require_attestation,
    }


def _ledger_body(r: Registration) -> dict[str, Any]:
    """The registration as the ledger records it: ``agent`` is the key exports filter on."""
    body = registration_body(r)
    body["agent"] = body.pop("name")
    return body


def signature_record(v: VerifiedModel) -> dict[str, Any]:
    """What the ledger records of a verified model signature (the bundle itself by hash)."""
    return {
        "producer": v.producer,
        "method": v.method,
        "signer": v.signer,
        "certificate_sha256": v.certificate_sha256 or None,
        "bundle_sha256": v.bundle_sha256,
        "files": len(v.resources),
        "ignored": list(v.ignore_paths),
    }


def _sign(row: ModelInventoryEntry, v: VerifiedModel | None, bundle: bytes | None) -> None:
    """Record the signature that admitted ``row`` (or clear a re-activated entry's old one)."""
    row.signed_by = None if v is None else v.producer
    row.signature_method = None if v is None else v.method
    row.signer = None if v is None else v.signer
    row.signature_sha256 = None if v is None else v.bundle_sha256
    row.signature_bundle = None if v is None or bundle is None else bundle.decode("utf-8")


def _check_environment(s: Session, environment: str) -> None:
    """Refuse an environment that only looks like one already in use (case, look-alikes)."""
    key = identifier_key(environment)
    used = set(s.scalars(select(AgentRegistration.environment).distinct()))
    used |= set(s.scalars(select(ModelInventoryEntry.environment).distinct()))
    for existing in sorted(used):
        if existing != environment and identifier_key(existing) == key:
            raise CAError(
                ErrorCode.CONFLICT,
                f"environment {environment!a} looks like the existing environment {existing!a}",
            )
