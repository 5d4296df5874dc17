"""Schema-driven fuzzing of the CA API (schemathesis) on PostgreSQL: no input yields a 500,
and every answer, problems included, matches the response model the document gives for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from ca.api.app import create_app
from ca.wiring import open_runtime
from tests.integration.conftest import settings_for

TOKENS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(
    tmp_path_factory: pytest.TempPathFactory, hsm_config: Any, pg_module_url: str
) -> Iterator[Any]:
    work: Path = tmp_path_factory.mktemp("fuzz")
    s = settings_for(
        work, pg_module_url, hsm_config, enroll_rate_per_second=100000, enroll_burst=100000
    )
    rt = open_runtime(s, create=True)
    rt.authority.initialise("ec-p256", "ec-p256")
    TOKENS["operator"] = rt.api_tokens.create("fuzzer", "operator")[0]
    rt.registry.add_scope("read_book")
    rt.registry.add_model("ab" * 32, "m", "prod")
    rt.registry.register_agent(
        "fuzz-agent", "o@example.com", "prod", "m", ["read_book"], ["ab" * 32], ["cd" * 32]
    )
    app = create_app(s, runtime_factory=lambda: rt)
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    rt.engine.dispose()


def test_no_input_causes_a_server_error(api_schema: Any) -> None:
    """Every documented operation, fed schema-generated and boundary inputs."""
    headers = {"Authorization": f"Bearer {TOKENS['operator']}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
            if response.status_code >= 400:
                ctype = {k.lower(): v for k, v in response.headers.items()}["content-type"]
                ctype = ctype[0] if isinstance(ctype, list) else ctype
                assert ctype.startswith("application/problem+json"), (case, response.content)

        run()
