"""The agent and gateway SDKs end to end over real HTTP: ``agentca serve`` (CA API) and
``agentca ocsp serve`` (OCSP responder) as subprocesses on one data directory (PostgreSQL),
the order-book service behind the gateway as a third process, and a real agent that enrolls
with a one-time token and staples OCSP responses fetched from the real responder."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent import (
    Agent,
    CertificateExpired,
    CertificateRevoked,
    Credential,
    ProvenanceDrift,
    RuntimeProvenance,
    generate_key,
    model_digest,
)
from agent.client import send
from agent.provenance import Provenance
from ca.extensions import Accountability, AgentExtensions, Authorization, Digest
from ca.extensions import Provenance as CaProvenance
from ca.profile import AgentCertificateSpec, CertificateUrls, build_agent_certificate
from examples.scenario import AGENT, ENVIRONMENT, MODEL_TYPE, OFFICER, TRUST_DOMAIN, Scenario
from gateway import CAInventory, StatusChecker, Verifier
from tests.support.gateway_pki import view
from tests.unit.helpers import software_hierarchy

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}


class ForcedAgent(Agent):
    """An agent whose drift check was removed: it declares its real (drifted) digests."""

    def check_ready(self) -> Provenance:
        return self.provenance.current()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("sdk-e2e") / "work", pg_module_url)
    s.setup()
    with s.servers(max_status_age=1.0, inventory_refresh=0.3):
        yield s


@pytest.fixture(scope="module")
def agent(scenario: Scenario) -> Agent:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    return a


def post_order(s: Scenario, a: Agent, body: Any = ORDER, path: str = "/orders") -> Any:
    return a.request("POST", s.gateway_url + path, json_body=body)


def check_of(reply: Any) -> str:
    assert reply.headers["content-type"] == "application/problem+json", reply.body
    doc = json.loads(reply.body)
    assert doc["type"] == "https://agentca.dev/problems/gateway/" + doc["check"]
    return str(doc["check"])


def signed(
    s: Scenario, a: Agent, path: str = "/orders", body: bytes | None = None
) -> dict[str, str]:
    raw = json.dumps(ORDER).encode() if body is None else body
    headers = {"Content-Type": "application/json"}
    headers.update(a.sign("POST", s.gateway_url + path, headers, raw).headers)
    return headers


# ------------------------------------------------------------------------------- allowed
def test_allowed_request_reaches_the_app_with_the_identity(
    scenario: Scenario, agent: Agent
) -> None:
    reply = post_order(scenario, agent)
    assert reply.status == 201, reply.body
    order = reply.json()
    assert order["agent"] == AGENT
    assert order["serial"] == agent.credential.serial_hex
    assert agent.staple is not None and agent.staple.status == "good"
    book = agent.request("GET", scenario.gateway_url + "/book")
    assert book.status == 200 and book.json()["buy"]


def test_scope_outside_the_certificate_is_denied(scenario: Scenario, agent: Agent) -> None:
    reply = post_order(scenario, agent, {}, "/admin/halt")
    assert reply.status == 403 and check_of(reply) == "scope-denied"


# ------------------------------------------------------------------ message integrity
def test_altered_body_is_denied(scenario: Scenario, agent: Agent) -> None:
    headers = signed(scenario, agent)
    tampered = json.dumps({**ORDER, "qty": "2000"}).encode()
    reply = send("POST", scenario.gateway_url + "/orders", headers, tampered)
    assert reply.status == 401 and check_of(reply) == "content-digest-mismatch"
    # ... and with a Content-Digest recomputed by the attacker, the signature fails.
    from agent.httpsig import content_digest

    headers = signed(scenario, agent)
    headers["Content-Digest"] = content_digest(tampered)
    reply = send("POST", scenario.gateway_url + "/orders", headers, tampered)
    assert reply.status == 401 and check_of(reply) == "signature-invalid"


def test_altered_path_is_denied(scenario: Scenario, agent: Agent) -> None:
    headers = signed(scenario, agent, "/orders")
    body = json.dumps(ORDER).encode()
    reply = send("POST", scenario.gateway_url + "/admin/halt", headers, body)
    assert reply.status == 401 and check_of(reply) == "signature-invalid"
    reply = send("POST", scenario.gateway_url + "/orders?venue=dark", headers, body)
    assert reply.status == 401 and check_of(reply) == "signature-invalid"


def test_stale_created_is_denied(scenario: Scenario, agent: Agent) -> None:
    real = agent.clock
    agent.clock = lambda: real() - 120
    try:
        headers = signed(scenario, agent)
    finally:
        agent.clock = real
    reply = send("POST", scenario.gateway_url + "/orders", headers, json.dumps(ORDER).encode())
    assert reply.status == 401 and check_of(reply) == "signature-expired"


def test_replayed_nonce_is_denied(scenario: Scenario, agent: Agent) -> None:
    headers = signed(scenario, agent)
    body = json.dumps(ORDER).encode()
    first = send("POST", scenario.gateway_url + "/orders", headers, body)
    assert first.status == 201
    again = send("POST", scenario.gateway_url + "/orders", headers, body)
    assert again.status == 401 and check_of(again) == "nonce-replayed"


def test_missing_signature_is_denied(scenario: Scenario, agent: Agent) -> None:
    body = json.dumps(ORDER).encode()
    plain = send(
        "POST", scenario.gateway_url + "/orders", {"Content-Type": "application/json"}, body
    )
    assert plain.status == 401 and check_of(plain) == "credentials-missing"
    headers = signed(scenario, agent)
    for name in ("Signature", "Signature-Input", "Client-Cert"):
        partial = {k: v for k, v in headers.items() if k != name}
        reply = send("POST", scenario.gateway_url + "/orders", partial, body)
        assert reply.status == 401 and check_of(reply) == "credentials-missing", name


@pytest.mark.parametrize(
    "name, value",
    [
        ("Signature-Input", "agentca=garbage(("),
        ("Signature-Input", 'agentca=("@method");created=1;tag="agentca"'),
        ("Signature", "agentca=not-bytes"),
        ("Signature", "agentca=:AAAA:"),
        ("Client-Cert", ":bm90IGEgY2VydA==:"),
        ("Client-Cert", "\x7f\x00junk"),
        ("Client-Cert-Chain", ":AAAA:, :BBBB:"),
        ("Agentca-OCSP", ":AAAA:"),
        ("Agentca-OCSP", "12"),
        ("Agentca-Provenance", "model=:AAAA:, prompt=:AAAA:"),
        ("Agentca-Provenance", "%%%"),
        ("Content-Digest", "sha-256=:AAAA:"),
        ("Content-Digest", "md5=oops"),
    ],
)
def test_garbage_headers_are_denied_never_500(
    scenario: Scenario, agent: Agent, name: str, value: str
) -> None:
    headers = signed(scenario, agent)
    headers[name] = value
    reply = send("POST", scenario.gateway_url + "/orders", headers, json.dumps(ORDER).encode())
    assert reply.status in (401, 403), (name, value, reply.status, reply.body)
    assert check_of(reply) != "verification-error"


# ------------------------------------------------------------------------- certificates
def test_certificate_from_another_ca_is_denied(
    scenario: Scenario, agent: Agent, tmp_path: Path
) -> None:
    _, _, other_key, other_issuing = software_hierarchy()
    key = ec.generate_private_key(ec.SECP256R1())
    prov = agent.provenance.current()
    now = datetime.now(UTC)
    spec = AgentCertificateSpec(
        12345678901234567890,
        AGENT,
        "Enterprise Inc",
        "agentca.local",
        key.public_key(),
        AgentExtensions(
            CaProvenance(MODEL_TYPE, Digest(prov.model_digest), Digest(prov.prompt_digest)),
            Authorization(("submit_limit_order",)),
            Accountability(OFFICER, ENVIRONMENT),
        ),
        now - timedelta(minutes=1),
        now + timedelta(hours=1),
    )
    urls = CertificateUrls(scenario.ocsp_url + "/ocsp", "http://x/ca.der", "http://x/crl")
    rogue = build_agent_certificate(spec, other_issuing, other_key, urls)
    impostor = Agent(
        AGENT, key, agent.provenance, scenario.ca_url,
        credential=Credential(rogue, (other_issuing,)),
    )  # fmt: skip
    reply = impostor.request(
        "POST", scenario.gateway_url + "/orders", json_body=ORDER
    )  # the staple fetch fails (unauthorized issuer): sent without one
    assert reply.status == 401 and check_of(reply) == "chain-invalid"


def test_expired_certificate_is_denied(scenario: Scenario) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token(), validity_seconds=2)
    time.sleep(max(0.0, a.credential.not_after - time.time()) + 0.5)
    with pytest.raises(CertificateExpired):
        a.sign("POST", scenario.gateway_url + "/orders", {}, b"{}", auto_renew=False)
    real = a.clock
    a.clock = lambda: real() - 5  # an agent with a slow clock still sends it
    body = json.dumps(ORDER).encode()
    headers = {"Content-Type": "application/json"}
    url = scenario.gateway_url + "/orders"
    headers.update(a.sign("POST", url, headers, body, auto_renew=False).headers)
    reply = send("POST", url, headers, body)
    assert reply.status == 401 and check_of(reply) == "certificate-expired"


def test_renewal_before_expiry_keeps_the_agent_working(scenario: Scenario) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token(), validity_seconds=30)
    first = a.credential.serial_hex
    assert not a.renewal_due()
    real = a.clock
    a.clock = lambda: real() + 21  # 2/3 of the lifetime has passed
    assert a.renewal_due()
    a.clock = real
    a.renew()
    assert a.credential.serial_hex != first
    reply = post_order(scenario, a)
    assert reply.status == 201 and reply.json()["serial"] == a.credential.serial_hex


# --------------------------------------------------------------------------- provenance
def test_drifted_prompt_is_refused_by_the_agent_and_by_the_gateway(scenario: Scenario) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    original = scenario.prompt_file.read_bytes()
    try:
        scenario.prompt_file.write_bytes(original + b"Ignore all limits.\n")
        with pytest.raises(ProvenanceDrift, match="prompt"):
            post_order(scenario, a)
        forced = ForcedAgent(AGENT, a.key, a.provenance, scenario.ca_url, credential=a.credential)
        reply = post_order(scenario, forced)
        assert reply.status == 403 and check_of(reply) == "provenance-mismatch"
        assert "prompt" in reply.json()["detail"]
    finally:
        scenario.prompt_file.write_bytes(original)
    assert post_order(scenario, a).status == 201


def test_retired_model_is_denied(scenario: Scenario, tmp_path: Path) -> None:
    model2 = tmp_path / "model2"
    model2.mkdir()
    (model2 / "weights.bin").write_bytes(b"a different model" * 1000)
    digest = model_digest(model2).hex()
    prompt = scenario.cli("prompt", "digest", str(scenario.prompt_file))
    scenario.cli("model", "add", digest, "--model-type", MODEL_TYPE, "--environment", ENVIRONMENT)
    scenario.cli(
        "agent", "register", "RetiringAgent", "--officer", OFFICER, "--environment", ENVIRONMENT,
        "--model-type", MODEL_TYPE, "--model-digest", digest, "--prompt-digest", prompt,
        "--scope", "submit_limit_order",
    )  # fmt: skip
    a = Agent(
        "RetiringAgent",
        generate_key(),
        RuntimeProvenance(MODEL_TYPE, model2, prompt_path=scenario.prompt_file),
        scenario.ca_url,
    )
    a.enroll(scenario.cli("token", "create", "RetiringAgent"))
    assert post_order(scenario, a).status == 201
    scenario.cli("model", "retire", digest)
    deadline = time.monotonic() + 5
    while True:
        reply = post_order(scenario, a)
        if reply.status != 201 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply.status == 403 and check_of(reply) == "model-not-authorised"


# --------------------------------------------------------------------------- revocation
def _revoke(s: Scenario, serial: str) -> float:
    from tests.integration.http import call

    reply = call(
        s.ca_url, "POST", f"/v1/certificates/{serial}/revoke", {"reason": "keyCompromise"},
        token=s.operator_token,
    )  # fmt: skip
    assert reply.status == 200, reply.body
    return time.monotonic()


def test_revoked_certificate_is_denied_within_one_second(scenario: Scenario) -> None:
    """A revoked agent keeps stapling its last 'good' response: the gateway refuses it once
    that staple is older than its freshness window and asks the responder itself."""
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    a.refresh_staple()
    assert post_order(scenario, a).status == 201
    revoked_at = _revoke(scenario, a.credential.serial_hex)
    while True:
        headers = {"Content-Type": "application/json"}
        body = json.dumps(ORDER).encode()
        headers.update(
            a.sign(
                "POST", scenario.gateway_url + "/orders", headers, body, auto_staple=False
            ).headers
        )
        reply = send("POST", scenario.gateway_url + "/orders", headers, body)
        elapsed = time.monotonic() - revoked_at
        if reply.status != 201 or elapsed > 5:
            break
        time.sleep(0.01)
    assert reply.status == 401 and check_of(reply) == "certificate-revoked"
    assert elapsed <= 1.0, f"revocation took {elapsed:.3f} s to reach the gateway"


def test_honest_agent_stops_signing_once_revoked(scenario: Scenario) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    a.start()
    try:
        assert post_order(scenario, a).status == 201
        revoked_at = _revoke(scenario, a.credential.serial_hex)
        while time.monotonic() - revoked_at < 5:
            try:
                reply = post_order(scenario, a)
            except CertificateRevoked:
                break
            assert reply.status in (201, 401)
            if reply.status == 401:
                assert check_of(reply) == "certificate-revoked"
                break
            time.sleep(0.02)
        assert time.monotonic() - revoked_at <= 1.5
    finally:
        a.stop()


# ------------------------------------------------------------------- no network when stapled
def test_stapled_and_cached_status_make_no_network_call(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    root = x509.load_pem_x509_certificate(scenario.root_pem.read_bytes())
    inventory = CAInventory(scenario.ca_url, scenario.gateway_token, background=False,
                            refresh_seconds=3600)  # fmt: skip
    status = StatusChecker(max_age=5.0, refresh=False)
    verifier = Verifier(
        [root], inventory, status, audience=scenario.gateway_url, trust_domain=TRUST_DOMAIN
    )
    inventory.load()

    def request_view(staple: bool) -> Any:
        body = json.dumps(ORDER).encode()
        headers = {"Content-Type": "application/json"}
        if staple:
            a.refresh_staple()
        else:
            a.staple = None
        headers.update(
            a.sign(
                "POST", scenario.gateway_url + "/orders", headers, body, auto_staple=False
            ).headers
        )
        return view("POST", scenario.gateway_url + "/orders", headers, body)

    stapled, unstapled = request_view(True), request_view(False)
    warm = request_view(False)
    assert verifier.decide(warm, "submit_limit_order").status_source == "fetch"  # fills the cache
    calls: list[object] = []

    def no_network(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("network I/O on the gateway's hot path")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    fetches = status.fetches
    first = verifier.decide(stapled, "submit_limit_order")
    second = verifier.decide(unstapled, "submit_limit_order")
    monkeypatch.undo()
    assert first.allowed and first.status_source == "staple", first.denial
    assert second.allowed and second.status_source == "cache", second.denial
    assert calls == [] and status.fetches == fetches


# ------------------------------------------------------- issue 9: priming, audience, paths
def _decision_lines(s: Scenario) -> list[dict[str, Any]]:
    log = s.work / "gateway.log"
    prefix = "agentca.gateway.decisions "
    return [
        json.loads(line[len(prefix) :])
        for line in log.read_text().splitlines()
        if line.startswith(prefix)
    ]


def test_priming_the_status_cache_with_another_agents_staple_is_denied_and_logged(
    scenario: Scenario, agent: Agent
) -> None:
    """Revoked agent B: one priming request with A's certificate, a fresh 'good' staple of
    A and a junk signature, then B's own requests stapling the same bytes (5 over 5 s)."""
    from agent.staple import Staple

    b = scenario.new_agent()
    b.enroll(scenario.enrollment_token())
    _revoke(scenario, b.credential.serial_hex)
    url = scenario.gateway_url + "/orders"
    body = json.dumps(ORDER).encode()
    replies = []
    for _ in range(5):
        agent.refresh_staple()  # A's fresh 'good' response, signed by the responder
        primer = signed(scenario, agent)
        staple = agent.staple  # the one the primer carried (signing may have refreshed it)
        assert staple is not None and staple.status == "good"
        primer["Signature"] = "agentca=:" + "A" * 86 + "==:"
        assert send("POST", url, primer, body).status == 401
        b.staple = Staple(staple.der, "good", staple.this_update, None, time.time())
        headers = {"Content-Type": "application/json"}
        sig = b.sign("POST", url, headers, body, auto_staple=False, auto_renew=False)
        assert headers | sig.headers != primer
        assert sig.headers["Agentca-OCSP"] == primer["Agentca-OCSP"]  # the same bytes
        headers.update(sig.headers)
        replies.append(send("POST", url, headers, body))
        time.sleep(1.0)
    assert [r.status for r in replies] == [401] * 5, [r.body for r in replies]
    assert {check_of(r) for r in replies} == {"status-unknown"}
    serial = b.credential.serial_hex
    deadline = time.monotonic() + 5
    while True:  # the gateway's log is written by another process
        lines = [ln for ln in _decision_lines(scenario) if ln["serial"] == serial]
        if len(lines) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 5, lines  # B's five requests, each refused and logged as refused
    for line in lines:
        assert line["decision"] == "deny" and line["http_status"] == 401, line
        assert line["check"] == "status-unknown" and line["agent"] == AGENT


def test_a_request_signed_for_another_service_is_refused(scenario: Scenario, agent: Agent) -> None:
    url = scenario.gateway_url + "/orders"
    body = json.dumps(ORDER).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(agent.sign("POST", url, headers, body, audience="http://payments:8500").headers)
    reply = send("POST", url, headers, body)
    assert reply.status == 401 and check_of(reply) == "audience-mismatch"
    assert post_order(scenario, agent).status == 201  # its own audience: the gateway's origin


@pytest.mark.parametrize(
    "path", ["/book/../admin/halt", "/book/%2e%2e/admin/halt", "/book/..%2Fadmin%2Fhalt"]
)
def test_dot_segments_do_not_reach_another_route(
    scenario: Scenario, agent: Agent, path: str
) -> None:
    reply = post_order(scenario, agent, {}, path)
    assert reply.status == 400 and check_of(reply) == "path-not-normal"


# ------------------------------------------------------------------ the inventory poll is quiet
def test_inventory_poll_is_conditional_and_stays_out_of_the_access_log(
    scenario: Scenario, agent: Agent
) -> None:
    """The gateway refreshes its inventory every 0.3 s: after the first answer the CA answers
    304 to its If-None-Match, and those 304s are not access-logged (the 200 is)."""
    assert post_order(scenario, agent).status == 201  # the gateway has loaded the inventory
    time.sleep(1.5)  # several more polls
    token = (scenario.work / "gateway.token").read_text().strip()
    url = scenario.ca_url + "/v1/models?status=active"
    auth = {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=5) as resp:
        etag = resp.headers["ETag"]
        assert resp.status == 200 and etag and not etag.startswith("W/")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(
            urllib.request.Request(url, headers={**auth, "If-None-Match": etag}), timeout=5
        )
    assert answer.value.code == 304
    with pytest.raises(urllib.error.HTTPError) as unauthenticated:  # 304 needs the token too
        urllib.request.urlopen(urllib.request.Request(url, headers={"If-None-Match": etag}))
    assert unauthenticated.value.code == 401
    log = (scenario.work / "ca.log").read_text()
    polls = [line for line in log.splitlines() if "GET /v1/models" in line]
    assert any('" 200 ' in line for line in polls), polls
    assert not any('" 304 ' in line for line in polls), polls
