"""Registrations, inventory, scopes and credentials: agent, model, scope, token, apitoken."""

from __future__ import annotations

import json

import click

from ca.api.bodies import model_json, registration_json
from ca.revocation import RevocationReason
from cli.context import actor, parse_duration, runtime
from cli.digest_commands import model
from cli.group import AgentcaGroup

KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]


def _print_registration(data: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
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
    as_json: bool,
) -> None:
    """Register agent NAME with its allowed scopes, models, prompts and key types."""
    with runtime(ctx) as rt:
        reg = rt.registry.register_agent(
            name=name,
            officer=officer,
            environment=environment,
            model_type=model_type,
            scopes=scopes,
            model_digests=model_digests,
            prompt_digests=prompt_digests,
            config_digests=config_digests,
            key_types=key_types or ("ec-p256", "ec-p384", "ed25519"),
            max_validity=parse_duration(max_validity),
            organization=organization,
            actor=actor(),
        )
    _print_registration(registration_json(reg), as_json)


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines.")
@click.pass_context
def agent_list(ctx: click.Context, as_json: bool) -> None:
    """List agent registrations."""
    with runtime(ctx) as rt:
        regs = rt.registry.list_agents()
    for r in regs:
        if as_json:
            click.echo(json.dumps(registration_json(r), sort_keys=True))
        else:
            status = "active" if r.active else "disabled"
            click.echo(f"{r.name:32} {status:9} {r.environment:24} {r.officer}")


@agent.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def agent_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one registration."""
    with runtime(ctx) as rt:
        reg = rt.registry.get_agent(name)
    _print_registration(registration_json(reg), as_json)


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
    as_json: bool,
) -> None:
    """Change registration NAME: only the options given change; a repeated option gives the
    whole new list (as PATCH /v1/agents/{name}). Certificates already issued keep what they
    certify; the next enrollment or renewal is checked against the new registration.
    """
    if config_digests and no_config_digests:
        raise click.UsageError("--config-digest and --no-config-digests contradict each other")
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
    if not any(given):
        raise click.UsageError("nothing to change: give at least one option")
    with runtime(ctx) as rt:
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
        )
    _print_registration(registration_json(reg), as_json)


@agent.command("disable")
@click.argument("name")
@click.pass_context
def agent_disable(ctx: click.Context, name: str) -> None:
    """Disable NAME: no enrollment or renewal until enabled again."""
    with runtime(ctx) as rt:
        rt.registry.update_agent(name, active=False, actor=actor())
    click.echo(f"agent {name} disabled")


@agent.command("enable")
@click.argument("name")
@click.pass_context
def agent_enable(ctx: click.Context, name: str) -> None:
    """Enable a disabled registration again."""
    with runtime(ctx) as rt:
        rt.registry.update_agent(name, active=True, actor=actor())
    click.echo(f"agent {name} enabled")


@model.command("add")
@click.argument("digest")
@click.option("--model-type", required=True, help="Model type of these weights.")
@click.option("--environment", required=True, help="Environment the model is authorised in.")
@click.option("--description", default=None, help="Free text.")
@click.pass_context
def model_add(
    ctx: click.Context, digest: str, model_type: str, environment: str, description: str | None
) -> None:
    """Authorise model DIGEST (see 'agentca model digest') in an environment."""
    with runtime(ctx) as rt:
        m = rt.registry.add_model(digest, model_type, environment, description, actor=actor())
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
@click.pass_context
def model_retire(
    ctx: click.Context, digest: str, environment: str | None, also_revoke: bool, reason: str
) -> None:
    """Retire model DIGEST: new issuance for it stops at once."""
    why = RevocationReason.parse(reason)
    with runtime(ctx) as rt:
        done = rt.operations.retire_model(
            digest, environment, revoke=also_revoke, reason=why, actor=actor()
        )
    for m in done.retired:
        click.echo(f"model {m.digest} retired in {m.environment}")
    if also_revoke:
        click.echo(f"revoked {len(done.revoked)} live certificate(s)")


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
    for m in models:
        if as_json:
            click.echo(json.dumps(model_json(m), sort_keys=True))
        else:
            click.echo(
                f"{m.digest}  {'active' if m.active else 'retired':8} "
                f"{m.environment:24} {m.model_type}"
            )


@click.group(cls=AgentcaGroup)
def scope() -> None:
    """The scope catalogue."""


@scope.command("add")
@click.argument("name")
@click.option("--description", default=None, help="What the scope allows.")
@click.pass_context
def scope_add(ctx: click.Context, name: str, description: str | None) -> None:
    """Add scope NAME (e.g. submit_limit_order) to the catalogue."""
    with runtime(ctx) as rt:
        rt.registry.add_scope(name, description, actor=actor())
    click.echo(f"scope {name} added")


@scope.command("list")
@click.pass_context
def scope_list(ctx: click.Context) -> None:
    """List the scope catalogue."""
    with runtime(ctx) as rt:
        for s in rt.registry.list_scopes():
            click.echo(f"{s.name:40} {s.description or ''}".rstrip())


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
            "expires_at": expires.isoformat(),
        }
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        click.echo(secret)
    click.echo(f"expires {expires.isoformat()}; it cannot be shown again", err=True)


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
    if as_json:
        for t in tokens:
            click.echo(json.dumps(t.to_json(now), sort_keys=True))
        return
    click.echo(f"{'ID':16}  {'AGENT':32} {'STATUS':8} {'EXPIRES':25} CREATED BY")
    for t in tokens:
        expires = t.expires_at.isoformat(timespec="seconds")
        click.echo(f"{t.handle:16}  {t.agent:32} {t.status(now):8} {expires:25} {t.created_by}")


@token.command("revoke")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="The revoked token's record as JSON.")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, as_json: bool) -> None:
    """Revoke the unused enrollment token TOKEN_ID (from 'agentca token list'; at least 8
    hex digits) so it can never enroll; recorded in the ledger."""
    with runtime(ctx) as rt:
        info = rt.enrollment_tokens.revoke(token_id, actor())
        now = rt.authority.clock()
    if as_json:
        click.echo(json.dumps(info.to_json(now), sort_keys=True))
    else:
        click.echo(f"enrollment token {info.handle} of agent {info.agent} revoked")


@click.group(cls=AgentcaGroup)
def apitoken() -> None:
    """API tokens for operators, auditors and read-only clients."""


@apitoken.command("create")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["operator", "auditor", "read-only", "issuer-verbatim"]),
    help="operator: read and write; auditor and read-only: read only; issuer-verbatim: "
    "POST /v1/certificates only, the one role that may issue outside policy (created only "
    "here, never through the API).",
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
    ctx: click.Context, name: str, role: str, ttl: str | None, as_json: bool
) -> None:
    """Create API token NAME; the secret is printed once, on stdout, and stored hashed."""
    with runtime(ctx) as rt:
        secret, info = rt.api_tokens.create(
            name, role, actor=actor(), ttl=parse_duration(ttl) if ttl else None
        )
        now = rt.authority.clock()
    if as_json:
        click.echo(json.dumps({**info.to_json(now), "token": secret}, sort_keys=True))
    else:
        click.echo(secret)
    click.echo(
        f"API token '{name}' ({role}) created, expires {info.expires_at.isoformat()}; "
        "it cannot be shown again",
        err=True,
    )


@apitoken.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def apitoken_list(ctx: click.Context, as_json: bool) -> None:
    """List API tokens: name, role, status, expiry and last use (never the secrets)."""
    with runtime(ctx) as rt:
        tokens = rt.api_tokens.list()
        now = rt.authority.clock()
    for t in tokens:
        data = t.to_json(now)
        if as_json:
            click.echo(json.dumps(data, sort_keys=True))
        else:
            used = data["last_used_at"] or "never used"
            click.echo(
                f"{t.name:32} {t.role.value:9} {data['status']:8} "
                f"expires {data['expires_at']}  last used {used}"
            )


@apitoken.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the revoked token's record as JSON.")
@click.pass_context
def apitoken_revoke(ctx: click.Context, name: str, as_json: bool) -> None:
    """Revoke API token NAME at once (recorded in the ledger)."""
    with runtime(ctx) as rt:
        info = rt.api_tokens.revoke(name, actor())
        now = rt.authority.clock()
    if as_json:
        click.echo(json.dumps(info.to_json(now), sort_keys=True))
    else:
        click.echo(f"API token '{name}' revoked")
