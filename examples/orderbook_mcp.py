"""The order book as an MCP tool server (streamable HTTP) behind the agentca gateway.

    python -m examples.orderbook_mcp --port 8403 --ca-url http://127.0.0.1:8400 \\
        --trust-anchor root.pem --inventory-token-file gateway.token \\
        --audience http://127.0.0.1:8403 --trust-domain agentca.local [--redis-url redis://...]

Tools: ``get_book`` (scope ``query_anonymized_order_book``), ``submit_limit_order``
(``submit_limit_order``), ``halt_trading`` (``halt_trading``). Using the server at all
(``initialize``, ``tools/list``) needs ``query_anonymized_order_book``. The endpoint is
``/mcp``; ``/health`` answers without verification (outside the gateway). ``--redis-url``
shares the replay cache with other processes. Decision log lines go to stderr as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import threading
from collections.abc import MutableMapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from gateway import StatusChecker, Verifier
from gateway.chain import AgentIdentity
from gateway.inventory import CAInventory
from gateway.mcp import AsgiApp, McpGateway, Receive, Send, identity_of, mcp_app, requires_scope

READ_SCOPE = "query_anonymized_order_book"


def agent_of(ctx: Context[Any, Any]) -> AgentIdentity:
    """The verified agent calling a tool (the gateway put it on the HTTP request)."""
    ident = identity_of(ctx.request_context)
    if ident is None:  # never: the gateway refuses a call it did not verify
        raise ToolError("no verified agent")
    return ident


def create_server() -> MCPServer[Any]:
    """The order book's tools, each declaring the scope it needs."""
    server: MCPServer[Any] = MCPServer("orderbook", instructions="A limit-order book.")
    book: dict[str, list[dict[str, str]]] = {"buy": [], "sell": []}
    ids = itertools.count(1)
    lock = threading.Lock()

    @server.tool(meta=requires_scope(READ_SCOPE))
    def get_book() -> dict[str, list[list[str]]]:
        """The anonymised book: [price, qty] per side."""
        with lock:
            return {side: [[o["price"], o["qty"]] for o in orders] for side, orders in book.items()}

    @server.tool(meta=requires_scope("submit_limit_order"))
    def submit_limit_order(
        side: str, price: str, qty: str, ctx: Context[Any, Any]
    ) -> dict[str, str]:
        """Place a limit order (side: buy or sell; price and qty: positive decimals)."""
        try:
            p, q = Decimal(price), Decimal(qty)
        except InvalidOperation as exc:
            raise ToolError("price and qty must be decimals") from exc
        if side not in book or not p > 0 or not q > 0:
            raise ToolError("bad order")
        agent = agent_of(ctx)
        with lock:
            order = {
                "id": str(next(ids)),
                "side": side,
                "price": str(p),
                "qty": str(q),
                "agent": agent.name,
                "serial": agent.serial,
            }
            book[side].append(order)
        return order

    @server.tool(meta=requires_scope("halt_trading"))
    def halt_trading() -> dict[str, bool]:
        """Halt all trading."""
        return {"halted": True}

    return server


def create_app(verifier: Verifier, **http_options: Any) -> AsgiApp:
    """The ASGI app: ``/mcp`` behind the gateway, ``GET /health`` public."""
    options = {"stateless_http": True, "json_response": True, **http_options}
    gated: McpGateway = mcp_app(create_server(), verifier, READ_SCOPE, **options)

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and scope.get("path") == "/health":
            body = b'{"status":"ok"}'
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await gated(scope, receive, send)  # everything else, lifespan included

    return app


def build_verifier(args: argparse.Namespace) -> Verifier:
    from cryptography import x509

    replay = None
    if args.redis_url:
        from gateway.replay_redis import RedisReplayCache

        replay = RedisReplayCache.from_url(args.redis_url)
    anchors = x509.load_pem_x509_certificates(args.trust_anchor.read_bytes())
    token = args.inventory_token_file.read_text().strip()
    return Verifier(
        anchors,
        CAInventory(args.ca_url, token, refresh_seconds=args.inventory_refresh),
        StatusChecker(max_age=args.max_status_age),
        audience=args.audience,
        trust_domain=args.trust_domain,
        replay=replay,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8403)
    parser.add_argument("--ca-url", required=True)
    parser.add_argument("--trust-anchor", type=Path, required=True)
    parser.add_argument("--inventory-token-file", type=Path, required=True)
    parser.add_argument("--max-status-age", type=float, default=1.0)
    parser.add_argument("--inventory-refresh", type=float, default=1.0)
    parser.add_argument("--audience", required=True, help="this service's wimse-aud (its origin)")
    parser.add_argument("--trust-domain", required=True, help="the agents' SPIFFE trust domain")
    parser.add_argument("--redis-url", help="a shared replay cache (redis://host:port/db)")
    parser.add_argument(
        "--session", choices=("stateless", "stateful"), default="stateless",
        help="stateless: any process can answer (the default); stateful: Mcp-Session-Id",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(message)s")
    for noisy in ("mcp", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import uvicorn

    stateful = args.session == "stateful"
    app = create_app(build_verifier(args), stateless_http=not stateful, json_response=not stateful)
    print(f"order book MCP server on http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
