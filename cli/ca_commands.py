"""CA hierarchy and certificate commands: init, issue, revoke, list, show, chain."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.arcs import arc_setting
from ca.enrollment import DirectIssuance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance, read_agent_extensions
from ca.keysetup import SOFTWARE
from ca.names import parse_sha256_hex
from ca.requests import CertificateFilter, RevocationCriteria
from ca.revocation import RevocationReason
from ca.wiring import ensure_initialised
from cli.context import actor, parse_duration, runtime, settings_from

# CA keys: no Ed25519 (ca.hierarchy.CA_KEY_TYPES; verifiers refuse chains under it).
KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


@click.command()
@click.option(
    "--root-key-type",
    type=click.Choice(KEY_TYPES),
    default=None,
    help="Root CA key type (default from settings: ec-p384).",
)
@click.option(
    "--issuing-key-type",
    type=click.Choice(KEY_TYPES),
    default=None,
    help="Issuing CA key type (default from settings: ec-p256).",
)
@click.option(
    "--oid-arc",
    "oid_arc",
    default=None,
    metavar="DOTTED",
    help="OID arc of the agent extensions, EKUs and policy, under your organisation's IANA "
    "PEN: 1.3.6.1.4.1.<PEN>... (default from settings: the RFC 5612 example arc "
    "1.3.6.1.4.1.32473.2026, for evaluation only).",
)
@click.pass_context
def init(
    ctx: click.Context,
    root_key_type: str | None,
    issuing_key_type: str | None,
    oid_arc: str | None,
) -> None:
    """Create the CA: HSM token (SoftHSM2 by default), database schema, root and issuing CA.

    Keys are generated inside the token and never leave it. Fails if the hierarchy exists.
    The OID arc is recorded with the CA; warnings (the example arc, an arc Go and GnuTLS
    refuse) go to stderr.
    """
    settings = settings_from(ctx)
    if oid_arc is not None:
        settings = settings.replace(oid_arc=arc_setting(oid_arc).dotted)
    arc_setting(settings.oid_arc)  # a bad arc fails before anything is created
    if settings.key_store == SOFTWARE:
        raise CAError(
            ErrorCode.CONFIG,
            "key_store = 'software' keeps the CA keys in this process only: 'agentca init' "
            "would leave a database whose CA keys are gone as soon as it exits (every later "
            "start refuses it). In dev mode 'agentca serve' creates the hierarchy itself",
        )
    settings = settings.replace(
        root_key_type=root_key_type or settings.root_key_type,
        issuing_key_type=issuing_key_type or settings.issuing_key_type,
    )
    with _warnings_to_stderr():
        created = ensure_initialised(settings, actor())
    if not created:
        raise CAError(ErrorCode.CONFLICT, f"the CA hierarchy in {settings.data_dir} already exists")
    ctx.find_root().obj["settings"] = settings
    with runtime(ctx) as rt:
        for record in rt.authority.issuers():
            cert = record.certificate
            click.echo(
                f"{record.role:8} {cert.subject.rfc4514_string()}  key={record.key_type} "
                f"serial={cert.serial_number:x} notAfter={cert.not_valid_after_utc:%Y-%m-%d}"
            )
        click.echo(f"oid-arc  {rt.authority.hierarchy.arc_state().current}")


class _StderrWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"agentca: warning: {record.getMessage()}", err=True)


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """The hierarchy's warnings (``ca.hierarchy`` logs them) as ``agentca: warning:`` lines."""
    logger = logging.getLogger("agentca.hierarchy")
    handler = _StderrWarnings(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@click.command()
@click.option(
    "--csr",
    "csr_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="PKCS#10 request (PEM or DER) holding the agent's public key.",
)
@click.option(
    "--agent", "agent_name", required=True, help="Registered agent name (subject CN, SPIFFE path)."
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Scope, e.g. submit_limit_order (repeatable; default: the registration's scopes).",
)
@click.option(
    "--model-type",
    default=None,
    help="Model type; with both digests, the provenance to certify (default: the CSR's).",
)
@click.option(
    "--model-digest",
    default=None,
    help="SHA-256 of the weights manifest (see 'agentca model digest'), 64 hex.",
)
@click.option(
    "--prompt-digest",
    default=None,
    help="SHA-256 of the system prompt (see 'agentca prompt digest'), 64 hex.",
)
@click.option("--config-digest", default=None, help="Optional SHA-256 of the canonical config.")
@click.option(
    "--officer", default=None, help="Officer of record; must be the registration's (e-mail)."
)
@click.option("--environment", default=None, help="Environment; must be the registration's.")
@click.option("--organization", default=None, help="Organisation; must be the registration's.")
@click.option("--validity", default=None, help="Lifetime such as 30m, 12h, 2d (default 12h).")
@click.option(
    "--outside-policy",
    is_flag=True,
    help="Sign the contents given verbatim, outside policy (every content option required); "
    "recorded in the ledger as outside policy with the reasons policy gave.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the PEM certificate here instead of standard output.",
)
@click.pass_context
def issue(
    ctx: click.Context,
    csr_path: str,
    agent_name: str,
    scopes: tuple[str, ...],
    model_type: str | None,
    model_digest: str | None,
    prompt_digest: str | None,
    config_digest: str | None,
    officer: str | None,
    environment: str | None,
    organization: str | None,
    validity: str | None,
    outside_policy: bool,
    out: str | None,
) -> None:
    """Issue a certificate to a registered agent from a CSR, through the enrollment policy.

    Provenance comes from the CSR's attribute (or from --model-type and both digests, which
    must then equal it); scopes, officer and environment default to the registration's and
    may only narrow it or restate it. Anything else is refused with every reason. The local
    CLI holds the HSM PIN, so its user may add --outside-policy to sign verbatim; the ledger
    records who did, and that it was outside policy.
    """
    try:
        data = Path(csr_path).read_bytes()
    except OSError as exc:
        raise CAError(ErrorCode.BAD_REQUEST, f"cannot read {csr_path}: {exc.strerror}") from exc
    provenance = None
    if model_type or model_digest or prompt_digest or config_digest:
        if not (model_type and model_digest and prompt_digest):
            raise CAError(
                ErrorCode.BAD_REQUEST,
                "give --model-type, --model-digest and --prompt-digest together, or none "
                "(the CSR's provenance attribute is then used)",
            )
        provenance = Provenance(
            model_type=model_type,
            model_digest=Digest(value=parse_sha256_hex(model_digest)),
            prompt_digest=Digest(value=parse_sha256_hex(prompt_digest)),
            config_digest=Digest(value=parse_sha256_hex(config_digest)) if config_digest else None,
        )
    request = DirectIssuance(
        agent_name=agent_name,
        csr=data,
        provenance=provenance,
        scopes=scopes or None,
        officer=officer,
        environment=environment,
        organization=organization,
        validity=parse_duration(validity) if validity else None,
    )
    with runtime(ctx) as rt:
        record = rt.enrollment.issue_direct(request, actor(), outside_policy=outside_policy)
    cert = record.certificate
    assert cert is not None
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    how = " outside policy" if outside_policy else ""
    if out:
        Path(out).write_text(pem)
        click.echo(
            f"issued serial {record.serial_hex} to {agent_name}{how}, written to {out}", err=True
        )
    else:
        click.echo(pem, nl=False)
        click.echo(f"issued serial {record.serial_hex} to {agent_name}{how}", err=True)


@click.command()
@click.argument("serial", required=False)
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded, "
    "cessationOfOperation, certificateHold, privilegeWithdrawn...",
)
@click.option("--model-digest", default=None, help="Bulk: every live certificate of this model.")
@click.option("--prompt-digest", default=None, help="Bulk: every live certificate of this prompt.")
@click.option("--officer", default=None, help="Bulk: every live certificate of this officer.")
@click.option("--agent", "agent_name", default=None, help="Bulk: every live certificate of NAME.")
@click.pass_context
def revoke(
    ctx: click.Context,
    serial: str | None,
    reason: str,
    model_digest: str | None,
    prompt_digest: str | None,
    officer: str | None,
    agent_name: str | None,
) -> None:
    """Revoke the certificate with hexadecimal SERIAL, or in bulk with the filters.

    Bulk revocation takes every live (issued, unexpired) certificate matching all given
    filters, in one transaction.
    """
    why = RevocationReason.parse(reason)
    bulk = RevocationCriteria(
        model_digest=parse_sha256_hex(model_digest).hex() if model_digest else None,
        prompt_digest=parse_sha256_hex(prompt_digest).hex() if prompt_digest else None,
        officer=officer,
        agent_name=agent_name,
    )
    if (serial is None) == bulk.is_empty():
        raise CAError(ErrorCode.BAD_REQUEST, "give either a SERIAL or at least one bulk filter")
    with runtime(ctx) as rt:
        if serial is not None:
            record = rt.authority.revoke(serial, why, actor())
            click.echo(
                f"revoked {record.serial_hex} ({why.text}) at "
                f"{record.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
            )
            return
        records = rt.authority.revoke_where(bulk, why, actor())
    for r in records:
        click.echo(f"revoked {r.serial_hex} {r.agent_name} ({why.text})")
    click.echo(f"revoked {len(records)} certificate(s)", err=True)


@click.command("list")
@click.option("--agent", "agent_name", default=None, help="Only this agent.")
@click.option(
    "--status",
    type=click.Choice(["pending", "issued", "revoked", "failed"]),
    default=None,
    help="Only this status.",
)
@click.option("--officer", default=None, help="Only this officer of record.")
@click.option("--model-digest", default=None, help="Only this model digest (hex).")
@click.option("--prompt-digest", default=None, help="Only this prompt digest (hex).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.pass_context
def list_certificates(
    ctx: click.Context,
    agent_name: str | None,
    status: str | None,
    officer: str | None,
    model_digest: str | None,
    prompt_digest: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List certificate records, newest first."""
    flt = CertificateFilter(
        agent_name=agent_name,
        status=status,
        officer=officer,
        model_digest=parse_sha256_hex(model_digest).hex() if model_digest else None,
        prompt_digest=parse_sha256_hex(prompt_digest).hex() if prompt_digest else None,
        limit=limit,
    )
    with runtime(ctx) as rt:
        records = rt.authority.list(flt)
    for r in records:
        if as_json:
            click.echo(json.dumps(r.to_dict(), sort_keys=True))
        else:
            click.echo(
                f"{r.serial_hex:40}  {r.status:8}  {r.agent_name:24}  "
                f"{r.not_after:%Y-%m-%dT%H:%MZ}  {r.officer}"
            )


@click.command()
@click.argument("serial")
@click.option("--pem", "as_pem", is_flag=True, help="Print the certificate in PEM only.")
@click.option("--json", "as_json", is_flag=True, help="Print the record and extensions as JSON.")
@click.pass_context
def show(ctx: click.Context, serial: str, as_pem: bool, as_json: bool) -> None:
    """Show one certificate: record, validity and its decoded agent extensions."""
    with runtime(ctx) as rt:
        record = rt.authority.get(serial)
        arcs = rt.authority.hierarchy.arc_state().every_arc
    cert = record.certificate
    if as_pem:
        if cert is None:
            raise CAError(ErrorCode.NOT_FOUND, f"certificate {serial} was never signed")
        click.echo(cert.public_bytes(serialization.Encoding.PEM).decode(), nl=False)
        return
    data = record.to_dict()
    if cert is not None:
        data["extensions"] = read_agent_extensions(cert, arcs).to_dict()
        data["spiffe_id"] = [
            str(u)
            for u in cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.UniformResourceIdentifier)
        ]
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for key in (
        "serial",
        "status",
        "issuer",
        "subject",
        "agent_name",
        "spiffe_id",
        "not_before",
        "not_after",
        "issued_at",
        "revoked_at",
        "revocation_reason",
        "requested_by",
        "fingerprint_sha256",
    ):
        if data.get(key) is not None:
            click.echo(f"{key + ':':20}{data[key]}")
    if "extensions" in data:
        click.echo("extensions (decoded from the certificate):")
        click.echo(json.dumps(data["extensions"], indent=2, sort_keys=True))


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the PEM chain here instead of standard output.",
)
@click.option("--root-only", is_flag=True, help="Only the root certificate (the trust anchor).")
@click.pass_context
def chain(ctx: click.Context, out: str | None, root_only: bool) -> None:
    """Print the CA chain in PEM: issuing CA, then root."""
    with runtime(ctx) as rt:
        certs = rt.authority.chain()
    if root_only:
        certs = certs[-1:]
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    if out:
        Path(out).write_text(pem)
    else:
        click.echo(pem, nl=False)
