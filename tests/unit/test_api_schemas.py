"""The OpenAPI document is generated from the API models: valid, committed fresh, honest about
optional bodies; and the CLI does not pay for pydantic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

from openapi_spec_validator import validate

from ca.api import schemas
from ca.api.openapi import build_document, render
from ca.apitokens import Role

ROOT = Path(__file__).parents[2]
OPTIONAL_BODIES = {
    ("post", "/v1/models/{digest}/retire"),
    ("post", "/v1/certificates/{serial}/revoke"),
    ("post", "/v1/agents/{name}/enrollment-tokens"),
}


def test_the_committed_document_is_fresh() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == render(), "docs/openapi.json is stale: run 'make openapi'"


def test_the_document_is_valid_openapi() -> None:
    validate(build_document())


def test_only_the_optional_bodies_are_not_required() -> None:
    """Retire, revoke and enrollment-tokens accept an empty body; the document said required."""
    required = {
        (method, path): op["requestBody"]["required"]
        for path, ops in build_document()["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    assert {k for k, v in required.items() if not v} == OPTIONAL_BODIES
    assert len(required) > len(OPTIONAL_BODIES)


def test_every_model_is_a_component_and_every_reference_resolves() -> None:
    doc = build_document()
    names = set(doc["components"]["schemas"])
    models = {m.__name__ for m in (*schemas.REQUEST_MODELS, *schemas.RESPONSE_MODELS)}
    assert models == names
    refs = {ref.rsplit("/", 1)[1] for ref in _refs(doc) if ref.startswith("#/components/schemas/")}
    assert refs <= names


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_the_role_names_are_the_roles() -> None:
    assert set(get_args(schemas.RoleName)) == {r.value for r in Role}


def test_the_cli_does_not_import_pydantic_or_the_models() -> None:
    """CLI startup (issue 13): only the API app loads the models."""
    code = (
        "import sys, cli.main, cli.registry_commands\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic' "
        "or m in ('ca.api.schemas', 'ca.api.validation', 'ca.api.openapi', 'ca.api.endpoints'))\n"
        "print(bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_documented_bounds_are_the_enforced_ones() -> None:
    """The document's bounds are those the API enforces (query parameters included)."""
    from ca.api.schemas import MAX_SECONDS
    from ca.apitokens import MIN_TTL

    doc = build_document()
    enroll = doc["paths"]["/v1/enroll"]["post"]["parameters"]
    (validity,) = [p["schema"] for p in enroll if p["name"] == "validity_seconds"]
    assert (validity["minimum"], validity["maximum"]) == (1, MAX_SECONDS)
    ttl = doc["components"]["schemas"]["NewApiToken"]["properties"]["ttl_seconds"]["anyOf"][0]
    assert ttl["minimum"] == MIN_TTL.total_seconds()
