"""Review 17b: ``signed_model_environments`` as the registry applies it, and what a later
unsigned ``model add`` of a signed digest can do (decision 0052).

Environments are identifiers: the registry refuses ``Production`` next to ``production``
(case, look-alikes, ``ca.names.identifier_key``). The signature requirement must match them
the same way, or a setting spelled ``Production`` silently protects nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ca.errors import CAError, ErrorCode
from ca.registry import Registry
from gateway.inventory import _requires
from tests.unit.core_support import make_core
from wire.oms import Resource, root_digest
from wire.oms_signature import VerifiedModel

BUNDLE = b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'
FILE = hashlib.sha256(b"weights").digest()
ROOT = root_digest([FILE])


def verified() -> VerifiedModel:
    """A bundle as the verifier would have accepted it (the registry trusts its caller)."""
    return VerifiedModel(
        producer="acme",
        method="key",
        signer="ab" * 32,
        certificate_sha256="",
        root=ROOT,
        resources=(Resource("weights.bin", FILE, -1),),
        ignore_paths=("model.sig",),
        bundle_sha256=hashlib.sha256(BUNDLE).hexdigest(),
    )


def registry(tmp_path: Path, patterns: list[str]) -> Registry:
    core = make_core(tmp_path)
    return Registry(core.sessions, core.clock, patterns)


@pytest.mark.parametrize(
    ("patterns", "environment"),
    [
        (["Production"], "production"),
        (["production"], "PRODUCTION"),
        (["Prod-*"], "prod-eu"),
        (["prod-*"], "PROD-us"),
    ],
)
def test_the_requirement_matches_environments_as_the_registry_names_them(
    tmp_path: Path, patterns: list[str], environment: str
) -> None:
    reg = registry(tmp_path, patterns)
    with pytest.raises(CAError) as refused:
        reg.add_model(ROOT.hex(), "demo", environment, digest_scheme="oms-v1")
    assert refused.value.code is ErrorCode.POLICY_REFUSED
    assert reg.list_models(environment) == []


def test_other_environments_stay_open(tmp_path: Path) -> None:
    reg = registry(tmp_path, ["production", "prod-*"])
    assert reg.add_model(ROOT.hex(), "demo", "staging", digest_scheme="oms-v1").signed_by is None
    assert not reg.requires_signature("production-test")  # an exact name is no prefix


def test_an_unsigned_add_cannot_downgrade_a_signed_entry(tmp_path: Path) -> None:
    reg = registry(tmp_path, [])
    reg.add_model(
        ROOT.hex(), "demo", "dev", digest_scheme="oms-v1", signature=verified(), bundle=BUNDLE
    )
    with pytest.raises(CAError) as refused:
        reg.add_model(ROOT.hex(), "demo", "dev", digest_scheme="oms-v1")
    assert refused.value.code is ErrorCode.CONFLICT
    (entry,) = reg.list_models("dev")
    assert (entry.signed_by, entry.signature_sha256) == ("acme", verified().bundle_sha256)


def test_retire_then_unsigned_re_add_is_refused_where_signatures_are_required(
    tmp_path: Path,
) -> None:
    reg = registry(tmp_path, ["production"])
    reg.add_model(
        ROOT.hex(), "demo", "production", digest_scheme="oms-v1", signature=verified(),
        bundle=BUNDLE,
    )  # fmt: skip
    reg.retire_model(ROOT.hex(), "production")
    with pytest.raises(CAError) as refused:
        reg.add_model(ROOT.hex(), "demo", "production", digest_scheme="oms-v1")
    assert refused.value.code is ErrorCode.POLICY_REFUSED
    (entry,) = reg.list_models("production")
    assert not entry.active and entry.signed_by == "acme"


@pytest.mark.parametrize(
    ("patterns", "environment"), [(["Production"], "production"), (["Prod-*"], "prod-eu")]
)
def test_the_gateway_requirement_ignores_case_too(patterns: list[str], environment: str) -> None:
    assert _requires(patterns, environment)
