"""An MCP client (the official ``mcp`` SDK, streamable HTTP) whose every request is signed.

    async with mcp.Client(signed_transport(agent, "https://tools.example/mcp")) as client:
        tools = await client.list_tools()         # only the tools the certificate's scopes allow
        await client.call_tool("submit_limit_order", {"side": "buy", "price": "101", "qty": "2"})

Every HTTP request the transport sends (the JSON-RPC POSTs, the GET stream, the DELETE that
ends a session) carries the agent's RFC 9421 signature, its certificate and OCSP staple.

Why not :class:`agent.httpx_auth.AgentHttpxAuth`: the MCP SDK's client is built on
``httpx2``, another package than ``httpx`` with its own ``Auth`` and ``Request`` classes, so
an ``httpx.Auth`` cannot be handed to it. :class:`AgentMcpAuth` is the same flow for
``httpx2``: it signs with :meth:`agent.client.Agent.asign` (CA and OCSP calls off the event
loop), the one signer; JSON-RPC bodies are bytes already, so nothing is streamed. Needs the
``mcp`` extra; ``import agent`` does not import this module.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from agent.errors import BodyTooLarge
from agent.httpx_auth import DEFAULT_MAX_BODY

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

    from agent.client import Agent

__all__ = ["AgentMcpAuth", "signed_http_client", "signed_transport"]


class AgentMcpAuth(httpx2.Auth):
    """``httpx2.Auth`` that signs each request with ``agent`` (the MCP SDK's HTTP client)."""

    def __init__(self, agent: Agent, max_body: int = DEFAULT_MAX_BODY) -> None:
        if max_body < 0:
            raise ValueError("max_body must be >= 0")
        self.agent = agent
        self.max_body = max_body

    def _checked(self, body: bytes) -> bytes:
        if len(body) > self.max_body:
            raise BodyTooLarge(
                f"the request body is over max_body={self.max_body} bytes", limit=self.max_body
            )
        return body

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        body = self._checked(request.read())
        signed = self.agent.sign(request.method, str(request.url), request.headers, body or None)
        request.headers.update(signed.headers)
        yield request

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, Any]:
        body = self._checked(await request.aread())
        signed = await self.agent.asign(
            request.method, str(request.url), request.headers, body or None
        )
        request.headers.update(signed.headers)
        yield request


def signed_http_client(agent: Agent, **kwargs: Any) -> httpx2.AsyncClient:
    """The MCP SDK's default HTTP client (its timeouts), signing with ``agent``; ``kwargs``:
    ``headers``, ``timeout``."""
    return create_mcp_http_client(auth=AgentMcpAuth(agent), **kwargs)


@asynccontextmanager
async def signed_transport(
    agent: Agent, url: str, *, terminate_on_close: bool = True, **kwargs: Any
) -> AsyncIterator[TransportStreams]:
    """A streamable-HTTP transport for ``mcp.Client`` whose requests ``agent`` signs (the
    HTTP client is closed with it; ``kwargs`` go to :func:`signed_http_client`)."""
    async with (
        signed_http_client(agent, **kwargs) as client,
        streamable_http_client(
            url, http_client=client, terminate_on_close=terminate_on_close
        ) as streams,
    ):
        yield streams
