"""The gateway behind three real WSGI servers (issue 13): the standard library's wsgiref
(which invents ``CONTENT_TYPE=text/plain`` for a request without one), werkzeug and gunicorn.
A signed GET without a body passes under each, a signed POST too, an unsigned GET does not."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from agent import Agent
from agent.client import send
from examples.scenario import TRUST_DOMAIN, Scenario, free_port

pytestmark = pytest.mark.integration

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("wsgi-servers") / "work", pg_module_url)
    s.setup()
    with s.servers(gateway=False):
        yield s


@pytest.fixture(scope="module")
def agent(scenario: Scenario) -> Agent:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    return a


@pytest.mark.parametrize("server", ["wsgiref", "werkzeug", "gunicorn"])
def test_signed_get_without_a_body_passes(scenario: Scenario, agent: Agent, server: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable, "-m", "examples.orderbook", "--server", server, "--port", str(port),
        "--ca-url", scenario.ca_url, "--trust-anchor", str(scenario.root_pem),
        "--inventory-token-file", str(scenario.work / "gateway.token"),
        "--audience", url, "--trust-domain", TRUST_DOMAIN,
    ]  # fmt: skip
    with scenario._process(f"orderbook-{server}", args, url + "/health"):
        book = agent.request("GET", url + "/book")
        assert book.status == 200, book.body
        assert set(json.loads(book.body)) == {"buy", "sell"}
        placed = agent.request("POST", url + "/orders", json_body=ORDER)
        assert placed.status == 201, placed.body
        unsigned = send("GET", url + "/book", {}, b"", 10.0)
        assert unsigned.status == 401
        assert json.loads(unsigned.body)["check"] == "credentials-missing"
