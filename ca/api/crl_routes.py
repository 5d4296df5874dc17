"""Serving the published CRL files at the URL certificates carry in their CRL distribution point.

``GET /crl/<issuer>.crl`` (complete CRL) and ``GET /crl/<issuer>-delta.crl`` (delta CRL, the
Freshest CRL URL) stream the DER files the publisher wrote, with ``application/pkix-crl``,
``Cache-Control: public, max-age`` up to nextUpdate (capped, because the publisher replaces
CRLs as soon as revocations settle), ``Last-Modified`` (thisUpdate), ``Expires`` (nextUpdate),
a strong ``ETag`` derived from the CRL number, and 304 on a matching ``If-None-Match``.

Register with ``app.register_blueprint(crl, publish_dir=settings.effective_crl_publish_dir)``;
without the option the directory comes from the runtime's settings.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.wsgi import wrap_file

from ca.crl import CrlInfo, read_crl_info
from ca.errors import CAError, ErrorCode

PKIX_CRL = "application/pkix-crl"
MAX_AGE_FULL = 300  # seconds: a new complete CRL may appear before nextUpdate
MAX_AGE_DELTA = 60  # seconds: delta CRLs follow revocations within seconds
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,80}\.crl$")
_DIR_KEY = "agentca.crl_publish_dir"

crl = Blueprint("crl", __name__)


@crl.record_once
def _remember_publish_dir(state: BlueprintSetupState) -> None:
    publish_dir = state.options.get("publish_dir")
    if publish_dir is not None:
        state.app.extensions[_DIR_KEY] = Path(publish_dir)


def _publish_dir() -> Path:
    configured = current_app.extensions.get(_DIR_KEY)
    if configured is not None:
        return Path(configured)
    from ca.api.state import runtime

    return runtime().settings.effective_crl_publish_dir


@crl.get("/crl/<filename>")
def crl_file(filename: str) -> Response:
    """A published CRL file (DER), cacheable until shortly before it may be replaced."""
    if not _FILENAME.match(filename):
        raise CAError(ErrorCode.NOT_FOUND, f"no CRL published at {request.path}")
    try:
        fh = (_publish_dir() / filename).open("rb")
    except (FileNotFoundError, NotADirectoryError):
        raise CAError(ErrorCode.NOT_FOUND, f"no CRL published at {request.path}") from None
    try:  # one open file: a concurrent os.replace cannot mix two CRLs into one answer
        info = read_crl_info(fh)
        size = os.fstat(fh.fileno()).st_size
    except BaseException:
        fh.close()
        raise
    etag = f"{filename[:-4]}-{info.number}"
    not_modified = (
        request.if_none_match.contains(etag)
        if request.if_none_match
        else request.if_modified_since is not None and request.if_modified_since >= info.this_update
    )
    if not_modified:
        fh.close()
        resp = Response(status=304)
    else:
        fh.seek(0)
        resp = Response(wrap_file(request.environ, fh), mimetype=PKIX_CRL, direct_passthrough=True)
        resp.content_length = size
    _cache_headers(resp, info, etag, MAX_AGE_DELTA if info.is_delta else MAX_AGE_FULL)
    return resp


def _cache_headers(resp: Response, info: CrlInfo, etag: str, cap: int) -> None:
    now = datetime.now(UTC)
    max_age = cap
    if info.next_update is not None:
        max_age = max(0, min(cap, int((info.next_update - now).total_seconds())))
        resp.expires = info.next_update
    resp.headers["Cache-Control"] = f"public, max-age={max_age}, no-transform"
    resp.last_modified = info.this_update
    resp.set_etag(etag)
