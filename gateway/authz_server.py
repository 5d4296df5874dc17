"""Start the verifier service (``gateway.authz_service``) under gunicorn.

    python -m gateway.authz_service --help

An argparse entry point in the gateway SDK rather than an ``agentca`` subcommand: the service
runs on the gateway host, which has the SDK and no CA (no data directory, database or HSM),
and the SDK may not import the CLI's click or settings (pyproject's import contracts), like
``examples/orderbook.py``. Everything is checked before gunicorn starts (the route file, the
trust anchors, the inventory token, the replay store for more than one worker), so a mistake
is one line on stderr and exit status 2. The verifier is built in each worker after the fork
(its refresh threads live there).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.authz_forward import Upstream
from gateway.authz_routes import RouteConfigError, load_routes
from gateway.authz_service import AuthzService
from gateway.inventory import CAInventory, Inventory, StaticInventory
from gateway.replay import ReplayStore
from gateway.status import StatusChecker
from gateway.verifier import MAX_WINDOW, Verifier


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gateway.authz_service",
        description="agentca verifier service for nginx auth_request / Envoy ext_authz",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (keep it private)")
    p.add_argument("--port", type=int, default=8403)
    p.add_argument("--routes", type=Path, required=True, help="route -> scope file (.toml/.json)")
    p.add_argument("--trust-anchor", type=Path, required=True, help="PEM root certificate(s)")
    p.add_argument("--audience", action="append", required=True, help="wimse-aud value(s)")
    p.add_argument("--trust-domain", action="append", required=True, help="SPIFFE trust domain")
    p.add_argument("--ca-url", help="the CA API, for the authorised model inventory")
    p.add_argument("--inventory-token-file", type=Path, help="read-only API token file")
    p.add_argument("--inventory-refresh", type=float, default=5.0)
    p.add_argument("--authorised-model", action="append", default=[], metavar="HEX",
                   help="a static inventory instead of the CA's (repeatable)")  # fmt: skip
    p.add_argument("--max-status-age", type=float, default=1.0, help="seconds (OCSP freshness)")
    p.add_argument("--window", type=int, default=MAX_WINDOW, help="signature window, seconds")
    p.add_argument("--redis-url", help="shared replay store (else this process's memory)")
    p.add_argument("--redis-fail-open", action="store_true",
                   help="accept while Redis is down (replays across hosts pass)")  # fmt: skip
    p.add_argument("--forward-to", help="http://host:port of the upstream (forward mode)")
    p.add_argument("--forward-timeout", type=float, default=10.0)
    p.add_argument("--max-body", type=int, default=1 << 20, help="bytes (forward mode)")
    p.add_argument("--max-per-client", type=int, default=32, help="requests in flight")
    p.add_argument("--max-header-bytes", type=int, default=16384, help="per header field")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=int, default=15, help="worker deadline, seconds")
    p.add_argument("--gateway-id", help="this gateway's ID (its action records and CA token)")
    p.add_argument("--action-log-dir", type=Path, help="record every decision here (one worker)")
    p.add_argument("--action-key-file", type=Path, help="the action log's checkpoint key (PEM)")
    p.add_argument("--action-token-file", type=Path,
                   help="ship the action records to --ca-url with this API token")  # fmt: skip
    p.add_argument("--action-max-unshipped", type=int, default=1_000_000)
    return p


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, str]:
    try:
        routes = load_routes(args.routes)
    except RouteConfigError as exc:
        parser.error(str(exc))
    try:
        anchors = x509.load_pem_x509_certificates(args.trust_anchor.read_bytes())
    except (OSError, ValueError) as exc:
        parser.error(f"--trust-anchor {args.trust_anchor}: {exc}")
    if not anchors:
        parser.error(f"--trust-anchor {args.trust_anchor}: no certificate")
    if bool(args.ca_url) == bool(args.authorised_model):
        parser.error("give --ca-url with --inventory-token-file, or --authorised-model")
    if args.ca_url:
        if args.inventory_token_file is None:
            parser.error("--ca-url needs --inventory-token-file")
        try:
            if not args.inventory_token_file.read_text().strip():
                parser.error(f"{args.inventory_token_file}: empty token")
        except OSError as exc:
            parser.error(f"{args.inventory_token_file}: {exc.strerror}")
    if args.workers > 1 and not args.redis_url:
        parser.error("more than one worker needs --redis-url (a replay to another worker "
                     "would pass an in-process nonce cache)")  # fmt: skip
    if not 0 < args.window <= MAX_WINDOW:
        parser.error(f"--window must be 1..{MAX_WINDOW}")
    if args.forward_to:
        try:
            Upstream.from_url(args.forward_to)
        except ValueError as exc:
            parser.error(str(exc))
    if args.action_log_dir is not None:
        if not args.gateway_id or args.action_key_file is None:
            parser.error("--action-log-dir needs --gateway-id and --action-key-file")
        if args.workers > 1:
            parser.error("an action log is one process's: --action-log-dir needs --workers 1 "
                         "(run one service per gateway ID)")  # fmt: skip
        if args.action_token_file is not None and not args.ca_url:
            parser.error("--action-token-file ships to --ca-url, which is missing")
    elif args.action_token_file is not None:
        parser.error("--action-token-file needs --action-log-dir")
    for name in ("max_body", "max_per_client", "threads", "timeout", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return routes


def build_service(args: argparse.Namespace, routes: dict[str, str]) -> AuthzService:
    """The service as ``args`` describe it (called in the gunicorn worker)."""
    anchors = x509.load_pem_x509_certificates(args.trust_anchor.read_bytes())
    inventory: Inventory
    if args.ca_url:
        token = args.inventory_token_file.read_text().strip()
        inventory = CAInventory(args.ca_url, token, refresh_seconds=args.inventory_refresh)
    else:
        inventory = StaticInventory(args.authorised_model)
    replay: ReplayStore | None = None
    if args.redis_url:
        from gateway.replay_redis import RedisReplayCache

        replay = RedisReplayCache.from_url(args.redis_url, fail_open=args.redis_fail_open)
    actions = None
    if args.action_log_dir is not None:
        from gateway.action_log import ActionLog
        from gateway.action_shipper import ActionShipper

        actions = ActionLog(
            args.action_log_dir,
            args.gateway_id,
            args.action_key_file,
            max_unshipped_records=args.action_max_unshipped,
        )
        if args.action_token_file is not None:
            ActionShipper(actions, args.ca_url, args.action_token_file).start()
    verifier = Verifier(
        anchors,
        inventory,
        StatusChecker(max_age=args.max_status_age),
        replay=replay,
        window=args.window,
        audience=args.audience,
        trust_domain=args.trust_domain,
        actions=actions,
    )
    upstream = Upstream.from_url(args.forward_to, args.forward_timeout) if args.forward_to else None
    return AuthzService(
        verifier,
        routes,
        upstream=upstream,
        max_body=args.max_body,
        max_per_client=args.max_per_client,
    )


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    routes = _check(args, parser)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(message)s")
    from gunicorn.app.base import BaseApplication

    options: dict[str, Any] = {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        "worker_class": "gthread",
        "threads": args.threads,
        "timeout": args.timeout,
        "graceful_timeout": 5,
        "keepalive": 30,
        "limit_request_line": 8190,
        "limit_request_fields": 64,
        "limit_request_field_size": args.max_header_bytes,
        "loglevel": "warning",
    }

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return build_service(args, routes)

    print(f"agentca verifier service on http://{args.host}:{args.port}", file=sys.stderr,
          flush=True)  # fmt: skip
    _Server().run()


if __name__ == "__main__":
    main()
