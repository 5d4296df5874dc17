"""Registrations, inventory, scopes and credentials: agent, model, scope, token, apitoken."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ca.api.bodies import model_json, registration_json
from ca.errors import CAError, ErrorCode
from ca.model_signatures import check_model, read_bundle
from ca.policy import Registration
from ca.revocation import RevocationReason
from cli.context import actor, parse_duration, runtime
from cli.digest_commands import model
from cli.group import AgentcaGroup
from cli.output import (
    FlagConflict,
    agent_json,
    certificate_json,
    cli_json,
    emit_json,
    note,
    refuse_together,
    rfc3339,
    table,
    unchanged,
    with_changed,
)

KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]


def _print_registration(reg: Registration, as_json: bool, changed: bool | None = None) -> None:
    """One registration: ``key: value`` lines, or one JSON object (``agent`` for its name;
    ``changed`` for the commands that change it)."""
    data = agent_json(registration_json(reg))
    if as_json:
        emit_json(data if changed is None else with_changed(data, changed))
        return
    for key, value in data.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key + ':':22}{shown}")


@click.group(cls=AgentcaGroup)
def agent() -> None:
    """Agent registrations: what each agent may be certified for."""


@agent.command("register")
@click.argument("name")
@click.option("--officer", required=True, help="Officer of record (e-mail).")
@click.option("--environment", required=True, help="Environment, e.g. production-eu-west-1.")
@click.option("--model-type", required=True, help="Model type the agent runs.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="Allowed scope (repeatable); must be in the scope catalogue.",
)
@click.option(
    "--model-digest",
    "model_digests",
    multiple=True,
    required=True,
    help="Allowed model digest (repeatable).",
)
@click.option(
    "--prompt-digest",
    "prompt_digests",
    multiple=True,
    required=True,
    help="Allowed system-prompt digest (repeatable).",
)
@click.option(
    "--config-digest",
    "config_digests",
    multiple=True,
    help="Allowed config digest (repeatable). Without it, a CSR declaring a config digest is "
    "refused; with it, the CSR must declare one of these.",
)
@click.option(
    "--key-type",
    "key_types",
    multiple=True,
    type=click.Choice(KEY_TYPES),
    help="Allowed agent key type (repeatable; default ec-p256, ec-p384, ed25519).",
)
@click.option(
    "--max-validity",
    default="24h",
    show_default=True,
    help="Longest certificate lifetime, e.g. 12h.",
)
@click.option("--organization", default=None, help="Owner organisation.")
@click.option(
    "--require-attestation",
    is_flag=True,
    help="Certificates only with a runtime attestation of the key and provenance from a "
    "configured attestor (setting attestors_file); renewals need a fresh one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def agent_register(
    ctx: click.Context,
    name: str,
    officer: str,
    environment: str,
    model_type: str,
    scopes: tuple[str, ...],
    model_digests: tuple[str, ...],
    prompt_digests: tuple[str, ...],
    config_digests: tuple[str, ...],
    key_types: tuple[str, ...],
    max_validity: str,
    organization: str | None,
    require_attestation: bool,
    as_json: bool,
) -> None:
    """Register agent NAME with its allowed scopes, models, prompts and key types.

    Registering an agent again with exactly the same contents changes nothing and succeeds;
    with other contents it is refused (exit 7: use 'agentca agent update').
    """
    key_types = key_types or ("ec-p256", "ec-p384", "ed25519")
    validity = parse_duration(max_validity)
    changed = True
    with runtime(ctx) as rt:
        try:
            reg = rt.registry.register_agent(
                name=name,
                officer=officer,
                environment=environment,
                model_type=model_type,
                scopes=scopes,
                model_digests=model_digests,
                prompt_digests=prompt_digests,
                config_digests=config_digests,
                key_types=key_types,
                max_validity=validity,
                organization=organization,
                actor=actor(),
                require_attestation=require_attestation,
            )
        except CAError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            try:
                reg = rt.registry.get_agent(name)
            except CAError:
                raise exc from None
            asked = {
                "name": name,
                "officer": officer,
                "organization": organization,
                "environment": environment,
                "model_type": model_type,
                "scopes": scopes,
                "model_digests": [_hex(d) for d in model_digests],
                "prompt_digests": [_hex(d) for d in prompt_digests],
                "config_digests": [_hex(d) for d in config_digests],
                "key_types": key_types,
                "max_validity_seconds": int(validity.total_seconds()),
                "status": "active",
                "require_attestation": require_attestation,
            }
            if _comparable(registration_json(reg)) != _comparable(asked):
                raise  # another registration under this name: a conflict (exit 7)
            changed = False
            unchanged(f"agent {name} is already registered with these contents")
    _print_registration(reg, as_json, changed)


def _hex(digest: str) -> str:
    """A digest as the registry stores it (64 lowercase hex, no ``sha256:``)."""
    from ca.names import parse_sha256_hex

    return parse_sha256_hex(digest).hex()


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A registration body with its lists as sets (their order carries no meaning)."""
    return {k: frozenset(v) if isinstance(v, list | tuple) else v for k, v in body.items()}


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_context
def agent_list(ctx: click.Context, as_json: bool) -> None:
    """List agent registrations."""
    with runtime(ctx) as rt:
        regs = rt.registry.list_agents()
    if as_json:
        for r in regs:
            emit_json(agent_json(registration_json(r)))
        return
    table(
        ["AGENT", "STATUS", "ENVIRONMENT", "OFFICER"],
        ([r.name, "active" if r.active else "disabled", r.environment, r.officer] for r in regs),
    )


@agent.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def agent_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one registration."""
    with runtime(ctx) as rt:
        reg = rt.registry.get_agent(name)
    _print_registration(reg, as_json)


@agent.command("update")
@click.argument("name")
@click.option("--officer", default=None, help="New officer of record (e-mail).")
@click.option("--scope", "scopes", multiple=True, help="The allowed scopes (replaces the list).")
@click.option(
    "--model-digest", "model_digests", multiple=True, help="The allowed model digests (replaces)."
)
@click.option(
    "--prompt-digest",
    "prompt_digests",
    multiple=True,
    help="The allowed system-prompt digests (replaces): how a re-reviewed prompt is allowed.",
)
@click.option(
    "--config-digest",
    "config_digests",
    multiple=True,
    help="The allowed config digests (replaces).",
)
@click.option("--no-config-digests", is_flag=True, help="Clear the allowed config digests.")
@click.option(
    "--key-type",
    "key_types",
    multiple=True,
    type=click.Choice(KEY_TYPES),
    help="Key types (replaces).",
)
@click.option("--max-validity", default=None, help="Longest certificate lifetime, e.g. 12h.")
@click.option(
    "--require-attestation/--no-require-attestation",
    "require_attestation",
    default=None,
    help="Require (or stop requiring) a runtime attestation at enrollment and renewal.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def agent_update(
    ctx: click.Context,
    name: str,
    officer: str | None,
    scopes: tuple[str, ...],
    model_digests: tuple[str, ...],
    prompt_digests: tuple[str, ...],
    config_digests: tuple[str, ...],
    no_config_digests: bool,
    key_types: tuple[str, ...],
    max_validity: str | None,
    require_attestation: bool | None,
    as_json: bool,
) -> None:
    """Change registration NAME: only the options given change; a repeated option gives the
    whole new list (as PATCH /v1/agents/{name}). Certificates already issued keep what they
    certify; the next enrollment or renewal is checked against the new registration.
    """
    refuse_together(config_digest=config_digests, no_config_digests=no_config_digests)
    given = (
        officer,
        scopes,
        model_digests,
        prompt_digests,
        config_digests,
        no_config_digests,
        key_types,
        max_validity,
    )
    if not any(given) and require_attestation is None:
        raise FlagConflict("nothing to change: give at least one option")
    with runtime(ctx) as rt:
        before = registration_json(rt.registry.get_agent(name))
        reg = rt.registry.update_agent(
            name,
            officer=officer,
            scopes=scopes or None,
            model_digests=model_digests or None,
            prompt_digests=prompt_digests or None,
            config_digests=() if no_config_digests else (config_digests or None),
            key_types=key_types or None,
            max_validity=parse_duration(max_validity) if max_validity else None,
            actor=actor(),
            require_attestation=require_attestation,
        )
    changed = _comparable(registration_json(reg)) != _comparable(before)
    if not changed:
        unchanged(f"agent {name} already has these contents")
    _print_registration(reg, as_json, changed)


def _set_active(ctx: click.Context, name: str, active: bool, as_json: bool) -> None:
    """Enable or disable NAME; already in that state: a note, exit 0, ``changed: false``."""
    word = "enabled" if active else "disabled"
    with runtime(ctx) as rt:
        reg = rt.registry.get_agent(name)
        changed = reg.active is not active
        if changed:
            reg = rt.registry.update_agent(name, active=active, actor=actor())
    if not changed:
        unchanged(f"agent {name} is already {word}")
    if as_json:
        _print_registration(reg, True, changed)
    elif changed:
        click.echo(f"agent {name} {word}")


@agent.command("disable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The registration as JSON.")
@click.pass_context
def agent_disable(ctx: click.Context, name: str, as_json: bool) -> None:
    """Disable NAME: no enrollment or renewal until enabled again (disabling a disabled
    agent changes nothing and succeeds)."""
    _set_active(ctx, name, False, as_json)


@agent.command("enable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The registration as JSON.")
@click.pass_context
def agent_enable(ctx: click.Context, name: str, as_json: bool) -> None:
    """Enable a disabled registration again (enabling an active one changes nothing)."""
    _set_active(ctx, name, True, as_json)


@model.command("add")
@click.argument("digest", required=False)
@click.option("--model-type", required=True, help="Model type of these weights.")
@click.option("--environment", required=True, help="Environment the model is authorised in.")
@click.option("--description", default=None, help="Free text.")
@click.option(
    "--scheme",
    "digest_scheme",
    type=click.Choice(["agentca-manifest-v1", "oms-v1"]),
    default="agentca-manifest-v1",
    show_default=True,
    help="How DIGEST was computed: oms-v1 ('agentca model digest --scheme oms-v1', the "
    "OpenSSF Model Signing root digest) for new models (decision 0049).",
)
@click.option(
    "--signature",
    "signature",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="An OMS signature bundle (model_signing sign key|certificate) to verify against "
    "the configured model_producers; needs --model (decision 0052).",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True),
    default=None,
    help="With --signature: the model directory, hashed again and checked file by file.",
)
@click.option("--json", "as_json", is_flag=True, help="The inventory entry as JSON.")
@click.pass_context
def model_add(
    ctx: click.Context,
    digest: str | None,
    model_type: str,
    environment: str,
    description: str | None,
    digest_scheme: str,
    signature: str | None,
    model_path: str | None,
    as_json: bool,
) -> None:
    """Authorise model DIGEST (see 'agentca model digest') in an environment.

    With --signature and --model, DIGEST may be left out: it is the signed OMS digest, and
    the entry records the producer that signed it.

    Adding a model already active there with the same model type changes nothing and
    succeeds; with another model type it is refused (exit 7).
    """
    if (signature is None) != (model_path is None):
        raise click.UsageError("--signature and --model go together")
    if digest is None and signature is None:
        raise click.UsageError("DIGEST is required without --signature")
    changed = True
    with runtime(ctx) as rt:
        verified = bundle = None
        if signature is not None and model_path is not None:
            bundle = read_bundle(signature)
            verified = check_model(rt.settings, Path(model_path), bundle)
            digest_scheme = "oms-v1"
            digest = digest or verified.root.hex()
            note(f"signature verified: producer {verified.producer}, signer {verified.signer}")
        assert digest is not None
        try:
            m = rt.registry.add_model(
                digest,
                model_type,
                environment,
                description,
                actor=actor(),
                digest_scheme=digest_scheme,
                signature=verified,
                bundle=bundle,
            )
        except CAError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            same = [
                x
                for x in rt.registry.list_models(environment, "active")
                if x.digest == _hex(digest)
                and x.model_type == model_type
                and x.digest_scheme == digest_scheme
                and (verified is None or x.signature_sha256 == verified.bundle_sha256)
            ]
            if not same:
                raise
            m, changed = same[0], False
    if not changed:
        unchanged(f"model {m.digest} is already active in {m.environment}")
    if as_json:
        emit_json(with_changed(model_json(m), changed))
    elif changed:
        click.echo(f"model {m.digest} active in {m.environment}")


@model.command("retire")
@click.argument("digest")
@click.option("--environment", default=None, help="Only in this environment (default: all).")
@click.option(
    "--revoke",
    "also_revoke",
    is_flag=True,
    help="Also revoke every live certificate bound to this model.",
)
@click.option(
    "--reason",
    default="privilegeWithdrawn",
    show_default=True,
    help="Revocation reason used with --revoke.",
)
@click.option("--dry-run", is_flag=True, help="List what would be retired and revoked only.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: the models retired, the revoked."
)
@click.pass_context
def model_retire(
    ctx: click.Context,
    digest: str,
    environment: str | None,
    also_revoke: bool,
    reason: str,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Retire model DIGEST: new issuance for it stops at once.

    With --revoke, every live certificate bound to it is revoked in the same transaction;
    on a terminal it shows how many and asks first (--yes skips the question, --dry-run only
    lists them). Retiring a model already retired changes nothing and succeeds.
    """
    from ca.names import parse_sha256_hex
    from ca.requests import RevocationCriteria

    refuse_together(dry_run=dry_run, yes=yes)
    why = RevocationReason.parse(reason)
    hex_digest = parse_sha256_hex(digest).hex()
    with runtime(ctx) as rt:
        known = [m for m in rt.registry.list_models(environment) if m.digest == hex_digest]
        if not known:
            raise CAError(ErrorCode.NOT_FOUND, f"no model {hex_digest} to retire")
        active = [m for m in known if m.active]
        criteria = RevocationCriteria(model_digest=hex_digest, environment=environment)
        if dry_run or (also_revoke and not yes and sys.stdin.isatty()):
            live = rt.authority.matching_live(criteria) if also_revoke else []
            if dry_run:
                _print_retirement(active, live, as_json, dry_run=True)
                return
            click.confirm(
                f"retire {len(active)} model entr(ies) and revoke {len(live)} live "
                f"certificate(s) ({why.text})?",
                abort=True,
                err=True,
            )
        if not active and not also_revoke:
            done_retired: list[Any] = []
            done_revoked: list[Any] = []
        else:
            done = rt.operations.retire_model(
                hex_digest, environment, revoke=also_revoke, reason=why, actor=actor()
            )
            done_retired, done_revoked = list(done.retired), list(done.revoked)
    if not done_retired and not done_revoked:
        unchanged(f"model {hex_digest} is already retired")
    _print_retirement(done_retired, done_revoked, as_json, dry_run=False)


def _print_retirement(retired: list[Any], revoked: list[Any], as_json: bool, dry_run: bool) -> None:
    if as_json:
        doc: dict[str, Any] = {
            "retired": [model_json(m) for m in retired],
            "revoked": [certificate_json(r) for r in revoked],
        }
        if dry_run:
            doc["dry_run"] = True
        emit_json(with_changed(doc, bool(retired or revoked) and not dry_run))
        return
    verb = "would retire" if dry_run else "retired"
    for m in retired:
        click.echo(f"model {m.digest} {verb} in {m.environment}")
    for r in revoked:
        click.echo(
            f"{'would revoke' if dry_run else 'revoked'} {certificate_json(r)['serial']} "
            f"{r.agent_name}"
        )
    if revoked or dry_run:
        note(f"{'would revoke' if dry_run else 'revoked'} {len(revoked)} live certificate(s)")


@model.command("list")
@click.option("--environment", default=None, help="Only this environment.")
@click.option("--status", type=click.Choice(["active", "retired"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_context
def model_list(
    ctx: click.Context, environment: str | None, status: str | None, as_json: bool
) -> None:
    """List the model inventory."""
    with runtime(ctx) as rt:
        models = rt.registry.list_models(environment, status)
    if as_json:
        for m in models:
            emit_json(model_json(m))
        return
    table(
        ["DIGEST", "STATUS", "ENVIRONMENT", "MODEL TYPE", "SIGNED BY"],
        (
            [
                m.digest,
                "active" if m.active else "retired",
                m.environment,
                m.model_type,
                m.signed_by or "-",
            ]
            for m in models
        ),
    )


@click.group(cls=AgentcaGroup)
def scope() -> None:
    """The scope catalogue."""


def _scope_json(name: str, description: str | None) -> dict[str, Any]:
    return {"scope": name, "description": description}


@scope.command("add")
@click.argument("name")
@click.option("--description", default=None, help="What the scope allows.")
@click.option("--json", "as_json", is_flag=True, help="The scope as JSON.")
@click.pass_context
def scope_add(ctx: click.Context, name: str, description: str | None, as_json: bool) -> None:
    """Add scope NAME (e.g. submit_limit_order) to the catalogue.

    Adding a scope that exists with the same description (or without --description)
    changes nothing and succeeds; with another description it is refused (exit 7).
    """
    changed = True
    with runtime(ctx) as rt:
        try:
            rt.registry.add_scope(name, description, actor=actor())
        except CAError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            same = [s for s in rt.registry.list_scopes() if s.name == name]
            if not same or description not in (None, same[0].description):
                raise
            description, changed = same[0].description, False
    if not changed:
        unchanged(f"scope {name} already exists")
    if as_json:
        emit_json(with_changed(_scope_json(name, description), changed))
    elif changed:
        click.echo(f"scope {name} added")


@scope.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_context
def scope_list(ctx: click.Context, as_json: bool) -> None:
    """List the scope catalogue."""
    with runtime(ctx) as rt:
        scopes = rt.registry.list_scopes()
    if as_json:
        for sc in scopes:
            emit_json(_scope_json(sc.name, sc.description))
        return
    table(["SCOPE", "DESCRIPTION"], ([sc.name, sc.description or ""] for sc in scopes))


@click.group(cls=AgentcaGroup)
def token() -> None:
    """One-time enrollment tokens."""


@token.command("create")
@click.argument("agent_name")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime, e.g. 15m, 1h.")
@click.option("--json", "as_json", is_flag=True, help="The token and its record as JSON.")
@click.pass_context
def token_create(ctx: click.Context, agent_name: str, ttl: str, as_json: bool) -> None:
    """Create a one-time enrollment token for AGENT_NAME; it is printed once, on stdout."""
    from ca.roles import token_hash
    from ca.tokens import HANDLE_HEX

    with runtime(ctx) as rt:
        secret, expires = rt.enrollment_tokens.create(agent_name, parse_duration(ttl), actor())
    if as_json:
        digest = token_hash(secret)
        doc = {
            "token": secret,
            "id": digest[:HANDLE_HEX],
            "token_sha256": digest,
            "agent": agent_name,
            "expires_at": expires,
        }
        emit_json(with_changed(cli_json(doc), True))
    else:
        click.echo(secret)
    note(f"token expires {rfc3339(expires)}; it cannot be shown again")


@token.command("list")
@click.option("--agent", "agent_name", default=None, help="Only the tokens of this agent.")
@click.option("--all", "every", is_flag=True, help="Also used, expired and revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_context
def token_list(ctx: click.Context, agent_name: str | None, every: bool, as_json: bool) -> None:
    """List enrollment tokens, newest first: usable ones unless --all. Secrets are never
    shown; ID is the start of the token's SHA-256 (the ledger's token_sha256)."""
    with runtime(ctx) as rt:
        tokens = rt.enrollment_tokens.list_tokens(agent_name, every)
        now = rt.authority.clock()
    rows = [cli_json(t.to_json(now)) for t in tokens]
    if as_json:
        for row in rows:
            emit_json(row)
        return
    table(
        ["ID", "AGENT", "STATUS", "EXPIRES", "CREATED BY"],
        ([r["id"], r["agent"], r["status"], r["expires_at"], r["created_by"]] for r in rows),
    )


@token.command("revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="The revoked token's record as JSON.")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, as_json: bool) -> None:
    """Revoke the unused enrollment token TOKEN_ID (from 'agentca token list'; at least 8
    hex digits) so it can never enroll; recorded in the ledger. Revoking a revoked token
    changes nothing and succeeds."""
    changed = True
    with runtime(ctx) as rt:
        try:
            info = rt.enrollment_tokens.revoke(token_id, actor())
        except CAError as exc:
            if exc.code is not ErrorCode.CONFLICT or "already revoked" not in exc.detail:
                raise
            wanted = token_id.strip().lower()
            same = [
                t
                for t in rt.enrollment_tokens.list_tokens(None, True)
                if t.token_sha256.startswith(wanted) and t.revoked_at is not None
            ]
            if len(same) != 1:
                raise
            info, changed = same[0], False
        now = rt.authority.clock()
    if not changed:
        unchanged(f"enrollment token {info.handle} is already revoked")
    if as_json:
        emit_json(with_changed(cli_json(info.to_json(now)), changed))
    elif changed:
        click.echo(f"enrollment token {info.handle} of agent {info.agent} revoked")


@click.group(cls=AgentcaGroup)
def apitoken() -> None:
    """API tokens for operators, auditors and read-only clients."""


@apitoken.command("create")
@click.argument("name", required=False)
@click.option("--name", "name_option", default=None, help="The token's name (or give NAME).")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["operator", "auditor", "read-only", "issuer-verbatim", "gateway"]),
    help="operator: read and write; auditor and read-only: read only; issuer-verbatim: "
    "POST /v1/certificates only, the one role that may issue outside policy; gateway: "
    "POST /v1/actions for the registered gateway of the same name ('agentca gateway add'). "
    "issuer-verbatim and gateway tokens are created only here, never through the API.",
)
@click.option(
    "--ttl",
    default=None,
    help="Lifetime, e.g. 12h or 30d (default: api_token_default_ttl_days, at most "
    "api_token_max_ttl_days).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
@click.pass_context
def apitoken_create(
    ctx: click.Context,
    name: str | None,
    name_option: str | None,
    role: str,
    ttl: str | None,
    as_json: bool,
) -> None:
    """Create API token NAME; the secret is printed once, on stdout, and stored hashed."""
    if (name is None) == (name_option is None):
        raise click.UsageError("give the token's name once: NAME or --name NAME")
    name = name if name is not None else name_option
    assert name is not None
    with runtime(ctx) as rt:
        if role == "gateway" and rt.gateways.get(name) is None:
            raise CAError(
                ErrorCode.NOT_FOUND,
                f"no gateway '{name}' is registered: 'agentca gateway add {name} "
                "--public-key FILE' first",
            )
        secret, info = rt.api_tokens.create(
            name, role, actor=actor(), ttl=parse_duration(ttl) if ttl else None
        )
        now = rt.authority.clock()
    data = cli_json(info.to_json(now))
    if as_json:
        emit_json(with_changed({**data, "token": secret}, True))
    else:
        click.echo(secret)
    note(
        f"API token '{name}' ({role}) created, expires {data['expires_at']}; "
        "it cannot be shown again"
    )


@apitoken.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def apitoken_list(ctx: click.Context, as_json: bool) -> None:
    """List API tokens: name, role, status, expiry and last use (never the secrets)."""
    with runtime(ctx) as rt:
        tokens = rt.api_tokens.list()
        now = rt.authority.clock()
    rows = [cli_json(t.to_json(now)) for t in tokens]
    if as_json:
        for row in rows:
            emit_json(row)
        return
    table(
        ["NAME", "ROLE", "STATUS", "EXPIRES", "LAST USED"],
        (
            [r["name"], r["role"], r["status"], r["expires_at"], r["last_used_at"] or "never"]
            for r in rows
        ),
    )


@apitoken.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the revoked token's record as JSON.")
@click.pass_context
def apitoken_revoke(ctx: click.Context, name: str, as_json: bool) -> None:
    """Revoke API token NAME at once (recorded in the ledger). Revoking a revoked token
    changes nothing and succeeds."""
    changed = True
    with runtime(ctx) as rt:
        try:
            info = rt.api_tokens.revoke(name, actor())
        except CAError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            same = [t for t in rt.api_tokens.list() if t.name == name and t.revoked_at]
            if not same:
                raise
            info, changed = same[0], False
        now = rt.authority.clock()
    if not changed:
        unchanged(f"API token '{name}' is already revoked")
    if as_json:
        emit_json(with_changed(cli_json(info.to_json(now)), changed))
    elif changed:
        click.echo(f"API token '{name}' revoked")
