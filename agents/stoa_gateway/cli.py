"""``stoa gateway``: ``main(argv)`` parses ``--config --port --host --audit-log`` and serves; defaults of
``--port``/``--host`` come from :class:`~stoa_gateway.settings.GatewaySettings`."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from stoa_gateway.config import ConfigError
from stoa_gateway.limits import Limits, LocalLimits
from stoa_gateway.server import run_gateway
from stoa_gateway.settings import GatewaySettings
from stoa_gateway.shared_limits import SharedLimits


def parse_args(
    argv: Sequence[str] | None = None, settings: GatewaySettings | None = None
) -> argparse.Namespace:
    settings = settings or GatewaySettings()
    parser = argparse.ArgumentParser(
        prog="stoa gateway", description="Stoa model gateway (ModelPolicy engine)"
    )
    parser.add_argument("--config", required=True, help="gateway config file (YAML/JSON), hot-reloaded")
    parser.add_argument(
        "--host", default=settings.host, help="listen address (default: $STOA_GATEWAY_HOST or 0.0.0.0)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=settings.port_number,
        help="listen port (default: $STOA_GATEWAY_PORT_NUMBER or 8080)",
    )
    parser.add_argument(
        "--audit-log", default=None, help="audit log file (JSON lines); '-' or unset: stdout; 'off': none"
    )
    parser.add_argument(
        "--redis-url",
        default=settings.redis_url,
        help="Redis/Valkey holding limits and budgets shared by every replica ($STOA_GATEWAY_REDIS_URL); "
        "unset: each replica holds limit / replicas",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=settings.replicas,
        help="gateway replicas, until Redis says how many are ready ($STOA_GATEWAY_REPLICAS, default 1)",
    )
    parser.add_argument(
        "--limits-prefix",
        default=settings.limits_prefix,
        help="key prefix in Redis: one per namespace's gateway ($STOA_GATEWAY_LIMITS_PREFIX)",
    )
    return parser.parse_args(argv)


def limits_from(args: argparse.Namespace) -> Limits:
    """Shared limits when a Redis URL is given, else this replica's share of each limit."""
    if not args.redis_url:
        return LocalLimits(args.replicas)
    return SharedLimits(
        args.redis_url,
        prefix=args.limits_prefix,
        replicas=args.replicas,
        replica_id=f"{socket.gethostname()}:{os.getpid()}",  # the pod name in Kubernetes
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = GatewaySettings()
    except (ValidationError, ValueError) as exc:
        print(f"Invalid gateway configuration: {exc}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings)
    try:
        run_gateway(args.config, args.host, args.port, args.audit_log, limits_from(args))
    except ConfigError as exc:
        print(f"Invalid gateway config: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
