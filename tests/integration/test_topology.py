"""The production topology as one deployment (issue 14, "Must show"; decision 0035).

A PostgreSQL primary (scripts/with-postgres.sh) and a ``pg_basebackup`` streaming replica;
the CA host's units (``agentca-heartbeat``, ``agentca-ca``, ``agentca-crl``) and two responder
hosts' ``agentca-ocsp`` (one reading the primary, one the replica), each started from its
unit's ExecStart, Environment and EnvironmentFile lines with a settings file made from
deploy/agentca.example.toml and an environment file made from deploy/systemd/agentca.env,
every process connected as its least-privilege role (``agentca db roles``); Debian's nginx
runs deploy/nginx/agentca.conf in front of the CA API (TLS) and of the replica's responder.

An agent enrolls through nginx with the SDK, is answered "good" by OCSP GET through nginx
(a HIT on repeat), is revoked through the CA API behind nginx, and is seen revoked through
nginx within 3 s (docs/deployment.md), by both responders within 1 s (decision 0029) and in
the CRL publisher's CRL. Then the replica is killed (``pg_ctl stop -m immediate``), a second
agent is revoked during the outage, and the replica is started again: every path is sampled
throughout and none answers "good" for a revoked certificate past its bound.
"""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from agent import Agent, RuntimeProvenance, generate_key, model_digest, prompt_digest_file
from ca.store.roles import RoleNames
from tests.conftest import PgServer, skip_or_fail
from tests.integration.http import call
from tests.integration.servers import free_port, wait_http
from tests.support.deploy import Host, env_file, settings_file, unit_process
from tests.support.nginx import NGINX, Nginx, running_nginx, tls_pair
from tests.support.pg_replica import on_server, streaming_replica
from tests.support.pg_roles import drop_roles

RESPONDER_BOUND = 1.0  # status_freshness, end to end on a replica (decision 0029)
CACHE_BOUND = 3.0  # + s-maxage on nginx's whole-second clock (docs/deployment.md, "nginx")
AGENT = "TopologyAgent-01"
MODEL_TYPE = "claude-3.5-sonnet-v2"

pytestmark = [
    pytest.mark.topology,
    pytest.mark.skipif(
        not Path(NGINX).exists() and not os.environ.get("CI"), reason="nginx is not installed"
    ),
]


@dataclass
class Topology:
    """The running deployment and what the tests need to drive it."""

    work: Path
    ca: Host
    replica: PgServer
    nginx: Nginx
    api: str  # https://127.0.0.1:port, the CA API through nginx
    responders: dict[str, str]  # "primary" / "replica" -> http://127.0.0.1:port (direct)
    operator_token: str
    roles: RoleNames
    servers: dict[str, str]  # "primary" / "replica" -> a superuser URL of the test database
    tokens: list[str] = field(default_factory=list)

    def sessions(self, server: str) -> set[str]:
        """The roles of the client sessions open on the test database of ``server``."""
        engine = sa.create_engine(self.servers[server], poolclass=NullPool)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT DISTINCT usename FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                return {str(name) for name in rows.scalars()}
        finally:
            engine.dispose()


def _as(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=None).render_as_string(False)


def _host(
    work: Path, name: str, settings: dict[str, str | int | bool], env: dict[str, str]
) -> Host:
    etc = work / name
    etc.mkdir()
    return Host(settings_file(etc / "agentca.toml", settings), env_file(etc / "agentca.env", env))


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory,
    pg_module_url: str,
    _pg_server_session: PgServer | None,
) -> Iterator[Topology]:
    if _pg_server_session is None:
        skip_or_fail("no controllable PostgreSQL server: run under scripts/with-postgres.sh")
    assert _pg_server_session is not None
    work = tmp_path_factory.mktemp("topology")
    tag = secrets.token_hex(3)
    roles = RoleNames(f"t{tag}_owner", f"t{tag}_ca", f"t{tag}_ocsp", f"t{tag}_aud")
    ca_port, ocsp_primary, ocsp_replica, http_port, https_port = (free_port() for _ in range(5))
    api = f"https://127.0.0.1:{https_port}"
    with ExitStack() as stack:
        replica = stack.enter_context(streaming_replica(_pg_server_session))
        stack.callback(drop_roles, pg_module_url, roles)  # after every process has stopped
        on_replica = on_server(replica.url, pg_module_url)
        common: dict[str, str | int | bool] = {
            "data_dir": str(work / "var-lib-agentca"),
            "db_owner_role": roles.owner,
            "db_writer_role": roles.writer,
            "db_ocsp_role": roles.ocsp,
            "db_auditor_role": roles.auditor,
            "public_base_url": api,
            "ocsp_url": f"http://127.0.0.1:{http_port}/ocsp",
            "workers": 1,
        }
        ca = _host(
            work, "ca-host",
            {
                **common,
                "database_url": _as(pg_module_url, roles.writer),
                "migration_database_url": _as(pg_module_url, roles.owner),
                "read_database_url": _as(on_replica, roles.writer),
                "trusted_proxy_hops": 1,
            },
            {"AGENTCA_LISTEN_PORT": str(ca_port)},
        )  # fmt: skip
        responder_hosts = {
            name: _host(
                work,
                f"ocsp-{name}-host",
                {
                    **common,
                    "database_url": _as(url, roles.ocsp),
                    "ocsp_database_url": _as(url, roles.ocsp),
                },
                {"AGENTCA_OCSP_LISTEN_PORT": str(port)},
            )
            for name, url, port in (
                ("primary", pg_module_url, ocsp_primary),
                ("replica", on_replica, ocsp_replica),
            )
        }
        # docs/deployment.md "Database roles": roles (superuser), schema (owner), grants
        admin = {"AGENTCA_DATABASE_URL": pg_module_url}
        admin["AGENTCA_MIGRATION_DATABASE_URL"] = pg_module_url
        ca.cli("db", "roles", extra=admin)
        ca.cli("db", "upgrade")
        ca.cli("db", "roles", extra=admin)
        ca.cli("init")  # as the writer
        _register(ca, work)
        operator = ca.cli("apitoken", "create", "ops", "--role", "operator")
        tokens = [ca.cli("token", "create", AGENT, "--ttl", "15m") for _ in range(2)]

        for unit in ("agentca-heartbeat", "agentca-ca", "agentca-crl"):
            stack.enter_context(unit_process(unit, ca, work / f"{unit}.log"))
        for name, host in responder_hosts.items():
            stack.enter_context(unit_process("agentca-ocsp", host, work / f"ocsp-{name}.log"))
        responders = {
            "primary": f"http://127.0.0.1:{ocsp_primary}",
            "replica": f"http://127.0.0.1:{ocsp_replica}",
        }
        wait_http(f"http://127.0.0.1:{ca_port}/health", 60)
        for base in responders.values():
            wait_http(base + "/health", 60)
        nginx = stack.enter_context(
            running_nginx(
                work / "nginx",
                f"127.0.0.1:{ca_port}",
                f"127.0.0.1:{ocsp_replica}",  # the cache in front of the replica's responder
                tls_pair(work),
                ports=(http_port, https_port),
            )
        )
        servers = {"primary": pg_module_url, "replica": on_replica}
        yield Topology(work, ca, replica, nginx, api, responders, operator, roles, servers, tokens)


def _register(ca: Host, work: Path) -> None:
    model, prompt = work / "model", work / "prompt.txt"
    model.mkdir()
    (model / "config.json").write_text('{"architecture":"topology","layers":2}\n')
    prompt.write_text("You place limit orders only.\n")
    digest = model_digest(model).hex()
    ca.cli("scope", "add", "submit_limit_order")
    ca.cli("model", "add", digest, "--model-type", MODEL_TYPE, "--environment", "production")
    ca.cli(
        "agent", "register", AGENT, "--officer", "officer@example.org",
        "--environment", "production", "--model-type", MODEL_TYPE, "--model-digest", digest,
        "--prompt-digest", prompt_digest_file(prompt).hex(), "--scope", "submit_limit_order",
    )  # fmt: skip


# ---------------------------------------------------------------------------------- clients
def _state(body: bytes) -> str:
    response = ocsp.load_der_ocsp_response(body)
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status.name
    return response.certificate_status.name


def nginx_get(topo: Topology, der: bytes) -> tuple[str, str]:
    """OCSP GET through nginx: (answer, X-Cache-Status)."""
    path = "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe="")
    conn = http.client.HTTPConnection(topo.nginx.http, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return f"HTTP {resp.status}", resp.getheader("X-Cache-Status", "")
        return _state(body), resp.getheader("X-Cache-Status", "")
    finally:
        conn.close()


def direct_post(base: str, der: bytes) -> tuple[str, str]:
    """OCSP POST straight to a responder (no cache on the way): (answer, "")."""
    req = urllib.request.Request(
        base + "/ocsp", data=der, headers={"Content-Type": "application/ocsp-request"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return _state(resp.read()), ""


@dataclass(frozen=True)
class Sample:
    sent: float  # time.monotonic() when the request was sent
    path: str
    state: str
    cache: str


class Sampler:
    """One thread per path, each asking again as soon as it has its answer, until stopped."""

    def __init__(self, probes: dict[str, Callable[[], tuple[str, str]]]) -> None:
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name, probe), daemon=True)
            for name, probe in probes.items()
        ]

    def _run(self, name: str, probe: Callable[[], tuple[str, str]]) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                state, cache = probe()
            except (OSError, http.client.HTTPException) as exc:  # a refused or cut connection
                state, cache = f"error {type(exc).__name__}", ""
            self.samples.append(Sample(sent, name, state, cache))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def of(self, path: str, after: float = float("-inf")) -> list[Sample]:
        return [s for s in list(self.samples) if s.path == path and s.sent > after]


def _until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(0.1)


def _enroll(topo: Topology, monkeypatch: pytest.MonkeyPatch) -> tuple[x509.Certificate, bytes]:
    """A new agent enrolls through nginx (TLS) with the SDK; its certificate and an OCSP
    request for it, once both responders' paths answer "good"."""
    monkeypatch.setenv("SSL_CERT_FILE", str(topo.work / "server.pem"))  # trust nginx's cert
    runtime = RuntimeProvenance(
        MODEL_TYPE, topo.work / "model", prompt_path=topo.work / "prompt.txt", recheck_seconds=0
    )
    agent = Agent(AGENT, generate_key("ec-p256"), runtime, topo.api)
    credential = agent.enroll(topo.tokens.pop())
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(credential.certificate, credential.issuer, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    # the replica may not have replayed the issuance yet: "good" once it has
    _until("good through nginx", lambda: nginx_get(topo, der)[0] == "GOOD", 15)
    for base in topo.responders.values():
        _until(f"good from {base}", lambda b=base: direct_post(b, der)[0] == "GOOD", 15)
    return credential.certificate, der


def _revoke(topo: Topology, cert: x509.Certificate) -> float:
    """Revoke through the CA API behind nginx; the monotonic time the commit was answered."""
    serial = format(cert.serial_number, "x")
    reply = call(
        topo.api, "POST", f"/v1/certificates/{serial}/revoke",
        {"reason": "keyCompromise"}, token=topo.operator_token,
    )  # fmt: skip
    assert reply.status == 200, reply.body
    return time.monotonic()


def _probes(
    topo: Topology, der: bytes, prefix: str = ""
) -> dict[str, Callable[[], tuple[str, str]]]:
    return {
        prefix + "nginx": lambda: nginx_get(topo, der),
        prefix + "replica": lambda: direct_post(topo.responders["replica"], der),
        prefix + "primary": lambda: direct_post(topo.responders["primary"], der),
    }


def _first_revoked(samples: list[Sample], committed: float) -> float:
    return min(s.sent for s in samples if s.state == "REVOKED") - committed


# ---------------------------------------------------------------------------------- tests
def test_enroll_through_nginx_revoke_and_see_it_everywhere_within_the_bounds(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = topology
    cert, der = _enroll(topo, monkeypatch)
    assert nginx_get(topo, der) == ("GOOD", "HIT")  # cached: the responder is not asked
    # every service connects as its role: the writer (CA API, CRL publisher, heartbeat) and
    # the OCSP reader on the primary; the OCSP reader and the writer's reads on the replica
    roles = topo.roles
    assert topo.sessions("primary") == {roles.writer, roles.ocsp}
    listed = call(topo.api, "GET", "/v1/agents", token=topo.operator_token)  # a replica read
    assert listed.status == 200 and AGENT in listed.body.decode(), listed.body[:300]
    assert topo.sessions("replica") == {roles.writer, roles.ocsp}
    with Sampler(_probes(topo, der)) as sampler:
        committed = _revoke(topo, cert)
        _until(
            "every path sampled past the cache bound",
            lambda: all(sampler.of(p, committed + CACHE_BOUND + 1.0) for p in ("nginx", "replica")),
            20,
        )
    for path, bound in (("nginx", CACHE_BOUND), ("replica", RESPONDER_BOUND),
                        ("primary", RESPONDER_BOUND)):  # fmt: skip
        late = sampler.of(path, committed + bound)
        assert late and {s.state for s in late} == {"REVOKED"}, (path, late[:5])
        assert _first_revoked(sampler.of(path), committed) <= bound, path
    print(
        "first revoked answer after the commit:",
        {
            p: round(_first_revoked(sampler.of(p), committed), 3)
            for p in ("nginx", "replica", "primary")
        },
    )
    cached = [s for s in sampler.of("nginx", committed + CACHE_BOUND) if s.cache == "HIT"]
    assert cached, "no revoked answer was served from the cache"

    def crl_lists_it() -> bool:
        reply = call(topo.api, "GET", "/crl/issuing.crl")
        if reply.status != 200:
            return False
        crl = x509.load_der_x509_crl(reply.body)
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

    _until("the CRL publisher's CRL lists the revoked certificate", crl_lists_it, 30)


def test_a_replica_killed_and_restarted_never_yields_a_wrong_good(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = topology
    cert, der = _enroll(topo, monkeypatch)
    replica = topo.replica
    with Sampler(_probes(topo, der)) as sampler:
        time.sleep(0.3)
        killed = time.monotonic()
        replica.stop("immediate")
        try:
            committed = _revoke(topo, cert)  # on the primary; the replica cannot replay it
            time.sleep(CACHE_BOUND + 1.0)
        finally:
            restarting = time.monotonic()
            replica.start()
        restarted = time.monotonic()
        _until(
            "the replica's responder answers revoked again",
            lambda: (
                [s.state for s in sampler.of("replica", time.monotonic() - 0.5)][-1:] == ["REVOKED"]
            ),
            30,
        )
        _until("nginx answers revoked", lambda: nginx_get(topo, der)[0] == "REVOKED", 10)
        recovered = time.monotonic()
        time.sleep(1.0)
    outage = [s for s in sampler.of("replica", killed + RESPONDER_BOUND) if s.sent < restarting]
    print(
        "during the outage:",
        {
            p: sorted({s.state for s in sampler.of(p, killed) if s.sent < restarting})
            for p in ("nginx", "replica", "primary")
        },
        f"restart took {restarted - restarting:.2f} s; every path revoked "
        f"{recovered - restarting:.2f} s after it began",
    )
    assert "TRY_LATER" in {s.state for s in outage}, outage[-5:]  # the outage was seen
    for path, bound in (("nginx", CACHE_BOUND), ("replica", RESPONDER_BOUND),
                        ("primary", RESPONDER_BOUND)):  # fmt: skip
        late = sampler.of(path, committed + bound)
        assert late and "GOOD" not in {s.state for s in late}, (path, late[:5])
    assert {s.state for s in sampler.of("primary", committed + RESPONDER_BOUND)} == {"REVOKED"}
    after = sampler.of("replica", recovered)
    assert after and {s.state for s in after} == {"REVOKED"}, after[:5]
