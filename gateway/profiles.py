"""The two RFC 9421 profiles the gateway verifies: ``agentca`` and ``wimse``.

Both run through the same RFC 9421 core (:mod:`gateway.httpsig`) and the same checks (chain,
status, replay, provenance, scope); a profile only says which ``tag`` selects the signature,
which components it must cover, which parameters it may not carry and how ``wimse-aud`` is
matched.

``wimse`` follows draft-ietf-wimse-http-signature-07, section 3: ``@method``, ``@path`` and
``@query`` always (-07 replaced ``@request-target`` with them, WGLC #297); ``Content-Type``,
``Content-Digest``, ``Authorization``, ``Txn-Token`` and ``Workload-Identity-Token`` when
present; ``created``, ``expires``, ``nonce``, ``tag="wimse-workload-to-workload"`` and
``wimse-aud`` required; no ``keyid``, no ``alg``. agentca adds its own identity headers to
what must be covered, since the gateway reads provenance, chain and status from them (an
uncovered header could be swapped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Profile:
    """What one profile requires of a signature."""

    name: str
    tag: str
    base: tuple[str, ...]  # components every signature must cover
    if_present: tuple[str, ...]  # headers that must be covered when the request has them
    forbidden: tuple[str, ...] = ()  # signature parameters that must not appear
    audience_may_name_path: bool = False  # wimse-aud may be the target URI without query


AGENTCA: Final = Profile(
    name="agentca",
    tag="agentca",
    base=("@method", "@path", "@query", "client-cert", "agentca-provenance"),
    if_present=("client-cert-chain", "agentca-ocsp", "content-type", "content-digest"),
)

WIMSE_TAG: Final = "wimse-workload-to-workload"
WIT_HEADER: Final = "workload-identity-token"

WIMSE: Final = Profile(
    name="wimse",
    tag=WIMSE_TAG,
    base=("@method", "@path", "@query", "client-cert", "agentca-provenance"),
    if_present=(
        "content-type",
        "content-digest",
        "authorization",
        "txn-token",
        WIT_HEADER,
        "client-cert-chain",
        "agentca-ocsp",
    ),
    forbidden=("keyid", "alg"),
    audience_may_name_path=True,
)

PROFILES: Final = {p.name: p for p in (AGENTCA, WIMSE)}


def profiles_named(
    names: str | tuple[str, ...] | list[str] | frozenset[str],
) -> tuple[Profile, ...]:
    """The profiles called ``names`` (in order); ``ValueError`` for an unknown name."""
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in PROFILES]
    if unknown or not wanted:
        raise ValueError(f"profiles: choose from {', '.join(PROFILES)} (got {wanted!r})")
    return tuple(PROFILES[n] for n in dict.fromkeys(wanted))


def refusal_status(status: int, profile: str | None) -> int:
    """The HTTP status of a refusal: a WIMSE request gets 400 where agentca answers 401
    (draft-ietf-wimse-http-signature 3.5: 401 needs a WWW-Authenticate scheme the WIT
    cannot use); 403 and the other statuses are the same for both profiles."""
    return 400 if status == 401 and profile == WIMSE.name else status
