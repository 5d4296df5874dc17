"""Sign every request an ``httpx.Client`` or ``httpx.AsyncClient`` sends (RFC 9421).

    client = httpx.Client(auth=AgentHttpxAuth(agent))          # or agent.httpx_auth()
    async with httpx.AsyncClient(auth=agent.httpx_auth()) as client:
        await client.post(url, json=order)

Why a flow of its own rather than the ``requests`` hook: httpx calls ``sync_auth_flow`` and
``async_auth_flow`` with the request before it is sent, so the body can be hashed into
``Content-Digest`` there, and the async flow must not block the event loop (the CA and OCSP
calls a signature may need run in a worker thread, :meth:`agent.client.Agent.asign`).

A streamed body (an iterator or async iterator) is read whole, up to ``max_body`` bytes,
and sent with ``Content-Length`` instead of chunked: a digest covers bytes already known.
A larger one is refused with :class:`agent.errors.BodyTooLarge` before anything is sent.
Needs httpx (the ``httpx`` extra); ``import agent`` does not import this module.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Generator, Iterable
from typing import TYPE_CHECKING

import httpx

from agent.errors import BodyTooLarge

if TYPE_CHECKING:
    from agent.client import Agent

__all__ = ["DEFAULT_MAX_BODY", "AgentHttpxAuth"]

DEFAULT_MAX_BODY = 16 * 1024 * 1024
_DROPPED = ("transfer-encoding", "content-length")


class AgentHttpxAuth(httpx.Auth):
    """``httpx.Auth`` that signs each request with ``agent`` (sync and async clients)."""

    def __init__(self, agent: Agent, max_body: int = DEFAULT_MAX_BODY) -> None:
        if max_body < 0:
            raise ValueError("max_body must be >= 0")
        self.agent = agent
        self.max_body = max_body

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if isinstance(request.stream, httpx.ByteStream):
            body = request.read()
        elif isinstance(request.stream, Iterable):
            request = self._buffered(request, self._read(request.stream))
            body = request.read()
        else:
            raise TypeError("an async request body cannot be sent by a sync httpx.Client")
        signed = self.agent.sign(request.method, str(request.url), request.headers, body or None)
        request.headers.update(signed.headers)
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if isinstance(request.stream, httpx.ByteStream):
            body = request.read()
        elif isinstance(request.stream, AsyncIterable):
            request = self._buffered(request, await self._aread(request.stream))
            body = request.read()
        elif isinstance(request.stream, Iterable):
            request = self._buffered(request, self._read(request.stream))
            body = request.read()
        else:
            raise TypeError(f"unsupported httpx request stream {type(request.stream).__name__}")
        signed = await self.agent.asign(
            request.method, str(request.url), request.headers, body or None
        )
        request.headers.update(signed.headers)
        yield request

    # -- streamed bodies ------------------------------------------------------------------
    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"the request body is over max_body={self.max_body} bytes: "
            "a signature covers a digest of the whole body (raise max_body)",
            limit=self.max_body,
        )

    def _read(self, stream: Iterable[bytes]) -> bytes:
        parts, size = [], 0
        for chunk in stream:
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            parts.append(chunk)
        return b"".join(parts)

    async def _aread(self, stream: AsyncIterable[bytes]) -> bytes:
        parts, size = [], 0
        async for chunk in stream:
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    def _buffered(request: httpx.Request, body: bytes) -> httpx.Request:
        """The same request with ``body`` as fixed content (``Content-Length``, not chunked)."""
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _DROPPED]
        return httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=body,
            extensions=request.extensions,
        )
