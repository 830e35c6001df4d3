"""``stoa dev services|cluster up|down``: long-lived local components for humans and scripts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stoa_devenv import demofollow, deploy, imagecli, state, testbed
from stoa_devenv.cluster import ControlPlane
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_devenv.testbed import TestBed


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="local PostgreSQL, RabbitMQ and Kubernetes control plane")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    services = dev_sub.add_parser("services", help="PostgreSQL + RabbitMQ on free loopback ports")
    services.add_argument("action", choices=["up", "down", "status"])
    services.add_argument("--json", action="store_true", help="print machine-readable output")
    cluster = dev_sub.add_parser(
        "cluster",
        help="a single-node Kubernetes cluster: control plane, kubelet + containerd, kube-proxy, CoreDNS",
    )
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument("--json", action="store_true", help="print machine-readable output")
    cluster.add_argument(
        "--no-node",
        action="store_true",
        help="the control plane alone on 127.0.0.1 (no root needed; no pods run)",
    )
    dev.set_defaults(func=run)
    imagecli.add_parser(dev_sub)  # sets its own func
    deploy.add_parser(dev_sub)
    demofollow.add_parser(dev_sub)


def run(args: argparse.Namespace) -> int:
    if args.dev_command == "services":
        return _services(args.action, args.json)
    return _cluster(args.action, args.json, node=not args.no_node)


def _emit(data: dict[str, str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key}={value}")


def _services(action: str, as_json: bool) -> int:
    current = state.load("services")
    if action == "status" or (action == "up" and current is not None):
        if current is None:
            print("No local services are running (stoa dev services up)")
            return 1
        _emit({"postgres_url": current["postgres_url"], "rabbitmq_url": current["rabbitmq_url"]}, as_json)
        return 0
    if action == "up":
        pg = PostgresServer().start()
        rabbit = RabbitMQServer().start()
        data = {
            "postgres_url": pg.dsn,
            "rabbitmq_url": rabbit.url,
            "pg_base": str(pg.base),
            "pg_port": pg.port,
            "rabbit_base": str(rabbit.base),
            "rabbit_ports": [rabbit.port, rabbit.dist_port, rabbit.epmd_port],
        }
        state.save("services", data)
        _emit({"postgres_url": pg.dsn, "rabbitmq_url": rabbit.url}, as_json)
        return 0
    if current is not None:
        port, dist, epmd = current["rabbit_ports"]
        rabbit = RabbitMQServer(base=Path(current["rabbit_base"]), port=port, dist_port=dist, epmd_port=epmd)
        rabbit.stop()
        rabbit.destroy()
        PostgresServer(base=Path(current["pg_base"]), port=current["pg_port"]).destroy()
        state.forget("services")
    print("Local services stopped")
    return 0


def _cluster(action: str, as_json: bool, node: bool) -> int:
    current = state.load("cluster")
    if action == "status" or (action == "up" and current is not None):
        if current is None:
            print("No local cluster is running (stoa dev cluster up)")
            return 1
        _emit({"kubeconfig": current["kubeconfig"], "server": current["server"]}, as_json)
        return 0
    if action == "up":
        if node:
            bed = TestBed().start(detached=True)
            plane = bed.plane
        else:
            plane = ControlPlane().start()
        state.save(
            "cluster",
            {
                "kubeconfig": str(plane.kubeconfig),
                "server": plane.server,
                "base": str(plane.base),
                "pids": plane.pids,
                "node": node,
                "containerd_address": str(bed.containerd_socket) if node else "",
            },
        )
        _emit({"kubeconfig": str(plane.kubeconfig), "server": plane.server}, as_json)
        if not as_json:
            print(f"Use it with: export KUBECONFIG={plane.kubeconfig}")
        return 0
    if current is not None and not current.get("node"):
        ControlPlane(base=Path(current["base"]), pids=dict(current["pids"])).destroy()
    elif (bed_state := testbed.recorded()) is not None:
        testbed.bed_down(bed_state)
    state.forget("cluster")
    print("Local cluster stopped")
    return 0
