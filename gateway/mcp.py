"""MCP tool servers (the official ``mcp`` SDK, streamable HTTP) behind the agentca gateway.

    server = MCPServer("orderbook")

    @server.tool(meta=requires_scope("submit_limit_order"))
    def submit_limit_order(side: str, price: str, qty: str) -> dict[str, str]: ...

    app = mcp_app(server, verifier, scope="query_anonymized_order_book",
                  stateless_http=True, json_response=True)      # an ASGI app: uvicorn app

Every HTTP request of the transport (``initialize``, notifications, ``tools/list``,
``tools/call``, the GET stream, DELETE) is verified by the one core,
:meth:`gateway.verifier.Verifier.evaluate`, before the MCP app sees it; its body is read once
and handed back to the app, and the decision logged with the status the app sends
(``gateway.asgi_log``, shared with ``gateway.asgi``). A ``tools/call`` needs the scope its
tool declares (the ``_meta`` entry :func:`requires_scope` writes, shown to clients in
``tools/list`` too); every other request needs ``scope``, the scope to use the server at all.
A tool without a declared scope can be neither listed nor called (fail closed).
``tools/list`` answers only the tools whose scope the agent's certificate holds.

Refusals keep the core's HTTP status (401, 403, 503; 400 for a path not in normal form; 413
and 408 for a body over ``max_body`` bytes or not all there within ``body_timeout`` seconds,
read by ``gateway.asgi.read_body`` as in the ASGI middleware). A JSON-RPC request is answered
with a JSON-RPC error (``application/json``, code :data:`REFUSED`, ``data`` = the RFC 9457
problem document) so that MCP clients surface the reason; anything else gets
``application/problem+json`` as from the other shells. Why, and how this relates to the MCP
authorization spec's OAuth bearer tokens: docs/decisions/0043.

The tool named by the HTTP layer (parsed here to pick the scope) must be the one the SDK
dispatches: a middleware on the MCP server compares the two and refuses a ``tools/call`` that
did not come through this gateway or names another tool, so a parser difference cannot turn
an authorised call into another. A legacy (``Mcp-Session-Id``) session belongs to the agent
(SPIFFE ID) that opened it: another agent's request on it gets 404, as for an unknown session.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from http import HTTPStatus
from typing import Any, Final

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from gateway.asgi import BODY_TIMEOUT, header_map, read_body, request_view, scope_path_problem
from gateway.asgi_log import AsgiApp as AsgiApp
from gateway.asgi_log import Message as Message
from gateway.asgi_log import Receive as Receive
from gateway.asgi_log import Send as Send
from gateway.asgi_log import call_logged
from gateway.chain import AgentIdentity
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, Verifier
from gateway.wsgi import ACCEPT_SIGNATURE, MAX_BODY

SCOPE_META: Final = "dev.agentca/scope"
"""The tool ``_meta`` key holding the scope a tool needs."""
SCOPE_KEY: Final = "agentca.agent"
"""ASGI scope key of the verified :class:`AgentIdentity` (as ``environ`` for WSGI)."""
DECISION_KEY: Final = "agentca.decision"
TOOL_KEY: Final = "agentca.mcp.tool"
"""ASGI scope key of the tool this request was authorised to call (None: no tools/call)."""
REFUSED: Final = -32010
"""JSON-RPC error code of a request the gateway refused (implementation-defined range)."""
SESSION_HEADER: Final = "mcp-session-id"
MAX_SESSIONS: Final = 10_000  # the SDK's DEFAULT_MAX_SESSIONS: no live session is forgotten
RPC_METHODS: Final = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)
"""The JSON-RPC methods an action record names as they are; any other is ``other``."""


def action_route(
    http_method: str, message: Mapping[str, Any] | None, tool: str | None = None
) -> str:
    """The normalised route an action record gives an MCP request: ``mcp <rpc method>``
    (``mcp tools/call <tool>`` with a registered tool's name, ``mcp tools/call (unknown)``
    otherwise; ``mcp other`` for a method outside :data:`RPC_METHODS`; ``mcp GET`` and the
    like for a request carrying no JSON-RPC message), so clients cannot fill it at will."""
    if message is None:
        return f"mcp {http_method}"
    method = message.get("method")
    if not isinstance(method, str) or method not in RPC_METHODS:
        return "mcp other" if isinstance(method, str) else "mcp response"
    if method == "tools/call":
        return f"mcp tools/call {tool or '(unknown)'}"
    return f"mcp {method}"


def requires_scope(scope: str, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The tool ``meta`` declaring the scope a tool needs:
    ``@server.tool(meta=requires_scope("submit_limit_order"))``."""
    if not isinstance(scope, str) or not scope:
        raise ValueError("a tool scope is a non-empty string")
    return {**(meta or {}), SCOPE_META: scope}


def tool_scope(tool: Mapping[str, Any]) -> str | None:
    """The scope a tool (its wire form, as in ``tools/list``) declares, if any."""
    meta = tool.get("_meta")
    scope = meta.get(SCOPE_META) if isinstance(meta, Mapping) else None
    return scope if isinstance(scope, str) and scope else None


def identity_of(ctx: ServerRequestContext[Any, Any]) -> AgentIdentity | None:
    """The verified agent of the HTTP request that carried this MCP message (None: not
    through the gateway, e.g. stdio)."""
    scope = getattr(ctx.request, "scope", None)
    ident = scope.get(SCOPE_KEY) if isinstance(scope, Mapping) else None
    return ident if isinstance(ident, AgentIdentity) else None


class ToolScopes:
    """MCP server middleware: ``tools/list`` shows the tools the agent's scopes allow, and a
    ``tools/call`` must name the tool the gateway authorised for its HTTP request."""

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "tools/call":
            params = ctx.params if isinstance(ctx.params, Mapping) else {}
            request_scope = getattr(ctx.request, "scope", None)
            authorised = request_scope.get(TOOL_KEY) if isinstance(request_scope, Mapping) else None
            if identity_of(ctx) is None or authorised is None or params.get("name") != authorised:
                raise MCPError(INVALID_PARAMS, "this tool call was not authorised by the gateway")
            return await call_next(ctx)
        if ctx.method != "tools/list":
            return await call_next(ctx)
        result = await call_next(ctx)
        ident = identity_of(ctx)
        granted = frozenset(ident.scopes) if ident is not None else frozenset()
        if isinstance(result, Mapping):
            tools = result.get("tools")
            if isinstance(tools, list):
                kept = [t for t in tools if isinstance(t, Mapping) and tool_scope(t) in granted]
                return {**result, "tools": kept}
            return dict(result)
        raise MCPError(INVALID_PARAMS, "tools/list answered in an unexpected form")


class McpGateway:
    """ASGI shell: verify every request, authorise ``tools/call`` by its tool's scope, then
    hand the request (identity in ``scope["agentca.agent"]``) to the MCP app."""

    def __init__(
        self,
        app: AsgiApp,
        server: MCPServer[Any],
        verifier: Verifier,
        scope: str,
        *,
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        if not scope:
            raise ValueError("scope: the scope every request to this MCP server needs")
        self.app = app
        self.server = server
        self.verifier = verifier
        self.scope = scope
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.sessions: OrderedDict[str, str] = OrderedDict()  # session id -> SPIFFE ID
        if not any(isinstance(m, ToolScopes) for m in server.middleware):
            server.middleware.insert(0, ToolScopes())

    async def tool_scopes(self) -> dict[str, str | None]:
        """Each registered tool's declared scope (None: none declared)."""
        return {t.name: tool_scope({"_meta": t.meta}) for t in await self.server.list_tools()}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1008})  # nothing unverified
            return
        headers = header_map(scope.get("headers", ()))
        problem = scope_path_problem(scope)
        if problem is not None:
            denied = Denied(Check.PATH, problem)
            await self._refuse(
                Decision(False, denial=denied), self._view(scope, headers), None, send, None
            )
            return
        body = await read_body(headers, receive, self.max_body, self.body_timeout)
        if body is None:  # the client went away: nobody to answer
            return
        if isinstance(body, Denied):
            view = self._view(scope, headers)
            route = action_route(view.method, None)
            await self._refuse(Decision(False, denial=body), view, None, send, route)
            return
        req = self._view(scope, headers, body)
        message = _json_object(body) if req.method == "POST" else None
        tool: str | None = None
        required: str | None = self.scope
        if message is not None and message.get("method") == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, Mapping) else None
            tool = name if isinstance(name, str) else None
            scopes = await self.tool_scopes()
            required = scopes.get(tool) if tool is not None else None
            known = tool if tool in scopes else None  # a name made up: not in the record
            route = action_route(req.method, message, known)
        else:
            route = action_route(req.method, message)
        decision = await anyio.to_thread.run_sync(self.verifier.evaluate, req, required)
        if not decision.allowed:
            await self._refuse(decision, req, message, send, route)
            return
        ident = decision.identity
        assert ident is not None
        session = req.headers.get(SESSION_HEADER)
        owner = self.sessions.get(session) if session else None
        if owner is not None and owner != ident.spiffe_id:
            await _send_json(send, 404, _rpc_error(message, -32001, "Session not found"))
            self.verifier.log(decision, req, 404, route)
            return
        scope[SCOPE_KEY] = ident
        scope[DECISION_KEY] = decision
        scope[TOOL_KEY] = tool

        def on_start(start: Message, status: int) -> None:
            if status < 400:
                self._remember_session(start, ident.spiffe_id)

        await call_logged(
            self.app, scope, receive, send, body, self.verifier, decision, req, on_start, route
        )

    @staticmethod
    def _view(
        scope: MutableMapping[str, Any], headers: dict[str, str], body: bytes = b""
    ) -> RequestView:
        # MCP clients send Content-Type on every request (and sign it): kept without a body
        return request_view(scope, body, headers, keep_bodiless_content_type=True)

    def _remember_session(self, start: Message, spiffe_id: str) -> None:
        for name, value in start.get("headers", ()):
            if bytes(name).lower() == SESSION_HEADER.encode():
                sid = bytes(value).decode("latin-1")
                self.sessions[sid] = spiffe_id
                self.sessions.move_to_end(sid)
                while len(self.sessions) > MAX_SESSIONS:
                    self.sessions.popitem(last=False)

    async def _refuse(
        self,
        decision: Decision,
        req: RequestView,
        message: Mapping[str, Any] | None,
        send: Send,
        route: str | None,
    ) -> None:
        denied = decision.denial
        assert denied is not None
        status = decision.http_status or denied.check.status
        doc = {**denied.problem(), "status": status}
        if message is not None and "id" in message and "method" in message:
            body = _rpc_error(message, REFUSED, f"{denied.check.title}: {denied.detail}", doc)
            await _send_json(send, status, body)
        else:
            await _send_json(send, status, doc, "application/problem+json")
        self.verifier.log(decision, req, status, route)


def mcp_app(
    server: MCPServer[Any],
    verifier: Verifier,
    scope: str,
    *,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
    **http_options: Any,
) -> McpGateway:
    """``server.streamable_http_app(**http_options)`` behind the gateway (see the module)."""
    app = server.streamable_http_app(**http_options)
    return McpGateway(app, server, verifier, scope, max_body=max_body, body_timeout=body_timeout)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _rpc_error(
    message: Mapping[str, Any] | None, code: int, text: str, data: Any = None
) -> dict[str, Any]:
    rid = message.get("id") if message is not None else None
    error: dict[str, Any] = {"code": code, "message": text}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid if isinstance(rid, str | int) else None, "error": error}


async def _send_json(
    send: Send, status: int, doc: Mapping[str, Any], content_type: str = "application/json"
) -> None:
    body = json.dumps(doc).encode()
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == HTTPStatus.UNAUTHORIZED:
        headers.append((b"accept-signature", ACCEPT_SIGNATURE.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
