"""``agentca ca ceremony`` and ``agentca ca revoke-issuer``: what needs the root key
(decision 0034). Both open the root's token first and fail in one line while it is away."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.context import actor, settings_from
from cli.output import cli_serial, emit_json, note, rfc3339, with_changed


def _duties_json(duties: Any) -> dict[str, Any]:
    signer = duties.signer
    return {
        "root": duties.root,
        "crls": [
            {
                "kind": c.kind,
                "number": c.number,
                "this_update": rfc3339(c.this_update),
                "next_update": rfc3339(c.next_update),
                "entries": c.entries,
                "path": str(c.path),
            }
            for c in duties.crls
        ],
        "responder_certificate": None
        if signer is None
        else {"key_label": signer.key_label, "not_after": rfc3339(signer.not_after)},
        "next_update": rfc3339(duties.next_update),
        "next_ceremony_due": rfc3339(duties.next_due),
    }


def _root_session(ctx: click.Context) -> Any:
    """Settings, root key store (opened first: an absent token fails at once), engine."""
    from ca.keysetup import guard_signing, open_root_key_store
    from ca.store.db import make_engine, require_database_file, require_schema

    settings = settings_from(ctx)
    require_database_file(settings.effective_database_url)
    root_keys = open_root_key_store(settings)
    engine = make_engine(settings.effective_database_url)
    try:
        require_schema(engine)
        guard_signing(root_keys, engine, settings)  # nothing signed while the clock is off
    except BaseException:
        root_keys.close()
        engine.dispose()
        raise
    return settings, root_keys, engine


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: what was signed.")
@click.pass_context
def ceremony(ctx: click.Context, as_json: bool) -> None:
    """The root key ceremony: sign, with the root token attached, what the root owes.

    A complete root CRL and its delta whose nextUpdate is root_crl_validity_days away, and a
    new OCSP responder certificate for the root valid as long. Prints them and the date the
    next ceremony is due (14 days before either ends). Needs the root key's token
    (root_token_label) attached; detach it afterwards. Ledger entry ca.root_ceremony.
    """
    from ca.ceremony import sign_root_duties
    from ca.responder_certs import open_responder_key_store
    from ca.store.db import make_session_factory

    settings, root_keys, engine = _root_session(ctx)
    try:
        duties = sign_root_duties(
            settings,
            make_session_factory(engine),
            root_keys,
            open_responder_key_store(settings),
            actor(),
        )
    finally:
        root_keys.close()
        engine.dispose()
    doc = _duties_json(duties)
    if as_json:
        emit_json(with_changed(doc, True))
        return
    for c in doc["crls"]:
        click.echo(
            f"{duties.root} {c['kind']} CRL #{c['number']}, {c['entries']} entries, "
            f"nextUpdate {c['next_update']} -> {c['path']}"
        )
    signer = doc["responder_certificate"]
    if signer:
        click.echo(
            f"{duties.root} OCSP responder certificate {signer['key_label']}, "
            f"notAfter {signer['not_after']}"
        )
    click.echo(f"next ceremony due {doc['next_ceremony_due']}: detach the root token now")


@click.command("revoke-issuer")
@click.argument("issuer")
@click.option(
    "--reason",
    default="keyCompromise",
    show_default=True,
    help="RFC 5280 reason: keyCompromise, cACompromise, superseded, cessationOfOperation, ...",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the revocation.")
@click.pass_context
def revoke_issuer(ctx: click.Context, issuer: str, reason: str, yes: bool, as_json: bool) -> None:
    """Revoke the issuing CA ISSUER in the root CRL (needs the root token attached).

    Records the revocation under the root, publishes a fresh root CRL listing the issuing CA
    certificate (nextUpdate root_crl_validity_days away), and the root's OCSP answers for it
    say revoked: every certificate under it then fails chain validation. The active issuing
    CA is refused: run 'agentca ca rollover' first. Ledger entry ca.issuer_revoked.
    """
    from ca.ceremony import revoke_issuer as revoke
    from ca.revocation import RevocationReason
    from ca.store.db import make_session_factory

    why = RevocationReason.parse(reason)
    if not yes and sys.stdin.isatty():
        click.confirm(f"revoke the issuing CA {issuer} ({why.text}) in the root CRL?", abort=True)
    settings, root_keys, engine = _root_session(ctx)
    try:
        done = revoke(settings, make_session_factory(engine), root_keys, issuer, why, actor())
    finally:
        root_keys.close()
        engine.dispose()
    doc = done.to_dict() | {"serial": cli_serial(done.serial_hex)}
    doc["revoked_at"] = rfc3339(done.revoked_at)
    if done.duties is not None:
        doc |= {"root_crls": _duties_json(done.duties)["crls"]}
    if as_json:
        emit_json(doc)
        return
    if not done.changed:
        note(f"issuing CA {issuer} is already revoked ({why.text}); nothing changed")
        return
    click.echo(
        f"revoked issuing CA {issuer} serial={doc['serial']} ({why.text}) in the root CRL "
        f"#{doc['root_crls'][0]['number']}, nextUpdate {doc['root_crls'][0]['next_update']}"
    )
