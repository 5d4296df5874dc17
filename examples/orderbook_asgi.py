"""The order book of ``examples.orderbook`` as a FastAPI app under uvicorn (ASGI gateway).

    python -m examples.orderbook_asgi --port 8402 --ca-url http://127.0.0.1:8400 \\
        --trust-anchor root.pem --inventory-token-file gateway.token \\
        --audience http://127.0.0.1:8402 --trust-domain agentca.local \\
        [--redis-url redis://127.0.0.1:6379/0]

The same routes, scopes and options as the Flask example (``POST /orders``
``submit_limit_order``, ``GET /book`` ``query_anonymized_order_book``, ``POST /admin/halt``
``halt_trading``, ``GET /health`` public), each scope declared with
``Depends(requires_scope(...))`` (``gateway.fastapi``). The order is parsed by FastAPI from the
body the gateway has already read and verified.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
from decimal import Decimal
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from examples.orderbook import add_verifier_options, verifier_from
from gateway.asgi import BODY_TIMEOUT
from gateway.chain import AgentIdentity
from gateway.fastapi import AgentGateway, public, requires_scope
from gateway.verifier import Verifier


class Order(BaseModel):
    side: str
    price: Decimal
    qty: Decimal


SubmitAgent = Annotated[AgentIdentity, Depends(requires_scope("submit_limit_order"))]


def create_app(verifier: Verifier, body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """The order book, every route guarded by ``verifier``."""
    app = FastAPI(title="orderbook", openapi_url=None, docs_url=None, redoc_url=None)
    AgentGateway(app, verifier, body_timeout=body_timeout)
    book: dict[str, list[dict[str, Any]]] = {"buy": [], "sell": []}
    ids = itertools.count(1)
    lock = asyncio.Lock()

    @app.get("/health", dependencies=[Depends(public)])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/orders", status_code=201)
    async def submit(order: Order, agent: SubmitAgent) -> Any:
        if order.side not in book or order.price <= 0 or order.qty <= 0:
            return JSONResponse({"error": "bad order"}, status_code=400)
        async with lock:
            placed = {
                "id": next(ids),
                "side": order.side,
                "price": str(order.price),
                "qty": str(order.qty),
                "agent": agent.name,
                "serial": agent.serial,
            }
            book[order.side].append(placed)
        return placed

    @app.get("/book", dependencies=[Depends(requires_scope("query_anonymized_order_book"))])
    async def show_book() -> dict[str, list[list[str]]]:
        async with lock:
            return {side: [[o["price"], o["qty"]] for o in orders] for side, orders in book.items()}

    @app.post("/admin/halt", dependencies=[Depends(requires_scope("halt_trading"))])
    async def halt() -> dict[str, bool]:
        return {"halted": True}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_verifier_options(parser)
    parser.add_argument(
        "--body-timeout", type=float, default=BODY_TIMEOUT, help="seconds to read a body (408)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(message)s")
    print(
        f"order book behind the agentca ASGI gateway on http://{args.host}:{args.port} (uvicorn)",
        flush=True,
    )
    uvicorn.run(
        create_app(verifier_from(args), args.body_timeout),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
