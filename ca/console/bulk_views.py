"""Operator actions on many certificates at once: bulk revocation and model retirement, each
behind a preview of what would be revoked and a typed confirmation. They call the core's
``authority.matching_live`` (the preview), ``authority.revoke_where`` and
``operations.retire_model``: the operations ``POST /v1/revocations`` and
``POST /v1/models/<digest>/retire`` run."""

from __future__ import annotations

from flask import Response, request

from ca.api.auth import WRITERS
from ca.api.state import runtime
from ca.console import guard
from ca.console.operator_views import REASONS
from ca.console.web import console, render
from ca.errors import CAError, ErrorCode
from ca.names import parse_sha256_hex
from ca.policy import InventoryModel
from ca.requests import RevocationCriteria
from ca.revocation import RevocationReason

SHOWN = 50  # serials listed on a preview


def _criteria(source: dict[str, str]) -> RevocationCriteria:
    """Criteria from a form (digests checked and normalised as the API does)."""

    def text(name: str) -> str | None:
        return source.get(name, "").strip() or None

    model, prompt = text("model_digest"), text("prompt_digest")
    return RevocationCriteria(
        model_digest=parse_sha256_hex(model).hex() if model else None,
        prompt_digest=parse_sha256_hex(prompt).hex() if prompt else None,
        officer=text("officer"),
        agent_name=text("agent"),
    )


def _reason(raw: str | None, default: RevocationReason) -> RevocationReason:
    reason = RevocationReason.parse(raw) if raw else default
    if reason is RevocationReason.CERTIFICATE_HOLD:
        raise CAError(ErrorCode.BAD_REQUEST, "a bulk revocation cannot be a hold")
    return reason


@console.get("/revocations")
@guard.page(WRITERS)
def bulk_form() -> Response:
    return render("bulk.html", title="Bulk revocation", reasons=REASONS, preview=None)


@console.post("/revocations/preview")
@guard.action(WRITERS)
def bulk_preview() -> Response:
    """What would be revoked now: the count and the first serials (nothing changes)."""
    criteria = _criteria(request.form.to_dict())
    reason = _reason(request.form.get("reason"), RevocationReason.UNSPECIFIED)
    found = runtime().authority.matching_live(criteria)
    return render(
        "bulk.html",
        title="Bulk revocation",
        reasons=REASONS,
        preview=found[:SHOWN],
        count=len(found),
        criteria=criteria,
        reason=reason,
    )


@console.post("/revocations")
@guard.action(WRITERS)
def bulk_revoke() -> Response:
    """Revoke every live match, if the operator typed the count the preview showed and it is
    still the count now (otherwise preview again)."""
    criteria = _criteria(request.form.to_dict())
    reason = _reason(request.form.get("reason"), RevocationReason.UNSPECIFIED)
    authority = runtime().authority
    now = len(authority.matching_live(criteria))
    if request.form.get("confirm_count", "").strip() != str(now):
        raise CAError(
            ErrorCode.CONFLICT,
            f"{now} certificates match now; type that number to confirm (preview again if it "
            "is not the number you saw)",
        )
    done = authority.revoke_where(criteria, reason, guard.user().actor)
    return render(
        "bulk_done.html",
        title="Bulk revocation",
        revoked=[r.serial_hex for r in done],
        reason=reason,
    )


@console.get("/models/<digest>/retire")
@guard.page(WRITERS)
def retire_form(digest: str) -> Response:
    """Retiring a model: how many live certificates would be revoked with it."""
    environment = request.args.get("environment", "").strip()
    model = _model(digest, environment)
    live = runtime().authority.matching_live(
        RevocationCriteria(model_digest=model.digest, environment=environment)
    )
    return render(
        "retire.html", title="Retire a model", model=model, count=len(live), reasons=REASONS
    )


@console.post("/models/<digest>/retire")
@guard.action(WRITERS)
def retire(digest: str) -> Response:
    """Retire (and, if asked, revoke its live certificates) once the model type is typed."""
    environment = request.form.get("environment", "").strip()
    model = _model(digest, environment)
    if request.form.get("confirm_model_type", "") != model.model_type:
        raise CAError(ErrorCode.BAD_REQUEST, "type the model type exactly to confirm")
    done = runtime().operations.retire_model(
        model.digest,
        environment,
        revoke=request.form.get("revoke") == "yes",
        reason=_reason(request.form.get("reason"), RevocationReason.PRIVILEGE_WITHDRAWN),
        actor=guard.user().actor,
    )
    return render(
        "bulk_done.html",
        title="Model retired",
        retired=model,
        revoked=[r.serial_hex for r in done.revoked],
        reason=None,
    )


def _model(digest: str, environment: str) -> InventoryModel:
    """The inventory entry for ``digest`` in ``environment``, or NOT_FOUND."""
    hex_digest = parse_sha256_hex(digest).hex()
    for m in runtime().registry.list_models(environment=environment or None):
        if m.digest == hex_digest and m.environment == environment:
            return m
    raise CAError(ErrorCode.NOT_FOUND, f"no model {hex_digest} in environment '{environment}'")
