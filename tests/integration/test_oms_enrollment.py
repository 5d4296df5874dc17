"""OMS model digests through the real CA, OCSP responder and gateway (decision 0049).

The model's OMS root digest is computed by ``agentca model digest --scheme oms-v1`` and
checked against ``model-signing``'s own; the inventory records it under ``oms-v1``; an agent
running ``RuntimeProvenance(model_scheme="oms-v1")`` enrolls and gets an AgentProvenance v2
certificate that the gateway accepts and ``agentca cert show`` decodes; an agent of the old
scheme keeps working next to it; a CSR that relabels the OMS digest as an old-scheme digest
(a downgrade) is refused with problem+json and leaves no certificate record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import Agent, CAResponseError, RuntimeProvenance, generate_key
from agent.provenance import Provenance
from examples.scenario import ENVIRONMENT, MODEL_TYPE, OFFICER, Scenario
from tests.support.oms_reference import oms_root
from wire.extensions import ModelDigestScheme, read_agent_extensions

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
NAME = "OmsAgent"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("oms") / "work", pg_module_url)
    s.setup()
    model = s.work / "oms-model"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"architecture":"demo"}\n')
    (model / "weights" / "shard-1.bin").write_bytes(bytes(range(256)) * 512)
    (model / "weights" / "empty.bin").write_bytes(b"")
    (model / ".gitattributes").write_text("*.bin filter=lfs\n")  # ignored by OMS
    (model / "model.sig").write_text("{}")  # the signature, left out with --ignore
    with s.servers(max_status_age=1.0, inventory_refresh=0.3):
        yield s


def oms_model(s: Scenario) -> Path:
    return s.work / "oms-model"


@pytest.fixture(scope="module")
def oms_digest(scenario: Scenario) -> str:
    digest = scenario.cli(
        "model", "digest", str(oms_model(scenario)), "--scheme", "oms-v1", "--ignore", "model.sig"
    )
    assert digest == oms_root(oms_model(scenario), ignore=["model.sig"]).hex()
    prompt = scenario.cli("prompt", "digest", str(scenario.prompt_file))
    added = json.loads(
        scenario.cli(
            "model", "add", digest, "--model-type", MODEL_TYPE, "--environment", ENVIRONMENT,
            "--scheme", "oms-v1", "--json",
        )
    )  # fmt: skip
    assert added["digest_scheme"] == "oms-v1"
    scenario.cli(
        "agent", "register", NAME, "--officer", OFFICER, "--environment", ENVIRONMENT,
        "--model-type", MODEL_TYPE, "--model-digest", digest, "--prompt-digest", prompt,
        "--scope", "submit_limit_order",
    )  # fmt: skip
    return digest


def oms_runtime(s: Scenario) -> RuntimeProvenance:
    return RuntimeProvenance(
        MODEL_TYPE,
        oms_model(s),
        prompt_path=s.prompt_file,
        model_scheme="oms-v1",
        model_ignore=("model.sig",),
        recheck_seconds=0.0,
    )


def test_oms_agent_enrolls_and_is_allowed(scenario: Scenario, oms_digest: str) -> None:
    a = Agent(NAME, generate_key(), oms_runtime(scenario), scenario.ca_url)
    a.enroll(scenario.cli("token", "create", NAME))
    assert a.credential is not None
    prov = read_agent_extensions(a.credential.certificate).provenance
    assert prov.model_digest_scheme is ModelDigestScheme.OMS
    assert prov.model_digest.hex == oms_digest
    shown = json.loads(scenario.cli("show", a.credential.serial_hex, "--json"))
    assert json.dumps(shown).count('"model_digest_scheme": "oms-v1"') == 1, shown
    reply = a.request("POST", scenario.gateway_url + "/orders", json_body=ORDER)
    assert reply.status == 201, reply.body


def test_old_scheme_agent_keeps_working(scenario: Scenario, oms_digest: str) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    assert a.credential is not None
    prov = read_agent_extensions(a.credential.certificate).provenance
    assert prov.model_digest_scheme is ModelDigestScheme.AGENTCA_MANIFEST
    shown = json.loads(scenario.cli("show", a.credential.serial_hex, "--json"))
    assert "model_digest_scheme" not in json.dumps(shown)
    reply = a.request("POST", scenario.gateway_url + "/orders", json_body=ORDER)
    assert reply.status == 201, reply.body


class Relabelled(RuntimeProvenance):
    """Claims the OMS-registered digest as if it were an agentca-manifest digest."""

    def current(self) -> Provenance:
        real = super().current()
        return Provenance(
            real.model_type,
            real.model_digest,
            real.prompt_digest,
            real.config_digest,
            model_digest_scheme=ModelDigestScheme.AGENTCA_MANIFEST,
        )


def test_scheme_downgrade_is_refused_without_a_record(scenario: Scenario, oms_digest: str) -> None:
    before = scenario.cli("list", "--agent", NAME, "--json").splitlines()
    runtime = Relabelled(
        MODEL_TYPE,
        oms_model(scenario),
        prompt_path=scenario.prompt_file,
        model_scheme="oms-v1",
        model_ignore=("model.sig",),
        recheck_seconds=0.0,
    )
    a = Agent(NAME, generate_key(), runtime, scenario.ca_url)
    with pytest.raises(CAResponseError) as info:
        a.enroll(scenario.cli("token", "create", NAME))
    assert info.value.status == 403
    assert info.value.problem["type"].endswith("policy-refused"), info.value.problem
    reasons = info.value.problem["reasons"]
    assert any(
        f"model digest {oms_digest} is registered under scheme oms-v1, the CSR claims "
        "agentca-manifest-v1" in r
        for r in reasons
    ), reasons
    assert scenario.cli("list", "--agent", NAME, "--json").splitlines() == before


def test_a_digest_keeps_its_scheme(scenario: Scenario) -> None:
    """Re-adding a digest under the other scheme is a conflict, even once it is retired; the
    API refuses an unknown scheme with problem+json."""
    from tests.integration.http import call

    digest = "ee" * 32
    body = {"digest": digest, "model_type": MODEL_TYPE, "environment": ENVIRONMENT}
    reply = call(scenario.ca_url, "POST", "/v1/models", body | {"digest_scheme": "oms-v1"},
                 token=scenario.operator_token)  # fmt: skip
    assert reply.status == 201, reply.body
    assert json.loads(reply.body)["digest_scheme"] == "oms-v1"
    scenario.cli("model", "retire", digest)
    reply = call(scenario.ca_url, "POST", "/v1/models", body, token=scenario.operator_token)
    assert reply.status == 409, reply.body
    assert "registered under scheme oms-v1, not agentca-manifest-v1" in reply.body.decode()
    reply = call(scenario.ca_url, "POST", "/v1/models", body | {"digest_scheme": "md5-tree"},
                 token=scenario.operator_token)  # fmt: skip
    assert reply.status == 400 and reply.headers["content-type"] == "application/problem+json"
    again = json.loads(
        scenario.cli(
            "model", "add", digest, "--model-type", MODEL_TYPE, "--environment", ENVIRONMENT,
            "--scheme", "oms-v1", "--json",
        )
    )  # fmt: skip
    assert again["digest_scheme"] == "oms-v1" and again["status"] == "active"
