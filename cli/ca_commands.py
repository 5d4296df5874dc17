"""CA hierarchy and issuance commands: init, issue (the certificate commands that only read
or revoke are in ``cli.cert_commands``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization

from ca.arcs import arc_setting
from ca.config import url_warnings
from ca.enrollment import DirectIssuance
from ca.errors import CAError, ErrorCode
from ca.extensions import Digest, Provenance
from ca.keysetup import SOFTWARE
from ca.names import parse_sha256_hex
from ca.wiring import ensure_initialised
from cli.context import actor, parse_duration, runtime, settings_from
from cli.output import certificate_json, cli_serial, emit_json, note, rfc3339, warn, with_changed
from wire.extensions import ModelDigestScheme

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
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the CAs and the arc.")
@click.pass_context
def init(
    ctx: click.Context,
    root_key_type: str | None,
    issuing_key_type: str | None,
    oid_arc: str | None,
    as_json: bool,
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
    for warning in url_warnings(settings):
        warn(warning)
    with _warnings_to_stderr():
        created = ensure_initialised(settings, actor())
    if not created:
        raise CAError(ErrorCode.CONFLICT, f"the CA hierarchy in {settings.data_dir} already exists")
    ctx.find_root().obj["settings"] = settings
    with runtime(ctx) as rt:
        issuers = []
        for record in rt.authority.issuers():
            cert = record.certificate
            issuers.append(
                {
                    "issuer": record.name,
                    "role": record.role,
                    "subject": cert.subject.rfc4514_string(),
                    "key_type": record.key_type,
                    "serial": cli_serial(cert.serial_number),
                    "not_after": rfc3339(cert.not_valid_after_utc),
                }
            )
        arc = rt.authority.hierarchy.arc_state().current.dotted
    if as_json:
        emit_json(with_changed({"issuers": issuers, "oid_arc": arc}, True))
        return
    for i in issuers:
        click.echo(
            f"{i['role']:8} {i['subject']}  key={i['key_type']} "
            f"serial={i['serial']} notAfter={i['not_after']}"
        )
    click.echo(f"oid-arc  {arc}")


class _StderrWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


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
    "--model-digest-scheme",
    type=click.Choice(["agentca-manifest-v1", "oms-v1"]),
    default="agentca-manifest-v1",
    show_default=True,
    help="How --model-digest was computed (decision 0049).",
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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object: the record, with the PEM as 'certificate_pem' (unless --out).",
)
@click.pass_context
def issue(
    ctx: click.Context,
    csr_path: str,
    agent_name: str,
    scopes: tuple[str, ...],
    model_type: str | None,
    model_digest: str | None,
    model_digest_scheme: str,
    prompt_digest: str | None,
    config_digest: str | None,
    officer: str | None,
    environment: str | None,
    organization: str | None,
    validity: str | None,
    outside_policy: bool,
    out: str | None,
    as_json: bool,
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
            model_digest_scheme=ModelDigestScheme.parse(model_digest_scheme),
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
    serial = cli_serial(record.serial_hex)
    if out:
        Path(out).write_text(pem)
        note(f"issued serial {serial} to {agent_name}{how}, written to {out}")
    else:
        note(f"issued serial {serial} to {agent_name}{how}")
    if as_json:
        doc = certificate_json(record) | {"outside_policy": outside_policy}
        doc |= {"out": out} if out else {"certificate_pem": pem}
        emit_json(with_changed(doc, True))
    elif not out:
        click.echo(pem, nl=False)
