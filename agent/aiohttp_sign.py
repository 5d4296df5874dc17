"""Sign every request an ``aiohttp.ClientSession`` sends (RFC 9421), as a client middleware.

    async with aiohttp.ClientSession(middlewares=(AgentAiohttpMiddleware(agent),)) as s:
        await s.post(url, json=order)

Why a middleware (aiohttp >= 3.12) rather than a trace config or a session wrapper: it is
handed the final ``ClientRequest`` (method, URL, headers, body payload) just before it is
sent, may change its headers, and runs again for each redirect, so every hop is signed for
its own URL. The CA and OCSP calls a signature may need run in a worker thread
(:meth:`agent.client.Agent.asign`), never on the event loop.

The body must be known to be digested: bytes, text, JSON and form payloads are read as
they are; a payload of known size (a file) is read whole up to ``max_body`` bytes and sent
as those bytes; a stream of unknown size (an async iterator) is refused with
:class:`agent.errors.BodyTooLarge` before anything is sent (pass bytes instead).
Needs aiohttp (the ``aiohttp`` extra); ``import agent`` does not import this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, payload

from agent.errors import BodyTooLarge

if TYPE_CHECKING:
    from agent.client import Agent

__all__ = ["DEFAULT_MAX_BODY", "AgentAiohttpMiddleware"]

DEFAULT_MAX_BODY = 16 * 1024 * 1024


class AgentAiohttpMiddleware:
    """An aiohttp client middleware that signs each request with ``agent``."""

    def __init__(self, agent: Agent, max_body: int = DEFAULT_MAX_BODY) -> None:
        if max_body < 0:
            raise ValueError("max_body must be >= 0")
        self.agent = agent
        self.max_body = max_body

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        body = await self._body(request)
        signed = await self.agent.asign(
            request.method, str(request.url), request.headers, body or None
        )
        request.headers.update(signed.headers)
        return await handler(request)

    async def _body(self, request: ClientRequest) -> bytes:
        """The bytes the request will send (replacing a one-shot payload by those bytes)."""
        body = request.body
        if not isinstance(body, payload.Payload):
            return bytes(body)
        if isinstance(body, payload.BytesPayload):  # bytes, str, JSON, url-encoded form
            return await body.as_bytes()
        size = body.size
        if size is None or size > self.max_body:
            shown = "of unknown size" if size is None else f"of {size} bytes"
            raise BodyTooLarge(
                f"a streamed request body {shown} cannot be signed (max_body="
                f"{self.max_body}): a signature covers a digest of the whole body",
                limit=self.max_body,
            )
        data = await body.as_bytes()
        if len(data) > self.max_body:
            raise BodyTooLarge(f"the request body is over max_body={self.max_body} bytes")
        await request.update_body(data)  # keeps Content-Type, sets Content-Length
        return data
