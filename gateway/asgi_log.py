"""The ASGI shells' last step: run the app on a verified request, log the decision when it answers.

``gateway.asgi`` and ``gateway.mcp`` both hand a verified request to the application with the
body they already read (replayed as one ``http.request`` message, then the client's own
messages such as ``http.disconnect``) and log the gateway's decision with the status the
application actually sent: at ``http.response.start``, 500 if the application raised before
starting a response, ``None`` (not known) if it was cancelled or returned without one. One
implementation here, so the two shells cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.httpsig import RequestView
from gateway.verifier import Decision, Verifier

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
OnStart = Callable[[Message, int], None]


class _Replay:
    """``receive`` for the app: the body already read, then the client's messages."""

    __slots__ = ("body", "receive")

    def __init__(self, body: bytes | None, receive: Receive) -> None:
        self.body = body
        self.receive = receive

    async def __call__(self) -> Message:
        body = self.body
        if body is not None:
            self.body = None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.receive()  # after the body: http.disconnect, when it comes


class _LoggedSend:
    """``send`` for the app: logs the decision at the first ``http.response.start``."""

    __slots__ = ("decision", "logged", "on_start", "req", "route", "send", "verifier")

    def __init__(
        self,
        send: Send,
        verifier: Verifier,
        decision: Decision,
        req: RequestView,
        on_start: OnStart | None,
        route: str | None = None,
    ) -> None:
        self.send = send
        self.route = route
        self.verifier = verifier
        self.decision = decision
        self.req = req
        self.on_start = on_start
        self.logged = False

    async def __call__(self, message: Message) -> None:
        if not self.logged and message.get("type") == "http.response.start":
            self.logged = True
            status = int(message.get("status", 0))
            self.verifier.log(self.decision, self.req, status, self.route)  # first: hook may fail
            if self.on_start is not None:
                self.on_start(message, status)
        await self.send(message)

    def finish(self, status: int | None) -> None:
        """Log with ``status`` if no response was started."""
        if not self.logged:
            self.logged = True
            self.verifier.log(self.decision, self.req, status, self.route)


async def call_logged(
    app: AsgiApp,
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
    body: bytes,
    verifier: Verifier,
    decision: Decision,
    req: RequestView,
    on_start: OnStart | None = None,
    route: str | None = None,
) -> None:
    """Run ``app`` on the verified request (``body`` replayed) and log ``decision`` with the
    status it sends; ``on_start(message, status)`` runs just after that line is queued.
    ``route``: the route template, for the action record (``Verifier.log``)."""
    logged = _LoggedSend(send, verifier, decision, req, on_start, route)
    try:
        await app(scope, _Replay(body, receive), logged)
    except asyncio.CancelledError:
        logged.finish(None)  # the server gave up on the request: nothing was answered
        raise
    except BaseException:
        logged.finish(500)
        raise
    logged.finish(None)
