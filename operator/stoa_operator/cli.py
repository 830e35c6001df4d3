"""``stoa operator``: run the operator (kopf), or ``stoa operator crds|rbac generate|check``, or
``stoa operator drain`` (the chart's pre-delete hook)."""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from stoa_operator import crdgen, drain
from stoa_operator.handlers import register
from stoa_operator.k8s import rbac
from stoa_operator.k8s.client import Kube
from stoa_operator.k8s.gateway_probe import fetch_gateway_status
from stoa_operator.metrics import Metrics
from stoa_operator.reconcile.context import Context
from stoa_operator.runtime_adapter import Runtime
from stoa_operator.settings import OperatorSettings
from stoa_telemetry.otel import setup_tracing
from stoa_telemetry.otel_env import passed_down


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stoa operator",
        description="Run the Stoa operator. Configuration: STOA_OPERATOR_* env (docs/operator.md). "
        "Also: `stoa operator crds generate|check`, `stoa operator rbac generate|check`, "
        "`stoa operator drain` (what `helm uninstall` runs first).",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="namespace to watch (repeat; default: settings)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    try:
        settings = OperatorSettings()
    except (ValidationError, ValueError) as exc:
        print(f"Invalid operator configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    setup_tracing("stoa-operator")  # conversation starts; OTEL_* from the chart, off without an endpoint
    for deprecated in ("postgres_dsn", "rabbitmq_url"):
        if getattr(settings, deprecated):
            logging.getLogger(__name__).warning(
                "Ignoring STOA_OPERATOR_%s (deprecated in 0.2.0): each namespace's connection Secret is used",
                deprecated.upper(),
            )
    namespaces = args.namespace or settings.namespace_list()
    metrics = Metrics()
    if settings.metrics_port_number:
        start_http_server(settings.metrics_port_number, registry=metrics.registry)
    kube = Kube.from_environment(settings.field_manager, pool_size=settings.max_workers * 2)
    runtime = Runtime()
    ctx = Context(
        kube=kube,
        runtime=runtime,
        settings=settings,
        gateway_probe=fetch_gateway_status,
        otel_env=tuple(passed_down(os.environ).items()),
    )
    registry = kopf.OperatorRegistry()
    register(registry, ctx, metrics)

    kopf_settings = kopf.OperatorSettings()
    kopf_settings.execution.executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.max_workers)
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="stoa.dev")
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="stoa.dev", key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = "stoa.dev/finalizer"
    kopf_settings.posting.level = logging.WARNING  # our own Events cover transitions; no per-handler noise
    kopf_settings.networking.request_timeout = 60
    kopf_settings.watching.server_timeout = 300
    liveness = (
        f"http://0.0.0.0:{settings.liveness_port_number}/healthz" if settings.liveness_port_number else None
    )
    logging.getLogger("stoa.operator").info(
        "Starting operator namespaces=%s metrics_port=%s liveness=%s",
        ",".join(namespaces) or "*",
        settings.metrics_port_number,
        liveness,
    )
    try:
        kopf.run(
            registry=registry,
            settings=kopf_settings,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        runtime.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "crds":
        return crdgen.main(args[1:])
    if args and args[0] == "rbac":
        return rbac.main(args[1:])
    if args and args[0] == "drain":
        return drain.main(args[1:])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
