"""A small order-book service behind the agentca gateway (Flask extension).

    python -m examples.orderbook --port 8402 --ca-url http://127.0.0.1:8400 \\
        --trust-anchor root.pem --inventory-token-file gateway.token \\
        --audience http://127.0.0.1:8402 --trust-domain agentca.local

``--server`` picks the WSGI server: werkzeug (default, threaded), wsgiref (the standard
library's, single-threaded) or gunicorn (one worker process, the gateway built in it).

Routes: ``POST /orders`` (scope ``submit_limit_order``), ``GET /book``
(``query_anonymized_order_book``), ``POST /admin/halt`` (``halt_trading``), ``GET /health``
(public). Decision log lines go to stderr as JSON. ``--redis-url`` shares the replay cache
with every other gateway process on that Redis (fail-closed: 503 while it is unreachable;
``--redis-fail-open`` to accept on the process's own cache instead).

The action log (docs/verifiers.md, "The action log"): ``--gateway-id orders-1
--action-log-dir DIR --action-key-file key.pem`` records every decision in DIR;
``--action-token-file FILE`` also ships the records to ``--ca-url`` (``POST /v1/actions``
with that API token, role ``gateway``, named like the gateway ID).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from flask import Flask, g, jsonify, request
from werkzeug.serving import make_server

from gateway import CAInventory, StatusChecker, Verifier
from gateway.flask_ext import AgentGateway, public, requires_attested_provenance, requires_scope
from gateway.inventory import Inventory
from gateway.replay import ReplayStore

if TYPE_CHECKING:
    from gateway.action_log import ActionLog


def create_app(verifier: Verifier) -> Flask:
    """The order book, every route guarded by ``verifier``."""
    app = Flask("orderbook")
    AgentGateway(app, verifier)
    book: dict[str, list[dict[str, Any]]] = {"buy": [], "sell": []}
    ids = itertools.count(1)
    lock = threading.Lock()

    @app.get("/health")
    @public
    def health() -> Any:
        return jsonify(status="ok")

    @app.post("/orders")
    @requires_scope("submit_limit_order")
    def submit() -> Any:
        data = request.get_json(silent=True) or {}
        try:
            side = str(data["side"])
            price = Decimal(str(data["price"]))
            qty = Decimal(str(data["qty"]))
        except (KeyError, InvalidOperation):
            return jsonify(error="side, price and qty are required"), 400
        if side not in book or price <= 0 or qty <= 0:
            return jsonify(error="bad order"), 400
        with lock:
            order = {
                "id": next(ids),
                "side": side,
                "price": str(price),
                "qty": str(qty),
                "agent": g.agent.name,
                "serial": g.agent.serial,
            }
            book[side].append(order)
        return jsonify(order), 201

    @app.get("/book")
    @requires_scope("query_anonymized_order_book")
    def show_book() -> Any:
        with lock:
            return jsonify(
                {side: [[o["price"], o["qty"]] for o in orders] for side, orders in book.items()}
            )

    @app.get("/attested/book")
    @requires_scope("query_anonymized_order_book")
    @requires_attested_provenance()
    def show_book_attested() -> Any:
        """The book, only for agents whose provenance was attested at enrollment."""
        with lock:
            depth = {side: len(orders) for side, orders in book.items()}
        return jsonify(depth=depth, attested_by=g.agent.attested_by)

    @app.post("/admin/halt")
    @requires_scope("halt_trading")
    def halt() -> Any:
        return jsonify(halted=True)

    return app


def build_verifier(
    root_pem: Path,
    ca_url: str,
    token: str,
    max_status_age: float,
    inventory_refresh: float,
    audience: str,
    trust_domain: str,
    redis_url: str | None = None,
    redis_fail_open: bool = False,
    actions: ActionLog | None = None,
) -> Verifier:
    """The order book's verifier; with ``redis_url`` its nonces go to the shared Redis
    replay cache (every worker and gateway host on that Redis refuses a replay); with
    ``actions`` every decision is recorded in that action log."""
    anchors = x509.load_pem_x509_certificates(root_pem.read_bytes())
    inventory: Inventory = CAInventory(ca_url, token, refresh_seconds=inventory_refresh)
    replay: ReplayStore | None = None
    if redis_url:
        from gateway.replay_redis import RedisReplayCache

        replay = RedisReplayCache.from_url(redis_url, fail_open=redis_fail_open)
    return Verifier(
        anchors,
        inventory,
        StatusChecker(max_age=max_status_age),
        replay=replay,
        audience=audience,
        trust_domain=trust_domain,
        actions=actions,
    )


def add_verifier_options(parser: argparse.ArgumentParser) -> None:
    """The command-line options of :func:`build_verifier` (shared with the ASGI variant)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8402)
    parser.add_argument("--ca-url", required=True)
    parser.add_argument("--trust-anchor", type=Path, required=True)
    parser.add_argument("--inventory-token-file", type=Path, required=True)
    parser.add_argument("--max-status-age", type=float, default=1.0)
    parser.add_argument("--inventory-refresh", type=float, default=1.0)
    parser.add_argument(
        "--audience", required=True, help="this service's audience (wimse-aud), e.g. its origin"
    )
    parser.add_argument("--trust-domain", required=True, help="the agents' SPIFFE trust domain")
    parser.add_argument(
        "--redis-url",
        help="shared replay cache, e.g. redis://127.0.0.1:6379/0 (default: per process)",
    )
    parser.add_argument(
        "--redis-fail-open",
        action="store_true",
        help="accept on this process's cache while Redis is unreachable (default: refuse, 503)",
    )
    parser.add_argument("--gateway-id", help="this gateway's ID (its action records, its token)")
    parser.add_argument("--action-log-dir", type=Path, help="record every decision here")
    parser.add_argument("--action-key-file", type=Path, help="the checkpoint key (PEM)")
    parser.add_argument(
        "--action-token-file", type=Path, help="ship the records to --ca-url with this token"
    )
    parser.add_argument("--action-ca-url", help="where the action records go (default: --ca-url)")
    parser.add_argument("--action-checkpoint-seconds", type=float, default=10.0)
    parser.add_argument("--action-max-unshipped", type=int, default=1_000_000)
    parser.add_argument("--action-ship-interval", type=float, default=1.0)


def action_log_from(args: argparse.Namespace) -> ActionLog | None:
    """The action log (and its shipper, started) of the options, if they ask for one."""
    if args.action_log_dir is None:
        return None
    if not args.gateway_id or args.action_key_file is None:
        raise SystemExit("--action-log-dir needs --gateway-id and --action-key-file")
    from gateway.action_log import ActionLog
    from gateway.action_shipper import ActionShipper

    actions = ActionLog(
        args.action_log_dir,
        args.gateway_id,
        args.action_key_file,
        checkpoint_seconds=args.action_checkpoint_seconds,
        max_unshipped_records=args.action_max_unshipped,
    )
    if args.action_token_file is not None:
        ActionShipper(
            actions,
            args.action_ca_url or args.ca_url,
            args.action_token_file,
            interval=args.action_ship_interval,
            backoff_max=5.0,
        ).start()
    return actions


def verifier_from(args: argparse.Namespace) -> Verifier:
    """:func:`build_verifier` from the options of :func:`add_verifier_options`."""
    return build_verifier(
        args.trust_anchor,
        args.ca_url,
        args.inventory_token_file.read_text().strip(),
        args.max_status_age,
        args.inventory_refresh,
        args.audience,
        args.trust_domain,
        args.redis_url,
        args.redis_fail_open,
        action_log_from(args),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_verifier_options(parser)
    parser.add_argument("--server", choices=("werkzeug", "wsgiref", "gunicorn"), default="werkzeug")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # SIGTERM exits like Ctrl-C would: exit handlers run (the action log writes what is queued)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def app() -> Flask:
        return create_app(verifier_from(args))

    print(
        f"order book behind the agentca gateway on http://{args.host}:{args.port} ({args.server})",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        if args.server == "gunicorn":
            _serve_gunicorn(app, f"{args.host}:{args.port}")
        elif args.server == "wsgiref":
            _serve_wsgiref(app(), args.host, args.port)
        else:
            make_server(args.host, args.port, app(), threaded=True).serve_forever()


def _serve_wsgiref(app: Flask, host: str, port: int) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    make_server(host, port, app, handler_class=Quiet).serve_forever()


def _serve_gunicorn(factory: Any, bind: str) -> None:
    from gunicorn.app.base import BaseApplication

    class OrderBook(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": bind,
                "workers": 1,
                "threads": 2,
                "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return factory()  # in the worker: its refresh threads live there

    OrderBook().run()


if __name__ == "__main__":
    main()
