"""The agent's async parts, offline: the httpx auth flow (driven by hand, each request it
yields checked by the gateway's own verifier), ``Agent.asign`` (a worker thread only when
a CA call or a provenance recheck is due), ``Refresher.run_async`` (schedule, errors,
cancel-safety, never blocking the loop) and the asyncio upkeep task's start/stop rules.
Over real HTTP: tests/integration/test_agent_async_clients.py."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent import Agent, AgentError, BodyTooLarge, NotEnrolled, ProvenanceDrift, StapleError
from agent.httpx_auth import AgentHttpxAuth
from agent.provenance import RuntimeProvenance
from agent.staple import Staple
from gateway import StaticInventory, StatusChecker, Verifier
from tests.support.gateway_pki import T0, Clock, Pki, make_agent, model_digest, view
from wire.refresh import Refresher

URL = "http://gw.local/orders?venue=x"
ORDER = {"side": "buy", "price": "101.5", "qty": "2"}


class Env:
    """An offline agent with a fresh staple and the gateway core that checks its requests."""

    def __init__(self, pki: Pki, tmp: Path) -> None:
        self.clock = Clock()
        self.agent = make_agent(tmp, pki, self.clock)
        cert = self.agent.credential.certificate
        der = pki.ocsp_response(cert, this_update=self.clock())
        self.agent.staple = Staple(der, "good", T0, None, self.clock())
        self.agent.staple_max_age = 1e9  # the staple stays fresh: no fetch is due
        self.agent.provenance.recheck_seconds = 1e9
        self.agent.provenance.current()
        status = StatusChecker(refresh=False, clock=self.clock, fetch=False)
        self.verifier = Verifier(
            [pki.root],
            StaticInventory([model_digest().hex()]),
            status,
            clock=self.clock,
            audience=("http://gw.local",),
            trust_domain="agentca.local",
        )

    def check(self, request: httpx.Request, body: bytes | None = None) -> str | None:
        """None if the gateway core allows ``request`` (sent with ``body``), else the check."""
        sent = request.read() if body is None else body
        headers = dict(request.headers)
        decision = self.verifier.decide(
            view(request.method, str(request.url), headers, sent), "submit_limit_order"
        )
        return None if decision.allowed else decision.denial.check.value  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
def env(pki: Pki, tmp_path: Path) -> Env:
    return Env(pki, tmp_path)


def sync_signed(auth: AgentHttpxAuth, request: httpx.Request) -> httpx.Request:
    return next(auth.sync_auth_flow(request))


def async_signed(auth: AgentHttpxAuth, request: httpx.Request) -> httpx.Request:
    async def main() -> httpx.Request:
        flow = auth.async_auth_flow(request)
        try:
            return await flow.__anext__()
        finally:
            await flow.aclose()

    return asyncio.run(main())


# ---------------------------------------------------------------------------- httpx flows
def test_sync_flow_signs_what_the_gateway_core_accepts(env: Env) -> None:
    request = sync_signed(env.agent.httpx_auth(), httpx.Request("POST", URL, json=ORDER))
    assert "content-digest" in request.headers["signature-input"]
    assert env.check(request) is None
    assert env.check(request, request.read().replace(b'"2"', b'"9"')) == "content-digest-mismatch"


def test_async_flow_signs_what_the_gateway_core_accepts(env: Env) -> None:
    request = async_signed(AgentHttpxAuth(env.agent), httpx.Request("POST", URL, json=ORDER))
    assert env.check(request) is None
    get = async_signed(AgentHttpxAuth(env.agent), httpx.Request("GET", URL))
    assert "content-digest" not in get.headers and env.check(get) is None


def chunks() -> Iterator[bytes]:
    yield b'{"side": "buy", '
    yield b'"price": "101.5", "qty": "2"}'


async def achunks() -> AsyncIterator[bytes]:
    for part in chunks():
        yield part


@pytest.mark.parametrize("flow", ["sync", "async"])
def test_streamed_body_is_read_and_sent_with_a_length(env: Env, flow: str) -> None:
    headers = {"Content-Type": "application/json"}
    original = httpx.Request(
        "POST", URL, content=chunks() if flow == "sync" else achunks(), headers=headers
    )
    assert original.headers["transfer-encoding"] == "chunked"
    auth = AgentHttpxAuth(env.agent)
    request = sync_signed(auth, original) if flow == "sync" else async_signed(auth, original)
    body = b"".join(chunks())
    assert request.read() == body
    assert request.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert env.check(request) is None


@pytest.mark.parametrize("flow", ["sync", "async"])
def test_streamed_body_over_max_body_is_refused(env: Env, flow: str) -> None:
    auth = AgentHttpxAuth(env.agent, max_body=20)
    body = chunks() if flow == "sync" else achunks()
    with pytest.raises(BodyTooLarge) as caught:
        request = httpx.Request("POST", URL, content=body)
        sync_signed(auth, request) if flow == "sync" else async_signed(auth, request)
    assert caught.value.code == "body-too-large" and caught.value.info["limit"] == 20
    exact = AgentHttpxAuth(env.agent, max_body=len(b"".join(chunks())))
    assert env.check(sync_signed(exact, httpx.Request("POST", URL, content=chunks()))) is None


def test_sync_flow_refuses_an_async_body_and_bad_bounds(env: Env) -> None:
    with pytest.raises(TypeError):
        sync_signed(AgentHttpxAuth(env.agent), httpx.Request("POST", URL, content=achunks()))
    with pytest.raises(ValueError):
        AgentHttpxAuth(env.agent, max_body=-1)


# ------------------------------------------------------------------------------ asign
def count_threads(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    calls: list[Callable[..., Any]] = []
    real = asyncio.to_thread

    async def spy(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    return calls


def test_asign_stays_on_the_loop_when_nothing_is_due(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_threads(monkeypatch)
    assert not env.agent.prepare_due()
    signed = asyncio.run(env.agent.asign("GET", URL))
    assert calls == [] and signed.headers["Signature"].startswith("agentca=:")


def test_asign_does_the_due_ca_calls_in_a_worker_thread(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_threads(monkeypatch)
    env.agent.staple_max_age = 0.5  # the staple is stale: a fetch (which fails here) is due
    assert env.agent.prepare_due() and not env.agent.prepare_due(auto_staple=False)
    loop_thread: list[int] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        await env.agent.asign("GET", URL)

    seen: list[int] = []
    real_refresh = env.agent.refresh_staple

    def refresh() -> Staple:
        seen.append(threading.get_ident())
        return real_refresh()

    monkeypatch.setattr(env.agent, "refresh_staple", refresh)
    asyncio.run(main())
    assert len(calls) == 1 and seen and seen[0] != loop_thread[0]
    assert isinstance(env.agent.last_error, StapleError)  # port 9: signed without a staple


def test_provenance_recheck_is_due_once_its_interval_passed(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"weights")
    now = [0.0]
    runtime = RuntimeProvenance(
        "m", tmp_path / "m.bin", prompt_bytes=b"p", recheck_seconds=1.0, clock=lambda: now[0]
    )
    assert runtime.recheck_due()
    runtime.current()
    assert not runtime.recheck_due()
    now[0] = 1.0
    assert runtime.recheck_due()


# ------------------------------------------------------------------------ run_async loop
class Boom(Exception):
    pass


def run_until(refresher: Refresher, done: threading.Event, timeout: float = 2.0) -> None:
    """Run ``refresher.run_async()`` as a task until a step sets ``done``, then cancel it."""

    async def main() -> None:
        task = asyncio.create_task(refresher.run_async())
        try:
            deadline = time.monotonic() + timeout
            while not done.is_set():
                assert time.monotonic() < deadline, "the loop did not step as expected"
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.wait({task})

    asyncio.run(main())


def test_run_async_steps_with_the_delays_asked_and_survives_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []
    errors: list[Exception] = []
    done = threading.Event()
    delays = iter([0.01, 0.02, 0.01, 0.01, 0.01])

    def step() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise Boom("expected")
        if len(calls) == 2:
            raise RuntimeError("a bug")
        if len(calls) == 4:
            done.set()

    def delay() -> float:
        return next(delays)

    r = Refresher("t-async", step, delay, expected=(Boom,), on_error=errors.append)
    with caplog.at_level(logging.ERROR, "agentca.wire.refresh"):
        run_until(r, done)
    assert len(calls) >= 4
    assert calls[2] - calls[1] >= 0.02  # the second delay asked was honoured
    assert [type(e) for e in errors] == [Boom]
    assert "a bug" in caplog.text and "goes on" in caplog.text


def test_run_async_first_wait_and_a_failing_delay() -> None:
    calls: list[float] = []
    done = threading.Event()

    def delay() -> float:
        if calls:
            raise RuntimeError("no schedule")  # falls back to 1 s
        return 0.05

    def step() -> None:
        calls.append(time.monotonic())
        done.set()

    started = time.monotonic()
    run_until(Refresher("t", step, delay, first_wait=True), done)
    assert len(calls) == 1 and calls[0] - started >= 0.05


def test_run_async_never_blocks_the_loop_and_cancel_waits_for_the_step() -> None:
    finished = threading.Event()

    def step() -> None:
        time.sleep(0.3)  # a slow CA call
        finished.set()

    async def main() -> float:
        task = asyncio.create_task(Refresher("t", step, lambda: 10.0).run_async())
        lag = 0.0
        for _ in range(10):
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - before - 0.01)
        assert not finished.is_set()
        task.cancel()
        await asyncio.wait({task})
        assert finished.is_set() and task.cancelled()  # the step ended before the task did
        return lag

    assert asyncio.run(main()) < 0.1


# --------------------------------------------------------------------- upkeep task rules
def bare_agent(tmp_path: Path) -> Agent:
    (tmp_path / "m.bin").write_bytes(b"weights")
    provenance = RuntimeProvenance("m", tmp_path / "m.bin", prompt_bytes=b"prompt")
    return Agent("A", ec.generate_private_key(ec.SECP256R1()), provenance, "http://127.0.0.1:9")


def test_upkeep_task_runs_once_reports_errors_and_excludes_the_thread(tmp_path: Path) -> None:
    agent = bare_agent(tmp_path)

    async def main() -> asyncio.Task[None]:
        task = await agent.start_async()
        assert await agent.start_async() is task and agent.upkeep_running
        with pytest.raises(AgentError, match="asyncio upkeep task"):
            agent.start()
        for _ in range(200):
            if agent.last_error is not None:
                break
            await asyncio.sleep(0.01)
        await agent.stop_async()
        await agent.stop_async()  # twice is fine
        return task

    task = asyncio.run(main())
    assert task.done() and not agent.upkeep_running
    assert isinstance(agent.last_error, NotEnrolled)  # the step's error, as the thread's
    agent.start()
    try:

        async def refused() -> None:
            with pytest.raises(AgentError, match="upkeep thread"):
                await agent.start_async()

        asyncio.run(refused())
    finally:
        agent.stop()


def test_running_task_leaves_renewal_and_staple_to_the_upkeep(env: Env) -> None:
    env.agent.staple_max_age = 0.5  # stale: signing would fetch itself...

    async def main() -> bool:
        await env.agent.start_async()
        try:
            return env.agent.prepare_due()
        finally:
            await env.agent.stop_async()

    assert env.agent.prepare_due()
    assert asyncio.run(main()) is False  # ...unless the upkeep task runs
    assert not env.agent.upkeep_running


def test_agent_imports_and_signs_without_httpx_or_aiohttp(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['httpx'] = None; sys.modules['aiohttp'] = None\n"
        "import agent, agent.client\n"
        "try:\n"
        "    import agent.httpx_auth\n"
        "except ImportError:\n"
        "    print('optional')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "optional", out.stderr


def test_a_drifted_wimse_agent_refuses_before_asking_the_ca_for_a_wit(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = env.agent
    a.profile, a.use_wit = "wimse", True
    asked: list[int] = []
    monkeypatch.setattr(a, "fetch_wit", lambda *args: asked.append(1) or "wit")
    a.provenance.set_prompt(b"another prompt")
    with pytest.raises(ProvenanceDrift):
        asyncio.run(a.asign("GET", URL))
    with pytest.raises(ProvenanceDrift):
        a.sign("GET", URL)
    assert asked == []
