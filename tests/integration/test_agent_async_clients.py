"""The agent SDK's httpx (sync and async) and aiohttp clients, and its asyncio upkeep, over
real HTTP: ``agentca serve`` (CA API), ``agentca ocsp serve`` and the order-book gateway as
subprocesses (examples/scenario.py). Each client places an order (201), and the gateway
refuses the same client's request once its body is changed after signing, and a route
whose scope the certificate lacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agent import Agent, BodyTooLarge
from agent.httpx_auth import AgentHttpxAuth
from examples.scenario import AGENT, Scenario

pytestmark = pytest.mark.integration

ORDER = {"side": "buy", "price": "101.5", "qty": "2"}
TAMPERED = json.dumps({**ORDER, "qty": "2000"}).encode()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[Scenario]:
    s = Scenario.create(tmp_path_factory.mktemp("async-clients") / "work", pg_module_url)
    s.setup()
    with s.servers(max_status_age=1.0, inventory_refresh=0.3):
        yield s


@pytest.fixture(scope="module")
def agent(scenario: Scenario) -> Agent:
    a = scenario.new_agent()
    a.enroll(scenario.enrollment_token())
    return a


def problem_check(status: int, content_type: str, body: bytes) -> str:
    """The ``check`` of a gateway refusal (asserting it is a problem document)."""
    assert content_type == "application/problem+json", (status, body)
    doc = json.loads(body)
    assert doc["type"] == "https://agentca.dev/problems/gateway/" + doc["check"]
    return str(doc["check"])


def tamper(request: httpx.Request) -> None:
    """An httpx request hook: runs after the auth flow signed, changes the bytes sent."""
    request.stream = httpx.ByteStream(TAMPERED)
    request.headers["Content-Length"] = str(len(TAMPERED))


async def atamper(request: httpx.Request) -> None:
    tamper(request)


# ------------------------------------------------------------------------------ httpx sync
def test_httpx_sync_client_places_an_order(scenario: Scenario, agent: Agent) -> None:
    with httpx.Client(auth=AgentHttpxAuth(agent), timeout=10) as client:
        reply = client.post(scenario.gateway_url + "/orders", json=ORDER)
        assert reply.status_code == 201, reply.text
        assert reply.json()["agent"] == AGENT
        assert reply.json()["serial"] == agent.credential.serial_hex
        book = client.get(scenario.gateway_url + "/book")
        assert book.status_code == 200 and book.json()["buy"]


def test_httpx_sync_tampered_body_is_refused(scenario: Scenario, agent: Agent) -> None:
    hooks: dict[str, list[Any]] = {"request": [tamper]}
    with httpx.Client(auth=agent.httpx_auth(), event_hooks=hooks, timeout=10) as client:
        reply = client.post(scenario.gateway_url + "/orders", json=ORDER)
    assert reply.status_code == 401
    check = problem_check(reply.status_code, reply.headers["content-type"], reply.content)
    assert check == "content-digest-mismatch"


def test_httpx_sync_scope_outside_the_certificate_is_refused(
    scenario: Scenario, agent: Agent
) -> None:
    with httpx.Client(auth=agent.httpx_auth(), timeout=10) as client:
        reply = client.post(scenario.gateway_url + "/admin/halt", json={})
    assert reply.status_code == 403
    check = problem_check(reply.status_code, reply.headers["content-type"], reply.content)
    assert check == "scope-denied"


def test_httpx_sync_streamed_body_is_read_and_signed(scenario: Scenario, agent: Agent) -> None:
    raw = json.dumps(ORDER).encode()

    def chunks() -> Iterator[bytes]:
        yield raw[:5]
        yield raw[5:]

    headers = {"Content-Type": "application/json"}
    with httpx.Client(auth=agent.httpx_auth(), timeout=10) as client:
        reply = client.post(scenario.gateway_url + "/orders", content=chunks(), headers=headers)
        assert reply.status_code == 201, reply.text
        assert reply.request.headers["content-length"] == str(len(raw))
        assert "transfer-encoding" not in reply.request.headers
        sent: list[httpx.Request] = []
        hooks: dict[str, list[Any]] = {"request": [sent.append]}
        small = httpx.Client(auth=agent.httpx_auth(max_body=8), event_hooks=hooks, timeout=10)
        with small, pytest.raises(BodyTooLarge):
            small.post(scenario.gateway_url + "/orders", content=chunks(), headers=headers)
        assert sent == []  # refused before anything went out


# ----------------------------------------------------------------------------- httpx async
def test_httpx_async_client_places_an_order_and_is_refused_when_tampered(
    scenario: Scenario, agent: Agent
) -> None:
    url = scenario.gateway_url

    async def body_chunks() -> AsyncIterator[bytes]:
        raw = json.dumps(ORDER).encode()
        yield raw[:7]
        yield raw[7:]

    async def main() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(auth=AgentHttpxAuth(agent), timeout=10) as client:
            placed, book = await asyncio.gather(
                client.post(url + "/orders", json=ORDER), client.get(url + "/book")
            )
            streamed = await client.post(
                url + "/orders",
                content=body_chunks(),
                headers={"Content-Type": "application/json"},
            )
            halt = await client.post(url + "/admin/halt", json={})
        hooks: dict[str, list[Any]] = {"request": [atamper]}
        async with httpx.AsyncClient(auth=agent.httpx_auth(), event_hooks=hooks) as client:
            tampered = await client.post(url + "/orders", json=ORDER)
        return placed, book, streamed, halt, tampered

    placed, book, streamed, halt, tampered = asyncio.run(main())
    assert placed.status_code == 201, placed.text
    assert placed.json()["serial"] == agent.credential.serial_hex
    assert book.status_code == 200, book.text
    assert streamed.status_code == 201, streamed.text
    assert halt.status_code == 403
    assert problem_check(403, halt.headers["content-type"], halt.content) == "scope-denied"
    assert tampered.status_code == 401
    check = problem_check(401, tampered.headers["content-type"], tampered.content)
    assert check == "content-digest-mismatch"
