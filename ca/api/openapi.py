"""The OpenAPI 3.1 document of the CA API, served at ``/openapi.json``.

Component schemas are generated from the typed models of :mod:`ca.api.schemas` (the same
ones that validate requests); the paths come from the route table in
:mod:`ca.api.endpoints`. ``docs/openapi.json`` is generated output (``make openapi``, i.e.
``python -m ca.api.openapi docs/openapi.json``); a test fails when it is stale.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from ca.api import schemas
from ca.api.endpoints import REF, paths, ref

openapi = Blueprint("openapi", __name__)


class _Schemas(GenerateJsonSchema):
    """pydantic's generator without a title on every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def component_schemas() -> dict[str, Any]:
    """``components.schemas``: every request model as validated, every answer as sent."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in schemas.REQUEST_MODELS),
        *((m, "serialization") for m in schemas.RESPONSE_MODELS),
    ]
    _, defs = models_json_schema(models, ref_template=REF, schema_generator=_Schemas)
    return dict(defs["$defs"])


def build_document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentca CA API",
            "version": "1",
            "description": "Enrollment, renewal and operation of the agentca certificate "
            "authority. Errors are RFC 9457 application/problem+json.",
        },
        "servers": [{"url": "http://127.0.0.1:8400"}],
        "paths": paths(),
        "components": {
            "schemas": component_schemas(),
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": ref(schemas.Problem)}},
                }
            },
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "aca_api_... operator/auditor/read-only token",
                },
                "enrollmentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "aca_enroll_... one-time token",
                },
            },
        },
    }


@openapi.get("/openapi.json")
def document() -> Response:
    """Serve the OpenAPI document (built once per process: generating it takes ~30 ms)."""
    resp = Response(_served(), mimetype="application/json")
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@functools.cache
def _served() -> str:
    return json.dumps(build_document(), sort_keys=True)


def render() -> str:
    """``docs/openapi.json`` as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(build_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """``python -m ca.api.openapi [PATH]``: write the document to PATH (default stdout)."""
    if len(argv) > 1:
        Path(argv[1]).write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
