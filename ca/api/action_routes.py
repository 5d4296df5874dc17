"""``POST /v1/actions``: gateways ship their decision records into the action ledger
(issue 18, decision 0056).

Only a ``gateway`` token may call it, and only for the gateway it is named after: the batch's
``gateway`` must be the token's name and a registered, enabled gateway. The body (an
:class:`wire.actions.ActionBatch`) is bounded at :data:`MAX_ACTIONS_BODY` bytes, and at
:data:`wire.actions.MAX_BATCH` records, so each request does bounded work. Every refusal is
RFC 9457 problem+json.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ca.api.auth import principal, require
from ca.api.bodies import json_body
from ca.api.state import runtime
from ca.apitokens import Role
from ca.errors import CAError, ErrorCode
from wire.actions import MAX_BATCH, ActionBatch

actions_api = Blueprint("actions", __name__)
GATEWAYS = frozenset({Role.GATEWAY})
MAX_ACTIONS_BODY = 4 * 1024 * 1024
"""The largest batch body (bytes): 1,000 records of up to about 4 kB each."""


@actions_api.post("/v1/actions")
@require(GATEWAYS)
def post_actions() -> Response:
    """Store a batch of the caller's records; answers ``{"accepted", "duplicates",
    "next_seq"}`` (and ``checkpoint``: the carried checkpoint's status, when one came)."""
    length = request.content_length
    if length is not None and length > MAX_ACTIONS_BODY:
        raise CAError(
            ErrorCode.TOO_LARGE,
            f"a batch body is at most {MAX_ACTIONS_BODY} bytes (send fewer records)",
            max_bytes=MAX_ACTIONS_BODY,
        )
    request.max_content_length = MAX_ACTIONS_BODY  # also bounds a chunked body
    caller = principal()
    try:
        batch = ActionBatch.from_json(json_body())
    except ValueError as exc:
        raise CAError(
            ErrorCode.BAD_REQUEST, f"not an action batch (at most {MAX_BATCH} records): {exc}"
        ) from exc
    if batch.gateway != caller.name:
        raise CAError(
            ErrorCode.FORBIDDEN,
            f"token '{caller.name}' may ship only its own records, not gateway '{batch.gateway}'s",
        )
    result = runtime().actions.ingest(batch)
    return jsonify(result.to_json())
