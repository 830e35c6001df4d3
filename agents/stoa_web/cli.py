"""``stoa api``: serve the API and the console (uvicorn), and ``/metrics`` on its own port."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from stoa_web.settings import ApiSettings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stoa api",
        description="Serve the Stoa API and web console. Flags override the STOA_API_* environment.",
    )
    parser.add_argument("--host", help="listen address (default 127.0.0.1; the chart sets 0.0.0.0)")
    parser.add_argument("--port", dest="port_number", type=int, help="listen port (default 8080)")
    parser.add_argument(
        "--metrics-port", dest="metrics_port_number", type=int, help="Prometheus /metrics port (9090, 0: off)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig of the API's own identity (default: in-cluster)")
    parser.add_argument("--postgres-dsn", help="runtime store of every namespace (default: its Secret)")
    parser.add_argument("--gateways", help="fixed gateway replicas: ns=URL[,URL][;ns=URL]")
    parser.add_argument("--default-namespace", help="the namespace the console opens (default: default)")
    parser.add_argument(
        "--openapi", metavar="FILE", help="write the OpenAPI document to FILE ('-': stdout) and exit"
    )
    return parser.parse_args(argv)


def api_main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {
        k: v
        for k, v in vars(args).items()
        if v is not None and k in ApiSettings.model_fields and k != "openapi"
    }
    try:
        settings = ApiSettings(**overrides)
    except (ValidationError, ValueError) as exc:  # UnknownSettingError is a ValueError
        print(f"Invalid stoa api settings: {exc}", file=sys.stderr)
        return 2
    if args.openapi:
        from stoa_web.app import build_app  # noqa: PLC0415 - the app is imported only when needed

        text = json.dumps(build_app(settings).openapi(), indent=2, sort_keys=True) + "\n"
        if args.openapi == "-":
            sys.stdout.write(text)
        else:
            Path(args.openapi).write_text(text)
        return 0
    return serve(settings)


def serve(settings: ApiSettings) -> int:
    import uvicorn  # noqa: PLC0415 - `stoa --help` and other commands start without the server
    from prometheus_client import start_http_server  # noqa: PLC0415 - same

    from stoa_web.app import create_app  # noqa: PLC0415 - same

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = create_app(settings)
    if settings.metrics_port_number:
        registry = app.state.services.metrics.registry
        start_http_server(settings.metrics_port_number, settings.host, registry=registry)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port_number,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
        server_header=False,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(api_main())
