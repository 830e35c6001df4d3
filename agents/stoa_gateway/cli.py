"""``stoa gateway``: ``main(argv)`` parses ``--config --port --host --audit-log`` and serves."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from stoa_gateway.config import ConfigError
from stoa_gateway.server import run_gateway


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stoa gateway", description="Stoa model gateway (ModelPolicy engine)"
    )
    parser.add_argument("--config", required=True, help="gateway config file (YAML/JSON), hot-reloaded")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("STOA_GATEWAY_PORT", "8080")),
        help="listen port (default: $STOA_GATEWAY_PORT or 8080)",
    )
    parser.add_argument(
        "--audit-log", default=None, help="audit log file (JSON lines); '-' or unset: stdout; 'off': none"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_gateway(args.config, args.host, args.port, args.audit_log)
    except ConfigError as exc:
        print(f"Invalid gateway config: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
