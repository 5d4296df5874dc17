"""Signed models into the inventory, through the real CA, OCSP responder and gateway (0052).

``model-signing`` (its CLI, from ``.venv-oms``) signs a model directory made here, with a key
and with a certificate chain made here. ``agentca model add --signature`` accepts the bundle,
refuses it once one byte of one file changed and refuses a bundle from an untrusted key; the
API does the same checks on the bundle; an environment of ``signed_model_environments``
refuses unsigned entries; the ledger and ``GET /v1/models`` (which the gateway's
``CAInventory`` reads) say who signed; an agent running the signed model enrolls and its
certificate carries model-signing's digest for the directory; the order-book gateway allows it.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent import Agent, CAResponseError, RuntimeProvenance, generate_key
from examples.scenario import ENVIRONMENT, MODEL_TYPE, OFFICER, Scenario
from gateway.inventory import CAInventory
from tests.integration.http import call
from tests.support import oms_signer
from tests.support.attestor import Orchestrator, write_attestors
from tests.support.oms_reference import oms_root
from wire.extensions import read_agent_extensions

pytestmark = pytest.mark.skipif(
    not oms_signer.available(),
    reason="no .venv-oms with model-signing: run scripts/oms-reference-venv.sh",
)
SECURE = "secure-eu"  # matches signed_model_environments = secure-*
NAME = "SignedModelAgent"
ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
ORCH = Orchestrator("orchestrator.prod", "orch-prod-1")


def make_model(where: Path) -> Path:
    (where / "weights").mkdir(parents=True)
    (where / "config.json").write_text('{"architecture":"demo"}\n')
    (where / "weights" / "shard-1.bin").write_bytes(bytes(range(256)) * 512)
    (where / "weights" / "shard-2.bin").write_bytes(b"\x07" * 3000)
    return where


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    work = tmp_path_factory.mktemp("signed") / "work"
    s = Scenario.create(work, pg_module_url)
    keys = work / "keys"
    keys.mkdir(parents=True)
    oms_signer.write_key(keys / "acme.key")
    oms_signer.write_key(keys / "mallory.key")
    chain = oms_signer.write_chain(keys, "acmeca")
    oms_signer.write_chain(keys, "rogue")  # a root nobody configured
    s.env["AGENTCA_MODEL_PRODUCERS"] = f"acme={keys}/acme.key.pub,acme-ca={chain['root']}"
    s.env["AGENTCA_SIGNED_MODEL_ENVIRONMENTS"] = "secure-*"
    s.env["AGENTCA_ATTESTORS_FILE"] = str(
        write_attestors(work / "attestors", [(ORCH, [ENVIRONMENT])])
    )
    s.setup()
    model = make_model(work / "signed-model")
    oms_signer.sign_with_key(model, keys / "acme.key", model / "model.sig")
    with s.servers(max_status_age=1.0, inventory_refresh=0.3):
        yield s


def keys(s: Scenario) -> Path:
    return s.work / "keys"


def signed_model(s: Scenario) -> Path:
    return s.work / "signed-model"


def agentca(s: Scenario, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [s.agentca, *args], env=s.env, capture_output=True, text=True, timeout=120, check=False
    )


def add_signed(s: Scenario, model: Path, sig: Path, env: str) -> subprocess.CompletedProcess[str]:
    return agentca(
        s, "model", "add", "--signature", str(sig), "--model", str(model),
        "--model-type", MODEL_TYPE, "--environment", env, "--json",
    )  # fmt: skip


def ledger(s: Scenario, pg_url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.text("SELECT body FROM ledger_entries WHERE event = 'model.added' ORDER BY seq")
            ).all()
    finally:
        engine.dispose()
    return [json.loads(r[0]) for r in rows]


def test_a_key_signed_model_is_admitted_with_its_producer(
    scenario: Scenario, pg_module_url: str
) -> None:
    model = signed_model(scenario)
    done = add_signed(scenario, model, model / "model.sig", SECURE)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)
    # the certified digest is model-signing's digest of the directory (signature left out)
    assert entry["digest"] == oms_root(model, ignore=["model.sig"]).hex()
    assert entry["digest_scheme"] == "oms-v1"
    assert (entry["signed"], entry["signed_by"], entry["signature_method"]) == (
        True,
        "acme",
        "key",
    )
    assert "signature verified: producer acme" in done.stderr
    body = next(b for b in ledger(scenario, pg_module_url) if b.get("environment") == SECURE)
    sig = body["data"]["signature"] if "data" in body else body["signature"]
    assert sig["producer"] == "acme" and sig["method"] == "key" and sig["files"] == 3


def test_one_changed_byte_is_refused(scenario: Scenario, tmp_path: Path) -> None:
    copy = shutil.copytree(signed_model(scenario), tmp_path / "model")
    data = bytearray((copy / "weights" / "shard-2.bin").read_bytes())
    data[1234] ^= 0x40
    (copy / "weights" / "shard-2.bin").write_bytes(bytes(data))
    done = add_signed(scenario, copy, copy / "model.sig", "secure-us")
    assert done.returncode != 0
    assert "'weights/shard-2.bin' does not match its signed digest" in done.stderr
    listed = json.loads(
        scenario.cli("model", "list", "--json", "--environment", "secure-us") or "[]"
    )
    assert listed == []


def test_a_bundle_from_an_untrusted_key_is_refused(scenario: Scenario, tmp_path: Path) -> None:
    copy = shutil.copytree(signed_model(scenario), tmp_path / "model")
    oms_signer.sign_with_key(copy, keys(scenario) / "mallory.key", copy / "model.sig")
    done = add_signed(scenario, copy, copy / "model.sig", "secure-us")
    assert done.returncode != 0
    assert "does not verify with any configured producer key" in done.stderr


def test_an_unsigned_model_is_refused_where_signatures_are_required(scenario: Scenario) -> None:
    digest = oms_root(signed_model(scenario), ignore=["model.sig"]).hex()
    done = agentca(
        scenario, "model", "add", digest, "--scheme", "oms-v1", "--model-type", MODEL_TYPE,
        "--environment", "secure-ap",
    )  # fmt: skip
    assert done.returncode != 0
    assert "takes only models with a verified signature" in done.stderr
    body = {"digest": digest, "model_type": MODEL_TYPE, "environment": "secure-ap",
            "digest_scheme": "oms-v1"}  # fmt: skip
    reply = call(scenario.ca_url, "POST", "/v1/models", body, token=scenario.operator_token)
    assert reply.status == 403, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    assert json.loads(reply.body)["type"].endswith("policy-refused")


def test_the_api_verifies_a_certificate_chain_bundle(scenario: Scenario, tmp_path: Path) -> None:
    chains = keys(scenario)
    model = make_model(tmp_path / "model")
    (model / "tokenizer.json").write_text("{}\n")  # another model than the CLI tests'
    chain = {k: chains / f"acmeca-{v}" for k, v in
             [("root", "root.pem"), ("intermediate", "inter.pem"), ("leaf", "leaf.pem"),
              ("key", "leaf.key")]}  # fmt: skip
    oms_signer.sign_with_certificate(model, chain, tmp_path / "model.sig")
    bundle = (tmp_path / "model.sig").read_text()
    digest = oms_root(model).hex()
    body = {"digest": digest, "model_type": MODEL_TYPE, "environment": SECURE,
            "digest_scheme": "oms-v1", "signature": bundle}  # fmt: skip
    # a signed digest other than the one asked for: refused with the reason
    wrong = body | {"digest": "ab" * 32}
    reply = call(scenario.ca_url, "POST", "/v1/models", wrong, token=scenario.operator_token)
    assert reply.status == 403 and b"the signature is for model " + digest.encode() in reply.body
    # a chain to a root nobody configured
    rogue = {k: chains / f"rogue-{v}" for k, v in
             [("root", "root.pem"), ("intermediate", "inter.pem"), ("leaf", "leaf.pem"),
              ("key", "leaf.key")]}  # fmt: skip
    oms_signer.sign_with_certificate(model, rogue, tmp_path / "rogue.sig")
    reply = call(scenario.ca_url, "POST", "/v1/models",
                 body | {"signature": (tmp_path / "rogue.sig").read_text()},
                 token=scenario.operator_token)  # fmt: skip
    assert reply.status == 403 and b"leads to no trusted producer" in reply.body, reply.body
    # a payload that is not an OMS statement is refused before anything is recorded
    tampered = json.loads(bundle)
    tampered["dsseEnvelope"]["payload"] = base64.b64encode(b'{"_type": "x"}').decode()
    reply = call(scenario.ca_url, "POST", "/v1/models", body | {"signature": json.dumps(tampered)},
                 token=scenario.operator_token)  # fmt: skip
    assert reply.status == 403 and b"does not verify with the signing certificate" in reply.body
    reply = call(scenario.ca_url, "POST", "/v1/models", body, token=scenario.operator_token)
    assert reply.status == 201, reply.body
    entry = json.loads(reply.body)
    assert (entry["signed_by"], entry["signature_method"], entry["signer"]) == (
        "acme-ca",
        "certificate",
        "CN=acmeca model release",
    )


def test_the_gateway_inventory_shows_who_signed(scenario: Scenario) -> None:
    digest = oms_root(signed_model(scenario), ignore=["model.sig"]).hex()
    inv = CAInventory(
        scenario.ca_url, scenario.gateway_token, background=False, signed_environments=["prod*"]
    )
    signed = inv.entry(digest, SECURE)
    assert signed is not None and signed.signed and signed.signed_by == "acme"
    unsigned_digest = scenario.cli("model", "digest", str(scenario.model_dir))
    unsigned = inv.entry(unsigned_digest, ENVIRONMENT)
    assert unsigned is not None and not unsigned.signed and unsigned.signed_by is None
    # a gateway that requires signed entries for production refuses the CA's unsigned one
    assert not inv.authorised(unsigned_digest, ENVIRONMENT)
    assert CAInventory(scenario.ca_url, scenario.gateway_token, background=False).authorised(
        unsigned_digest, ENVIRONMENT
    )


def test_an_agent_on_the_signed_model_is_certified_with_its_digest_and_allowed(
    scenario: Scenario,
) -> None:
    model = signed_model(scenario)
    done = add_signed(scenario, model, model / "model.sig", ENVIRONMENT)
    assert done.returncode == 0, done.stderr
    digest = json.loads(done.stdout)["digest"]
    prompt = scenario.cli("prompt", "digest", str(scenario.prompt_file))
    scenario.cli(
        "agent", "register", NAME, "--officer", OFFICER, "--environment", ENVIRONMENT,
        "--model-type", MODEL_TYPE, "--model-digest", digest, "--prompt-digest", prompt,
        "--scope", "submit_limit_order",
    )  # fmt: skip
    runtime = RuntimeProvenance(
        MODEL_TYPE,
        model,
        prompt_path=scenario.prompt_file,
        model_scheme="oms-v1",
        model_ignore=("model.sig",),
        recheck_seconds=0.0,
    )
    a = Agent(NAME, generate_key(), runtime, scenario.ca_url)
    a.enroll(scenario.cli("token", "create", NAME))
    assert a.credential is not None
    certified = read_agent_extensions(a.credential.certificate).provenance.model_digest.hex
    statement = json.loads((model / "model.sig").read_text())["dsseEnvelope"]["payload"]
    signed_root = json.loads(base64.b64decode(statement))["subject"][0]["digest"]["sha256"]
    assert certified == signed_root == oms_root(model, ignore=["model.sig"]).hex()
    reply = a.request("POST", scenario.gateway_url + "/orders", json_body=ORDER)
    assert reply.status == 201, reply.body


def test_an_attested_agent_on_the_signed_model_passes_the_attested_route(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Both links at once: the model entry is the producer's signed digest, and the
    orchestrator attests that this key runs it; the gateway's attested route admits the agent
    and a gateway that takes only signed entries for the environment authorises its model. The
    same signed model without an attestation is refused the attested route."""
    model = signed_model(scenario)
    digest = oms_root(model, ignore=["model.sig"]).hex()
    listed = [json.loads(line) for line in scenario.cli("model", "list", "--json").splitlines()]
    if not any(e["digest"] == digest and e["environment"] == ENVIRONMENT for e in listed):
        done = add_signed(scenario, model, model / "model.sig", ENVIRONMENT)
        assert done.returncode == 0, done.stderr
    prompt = scenario.cli("prompt", "digest", str(scenario.prompt_file))
    name = "AttestedSignedAgent"
    scenario.cli(
        "agent", "register", name, "--officer", OFFICER, "--environment", ENVIRONMENT,
        "--model-type", MODEL_TYPE, "--model-digest", digest, "--prompt-digest", prompt,
        "--scope", "query_anonymized_order_book", "--require-attestation",
    )  # fmt: skip

    def agent(attestation: Path | None) -> Agent:
        runtime = RuntimeProvenance(
            MODEL_TYPE, model, prompt_path=scenario.prompt_file, model_scheme="oms-v1",
            model_ignore=("model.sig",), recheck_seconds=0.0,
        )  # fmt: skip
        return Agent(name, generate_key(), runtime, scenario.ca_url, attestation=attestation)

    statement_file = tmp_path / "attestation.jwt"
    a = agent(statement_file)
    statement = ORCH.attest(name, ENVIRONMENT, a.key.public_key(), a.provenance.current().to_wire())
    statement_file.write_text(statement + "\n")
    statement_file.chmod(0o600)
    a.enroll(scenario.cli("token", "create", name))
    assert a.credential is not None
    ext = read_agent_extensions(a.credential.certificate)
    assert ext.provenance.model_digest.hex == digest
    assert ext.attestation is not None and ext.attestation.attestor == ORCH.attestor
    inventory = CAInventory(
        scenario.ca_url, scenario.gateway_token, background=False,
        signed_environments=[ENVIRONMENT],
    )  # fmt: skip
    entry = inventory.entry(digest, ENVIRONMENT)
    assert (
        entry is not None
        and entry.signed_by == "acme"
        and inventory.authorised(digest, ENVIRONMENT)
    )
    reply = a.request("GET", scenario.gateway_url + "/attested/book")
    assert reply.status == 200, reply.body
    assert json.loads(reply.body)["attested_by"] == ORCH.attestor

    # the same signed model, self-declared: the registration refuses it, and a registration
    # that does not require attestation gets a certificate the attested route refuses
    bare = agent(None)
    with pytest.raises(CAResponseError) as info:
        bare.enroll(scenario.cli("token", "create", name))
    assert any(r.startswith("attestation-missing") for r in info.value.problem["reasons"])
    scenario.cli("agent", "update", name, "--no-require-attestation")
    bare.enroll(scenario.cli("token", "create", name))
    refused = bare.request("GET", scenario.gateway_url + "/attested/book")
    assert refused.status == 403, refused.body
    assert json.loads(refused.body)["type"].endswith("provenance-not-attested")
