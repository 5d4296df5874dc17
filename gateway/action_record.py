"""From a logged gateway decision to the :class:`~wire.actions.ActionRecord` the action log
keeps (issue 18, decision 0055). Pure, and run by the action log's writer thread only: the
request queues the same small object the decision log gets (``gateway.verifier._LogLine``),
and everything here (the issuer's key identifier, the request ID, the bounds) happens off the
request path.

What a record holds and where each member comes from is in docs/verifiers.md ("The action
log"). What it never holds: the request body, the query string, the raw path (the route is the
template the shell matched, or :data:`UNMATCHED`), any header but ``X-Request-ID``,
``Content-Digest`` and a signed ``Agentca-Subject``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

from cryptography import x509

from wire.actions import MAX_TEXT, ActionRecord, record_time

if TYPE_CHECKING:
    from gateway.chain import ChainEntry
    from gateway.httpsig import RequestView
    from gateway.verifier import Decision

UNMATCHED: Final = "(none)"
"""The route recorded when the shell matched no route template (the raw path never is)."""
REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
"""A well-formed ``X-Request-ID``: taken as the record's request ID, else one is generated."""
MAX_METHOD: Final = 32
_ELLIPSIS: Final = "..."


class Pending(Protocol):
    """What a shell's :meth:`Verifier.log <gateway.verifier.Verifier.log>` queues."""

    decision: Decision
    req: RequestView
    ts: float
    http_status: int | None
    route: str | None


def request_id(header: str | None) -> str:
    """The request's own ``X-Request-ID`` when well-formed (:data:`REQUEST_ID`), else a new
    random one (``uuid4`` hex): never an unbounded or odd client string."""
    if header is not None and REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """``value`` cut to ``limit`` characters (marked with ``...``): a record is built here,
    so bounding is ours to do; the codec refuses what is longer, it never cuts."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - len(_ELLIPSIS)] + _ELLIPSIS


_SKI: dict[bytes, str] = {}
_MAX_SKI: Final = 4096


def issuer_key_id(entry: ChainEntry) -> str:
    """The issuing CA's subject key identifier (hex): its SKI extension, or the RFC 5280
    method-1 SHA-1 of its public key when it has none. Cached per leaf certificate."""
    cached = _SKI.get(entry.fingerprint)
    if cached is not None:
        return cached
    issuer = entry.issuer
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    value = ski.hex()
    if len(_SKI) >= _MAX_SKI:
        _SKI.clear()
    _SKI[entry.fingerprint] = value
    return value


def build_record(line: Pending, gateway: str, seq: int) -> ActionRecord:
    """The action record of one logged decision, as record ``seq`` of ``gateway``'s log."""
    d = line.decision
    req = line.req
    headers = req.headers
    denial = d.denial
    ident = d.identity
    status = line.http_status
    if status is not None and not 100 <= status <= 599:
        status = None
    digest = headers.get("content-digest")
    if digest is not None and len(digest) > MAX_TEXT:
        digest = None  # only a denial can carry one this long: never a cut digest
    chain = d.chain
    return ActionRecord(
        gateway=gateway,
        seq=seq,
        time=record_time(datetime.fromtimestamp(line.ts, UTC)),
        request_id=request_id(headers.get("x-request-id")),
        outcome="allow" if d.allowed else "deny",
        method=_text(req.method, MAX_METHOD) or "",
        route=_text(line.route) or UNMATCHED,
        scope=_text(d.scope),
        check=None if denial is None else denial.check.value,
        detail=None if denial is None else _text(denial.detail),
        http_status=status,
        agent=None if ident is None else _text(ident.name),
        spiffe_id=None if ident is None else _text(ident.spiffe_id),
        serial=None if ident is None else ident.serial,
        issuer=None if chain is None else issuer_key_id(chain),
        officer=None if ident is None else _text(ident.officer),
        subject=_text(d.subject),
        environment=None if ident is None else _text(ident.environment),
        model_type=None if ident is None else _text(ident.model_type),
        model_digest=None if ident is None else ident.model_digest,
        prompt_digest=None if ident is None else ident.prompt_digest,
        config_digest=None if ident is None else ident.config_digest,
        attested_by=None if ident is None else _text(ident.attested_by),
        content_digest=digest,
        profile=d.profile,
    )
