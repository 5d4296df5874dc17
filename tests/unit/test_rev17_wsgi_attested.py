"""Review 17: a WSGI route whose attestation rule is an empty set of attestors.

``Verifier.verify(require_attestation=frozenset())`` denies every certificate (no attestor is
accepted). The WSGI shell must apply the same rule, not turn an empty set (an operator's list
of accepted attestors that came out empty) into "no attestation required".
"""

from __future__ import annotations

from pathlib import Path

from werkzeug.test import Client

from gateway import StaticInventory, StatusChecker, Verifier
from gateway.wsgi import AgentGatewayMiddleware
from ocsp.decision import CertState
from tests.support.gateway_pki import Clock, Pki, make_agent, model_digest, signed_view


def ok_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [])  # type: ignore[operator]
    return [b"ok"]


def test_an_empty_attestor_set_denies_self_declared_provenance(tmp_path: Path) -> None:
    pki, clock = Pki.create(), Clock()
    agent = make_agent(tmp_path / "m", pki, clock)
    cert = agent.credential.certificate  # type: ignore[union-attr]
    verifier = Verifier(
        [pki.root],
        StaticInventory([model_digest().hex()]),
        StatusChecker(refresh=False, clock=clock, fetch=False),
        clock=clock,
        audience=("http://gw.local",),
        trust_domain="agentca.local",
    )
    staple = pki.ocsp_response(cert, CertState.GOOD, this_update=clock())

    def send(rule: frozenset[str]) -> int:
        app = AgentGatewayMiddleware(
            ok_app,
            verifier,
            {"POST /orders": "submit_limit_order"},
            attested={"POST /orders": rule},
        )
        view, headers = signed_view(agent, staple=staple)
        resp = Client(app).post(
            "/orders?venue=x", headers=headers, data=view.body, base_url="http://gw.local"
        )
        return resp.status_code

    # the verifier itself: an empty set accepts no attestor
    view, _ = signed_view(agent, staple=staple)
    d = verifier.decide(view, "submit_limit_order", require_attestation=frozenset())
    assert not d.allowed and d.denial is not None
    assert d.denial.check.value == "provenance-not-attested"
    assert send(frozenset({"orchestrator.prod"})) == 403  # self-declared: denied
    assert send(frozenset()) == 403  # was 200: the empty set meant "nothing required"
