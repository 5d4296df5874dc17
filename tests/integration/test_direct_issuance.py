"""Direct issuance (``POST /v1/certificates``) goes through the enrollment policy (issue 9.2).

Before the fix an operator token got certificates for an unregistered ``RogueBot``, a scope
outside the catalogue, a stranger as officer and a CSR without provenance. Now each is refused
with every reason and nothing written; only an ``issuer-verbatim`` token may sign outside
policy, and the ledger says so. The app runs in-process on PostgreSQL and the shared SoftHSM2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from ca.api.app import create_app
from ca.extensions import Digest, Provenance, build_agent_csr, read_agent_extensions
from ca.store.models import ApiToken, Certificate, LedgerEntryRow
from ca.wiring import Runtime, open_runtime
from tests.integration.conftest import settings_for
from tests.integration.http import Reply, call, serve_in_thread

MODEL = "a1" * 32
OTHER_MODEL = "b2" * 32
PROMPT = "c3" * 32
OFFICER = "officer@bank.example"


class Env:
    def __init__(self, base: str, rt: Runtime) -> None:
        self.base, self.rt = base, rt
        self.tokens = {
            "op": rt.api_tokens.create("ops", "operator")[0],
            "verbatim": rt.api_tokens.create("signer", "issuer-verbatim")[0],
        }

    def call(self, method: str, path: str, body: Any = None, token: str = "op") -> Reply:
        return call(self.base, method, path, body, token=self.tokens[token])

    def counts(self) -> tuple[int, int, int]:
        """Certificate rows (a burned serial is a row), ledger entries, API tokens."""
        with self.rt.sessions() as s:
            return tuple(  # type: ignore[return-value]
                int(s.scalar(select(func.count()).select_from(t)) or 0)
                for t in (Certificate, LedgerEntryRow, ApiToken)
            )

    def last_issued(self) -> tuple[str, dict[str, Any]]:
        with self.rt.sessions() as s:
            row = s.scalars(
                select(LedgerEntryRow)
                .where(LedgerEntryRow.event == "certificate.issued")
                .order_by(LedgerEntryRow.seq.desc())
                .limit(1)
            ).one()
            return row.actor, json.loads(row.body)


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, pg_module_url: str, hsm_config: Any
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("direct")
    settings = settings_for(work, pg_module_url, hsm_config)
    rt = open_runtime(settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    with serve_in_thread(create_app(settings, runtime_factory=lambda: rt)) as base:
        e = Env(base, rt)
        for scope in ("query_order_book", "submit_limit_order"):
            assert e.call("POST", "/v1/scopes", {"name": scope}).status == 201
        for digest in (MODEL, OTHER_MODEL):
            body = {"digest": digest, "model_type": "claude-x", "environment": "prod"}
            assert e.call("POST", "/v1/models", body).status == 201
        r = e.call(
            "POST",
            "/v1/agents",
            {
                "name": "exec-agent",
                "officer": OFFICER,
                "environment": "prod",
                "model_type": "claude-x",
                "scopes": ["query_order_book", "submit_limit_order"],
                "model_digests": [MODEL],
                "prompt_digests": [PROMPT],
                "organization": "Bank",
            },
        )
        assert r.status == 201, r.body
        yield e
    rt.engine.dispose()


def _csr(provenance: bool = True, model: str = MODEL) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    if provenance:
        prov = Provenance("claude-x", Digest.sha256_hex(model), Digest.sha256_hex(PROMPT))
        csr = build_agent_csr(key, "exec-agent", prov)
    else:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .sign(key, hashes.SHA256())
        )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _explicit(**override: Any) -> dict[str, Any]:
    """An operator's fully explicit body (as the report's requests were)."""
    body = {
        "csr": _csr(),
        "agent": "exec-agent",
        "scopes": ["submit_limit_order"],
        "model_type": "claude-x",
        "model_digest": MODEL,
        "prompt_digest": PROMPT,
        "officer": OFFICER,
        "environment": "prod",
        "validity_seconds": 600,
    }
    body.update(override)
    return {k: v for k, v in body.items() if v is not None}


def _problem(r: Reply, status: int, slug: str) -> dict[str, Any]:
    assert r.status == status, (r.status, r.body)
    assert r.content_type == "application/problem+json"
    problem: dict[str, Any] = r.json
    assert problem["type"].endswith("/" + slug), problem
    return problem


def test_within_policy_contents_come_from_the_registration(env: Env) -> None:
    r = env.call("POST", "/v1/certificates", {"csr": _csr(), "agent": "exec-agent"})
    assert r.status == 201, r.body
    ext = read_agent_extensions(x509.load_pem_x509_certificate(r.json["certificate_pem"].encode()))
    assert ext.accountability.officer == OFFICER and ext.accountability.organization == "Bank"
    assert ext.authorization.scopes == ("query_order_book", "submit_limit_order")
    actor, body = env.last_issued()
    assert actor == "api:ops" and body["serial"] == r.json["serial"]
    assert body["outside_policy"] is False and "policy_reasons" not in body


def test_explicit_contents_that_agree_with_policy_are_issued(env: Env) -> None:
    r = env.call("POST", "/v1/certificates", _explicit(csr=_csr(provenance=False)))
    assert r.status == 201, r.body
    assert r.json["scopes"] == ["submit_limit_order"]
    assert env.last_issued()[1]["outside_policy"] is False


REFUSED = {
    "unregistered agent": ({"agent": "RogueBot"}, ["no agent is registered as 'RogueBot'"]),
    "scope outside the catalogue": (
        {"scopes": ["submit_limit_order", "halt_trading"]},
        [
            "scopes not in the catalogue: halt_trading",
            "scopes beyond the registration: halt_trading",
        ],
    ),
    "stranger as officer": (
        {"officer": "stranger@evil.example"},
        [f"officer 'stranger@evil.example' is not the registration's officer '{OFFICER}'"],
    ),
    "CSR without provenance": (
        {
            "csr": _csr(provenance=False),
            "model_type": None,
            "model_digest": None,
            "prompt_digest": None,
        },
        ["the CSR carries no agent provenance attribute"],
    ),
    "provenance not the CSR's": (
        {"model_digest": OTHER_MODEL},
        [
            "the provenance given differs from the CSR's provenance attribute",
            f"model digest {OTHER_MODEL} is not allowed for this agent",
        ],
    ),
    "other environment": (
        {"environment": "staging"},
        ["environment 'staging' is not the registration's environment 'prod'"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_outside_policy_is_refused_with_every_reason_and_writes_nothing(
    env: Env, case: str
) -> None:
    override, reasons = REFUSED[case]
    before = env.counts()
    problem = _problem(
        env.call("POST", "/v1/certificates", _explicit(**override)), 403, "policy-refused"
    )
    assert problem["reasons"] == reasons
    assert "refused" in problem["detail"]
    assert env.counts() == before  # no certificate row, no serial, no ledger entry


def test_the_reported_request_names_all_its_reasons(env: Env) -> None:
    before = env.counts()
    body = _explicit(
        agent="RogueBot",
        scopes=["halt_trading"],
        officer="stranger@evil.example",
        csr=_csr(provenance=False),
    )
    problem = _problem(env.call("POST", "/v1/certificates", body), 403, "policy-refused")
    assert problem["reasons"] == [
        "no agent is registered as 'RogueBot'",
        "scopes not in the catalogue: halt_trading",
    ]
    assert env.counts() == before


def test_operator_token_may_not_issue_outside_policy(env: Env) -> None:
    before = env.counts()
    body = _explicit(agent="RogueBot", scopes=["halt_trading"], outside_policy=True)
    problem = _problem(env.call("POST", "/v1/certificates", body), 403, "forbidden")
    assert "issuer-verbatim" in problem["detail"]
    # even a request policy would grant: the flag itself needs the role
    _problem(env.call("POST", "/v1/certificates", _explicit(outside_policy=True)), 403, "forbidden")
    assert env.counts() == before


def test_issuer_verbatim_signs_verbatim_and_the_ledger_says_outside_policy(env: Env) -> None:
    body = _explicit(
        agent="RogueBot",
        scopes=["halt_trading"],
        officer="stranger@evil.example",
        csr=_csr(provenance=False),
        outside_policy=True,
    )
    r = env.call("POST", "/v1/certificates", body, token="verbatim")
    assert r.status == 201, r.body
    ext = read_agent_extensions(x509.load_pem_x509_certificate(r.json["certificate_pem"].encode()))
    assert ext.authorization.scopes == ("halt_trading",)
    assert ext.accountability.officer == "stranger@evil.example"
    actor, entry = env.last_issued()
    assert actor == "api:signer" and entry["serial"] == r.json["serial"]
    assert entry["outside_policy"] is True
    assert entry["policy_reasons"] == [
        "no agent is registered as 'RogueBot'",
        "scopes not in the catalogue: halt_trading",
    ]
    with env.rt.sessions() as s:
        reserved = s.scalars(
            select(LedgerEntryRow.body).where(LedgerEntryRow.event == "certificate.reserved")
        ).all()
    assert any(
        json.loads(b)["serial"] == r.json["serial"] and json.loads(b)["outside_policy"]
        for b in reserved
    )


def test_issuer_verbatim_needs_every_content_and_is_otherwise_under_policy(env: Env) -> None:
    before = env.counts()
    body = {"csr": _csr(), "agent": "exec-agent", "outside_policy": True}
    problem = _problem(
        env.call("POST", "/v1/certificates", body, token="verbatim"), 400, "bad-request"
    )
    assert "missing: scopes, officer, environment" in problem["detail"]
    rogue = _explicit(agent="RogueBot")
    _problem(env.call("POST", "/v1/certificates", rogue, token="verbatim"), 403, "policy-refused")
    assert env.counts() == before
    # the role issues and nothing else
    _problem(env.call("GET", "/v1/agents", token="verbatim"), 403, "forbidden")
    _problem(env.call("POST", "/v1/scopes", {"name": "x_y"}, token="verbatim"), 403, "forbidden")


def test_an_operator_cannot_mint_an_issuer_verbatim_token(env: Env) -> None:
    before = env.counts()
    body = {"name": "escalate", "role": "issuer-verbatim"}
    problem = _problem(env.call("POST", "/v1/api-tokens", body), 403, "forbidden")
    assert "local CLI" in problem["detail"]
    assert env.counts() == before


def test_openapi_documents_the_flag(env: Env) -> None:
    from ca.api.openapi import build_document

    doc = build_document()
    op = doc["paths"]["/v1/certificates"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["outside_policy"]["type"] == "boolean"
    assert schema["required"] == ["csr", "agent"]
    assert "403" in op["responses"]
    repo_copy = Path(__file__).parents[2].joinpath("docs", "openapi.json").read_text()
    assert json.loads(repo_copy) == doc
