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

import json
import re
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Protocol

from cryptography import x509

from wire.actions import MAX_TEXT, VERSION, ActionRecord, record_time

if TYPE_CHECKING:
    from gateway.chain import AgentIdentity, ChainEntry
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


@lru_cache(maxsize=4096)
def _identity_members(ident: AgentIdentity) -> tuple[tuple[str, str], ...]:
    """The members naming the agent: the same for every request of one certificate."""
    members = (
        ("agent", _text(ident.name)),
        ("spiffe_id", _text(ident.spiffe_id)),
        ("serial", _text(ident.serial)),
        ("officer", _text(ident.officer)),
        ("environment", _text(ident.environment)),
        ("model_type", _text(ident.model_type)),
        ("model_digest", _text(ident.model_digest)),
        ("prompt_digest", _text(ident.prompt_digest)),
        ("config_digest", _text(ident.config_digest)),
        ("attested_by", _text(ident.attested_by)),
    )
    return tuple((k, v) for k, v in members if v is not None)


def record_members(line: Pending, gateway: str, seq: int) -> dict[str, Any]:
    """The JSON object of record ``seq`` of ``gateway``'s log for one logged decision: what
    :meth:`ActionRecord.to_json` gives for :func:`build_record`, built without the dataclass
    (the writer thread's cost per record is a GIL the requests wait for)."""
    d = line.decision
    req = line.req
    headers = req.headers
    denial = d.denial
    out: dict[str, Any] = {
        "v": VERSION,
        "gateway": gateway,
        "seq": seq,
        "time": record_time(datetime.fromtimestamp(line.ts, UTC)),
        "request_id": request_id(headers.get("x-request-id")),
        "outcome": "allow" if d.allowed else "deny",
        "method": _text(req.method, MAX_METHOD),
        "route": _text(line.route) or UNMATCHED,
    }
    if d.scope is not None:
        out["scope"] = _text(d.scope)
    if denial is not None:
        out["check"] = denial.check.value
        out["detail"] = _text(denial.detail)
    status = line.http_status
    if status is not None and 100 <= status <= 599:
        out["http_status"] = status
    if d.identity is not None:
        out.update(_identity_members(d.identity))
    if d.chain is not None:
        out["issuer"] = issuer_key_id(d.chain)
    if d.subject is not None:
        out["subject"] = _text(d.subject)
    digest = headers.get("content-digest")
    if digest is not None and len(digest) <= MAX_TEXT:  # never a cut digest: none at all
        out["content_digest"] = digest
    if d.profile is not None:
        out["profile"] = d.profile
    for name, value in out.items():  # what the codec would refuse, refused here
        kind = type(value)
        if kind is str:
            if len(value) > MAX_TEXT:
                raise ValueError(f"member {name!r} is longer than {MAX_TEXT} characters")
        elif kind is not int:
            raise ValueError(f"member {name!r} is a {kind.__name__}")
    return out


_encode: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode  # the encoder wire.canonical.canonical uses: the same bytes


def record_bytes(line: Pending, gateway: str, seq: int) -> bytes:
    """The leaf bytes of the record (= ``build_record(...).leaf_bytes()``, faster)."""
    return _encode(record_members(line, gateway, seq)).encode()


def build_record(line: Pending, gateway: str, seq: int) -> ActionRecord:
    """The action record of one logged decision, as record ``seq`` of ``gateway``'s log."""
    return ActionRecord.from_json(record_members(line, gateway, seq))
