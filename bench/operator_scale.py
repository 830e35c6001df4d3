"""Operator scale benchmark: 500 Agents (+ their ModelPolicy) applied at once against a real control plane.

What is measured (no kubelet exists, so agent pods never become ready; we wait for what the operator
can honestly reach): every Agent has its Deployment, Service and ServiceAccount, and its status has
``Progressing=True`` (reason RollingOut) with ``observedGeneration == metadata.generation``.
Also: the operator's CPU time and peak RSS, and the p95 latency from an Agent spec change (replicas)
to its Deployment carrying the new value. Writes JSON to bench/results/operator_scale.json.

    .venv/bin/python bench/operator_scale.py [--agents 500] [--changes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from stoa_devenv.cluster import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.operator.harness import (  # noqa: E402
    Cluster,
    OperatorProcess,
    install_crds,
    operator_kubeconfig,
    settled,
)


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, RSS bytes) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * resource.getpagesize()
    return cpu, rss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    plane = ControlPlane().start()
    proc: OperatorProcess | None = None
    try:
        api = config.new_client_from_config(str(plane.kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        install_crds(plane)
        kubeconfig = operator_kubeconfig(plane, api)
        ns = "bench"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        kube = Cluster(api, ns)
        kube.secret(
            "stoa-connections",
            {"postgresDsn": "postgresql://x@127.0.0.1:1/none", "rabbitmqUrl": "amqp://x@127.0.0.1:1/"},
        )
        proc = OperatorProcess(
            kubeconfig,
            [ns],
            Path(tempfile.gettempdir()) / "stoa-bench-operator.log",
            env_extra={
                "STOA_OPERATOR_RESYNC_SECONDS": "600",
                "STOA_OPERATOR_MAX_WORKERS": "16",
                "STOA_OPERATOR_LOG_LEVEL": "WARNING",
            },
        ).start()
        time.sleep(3)
        pid = proc.proc.pid if proc.proc else 0
        cpu0, _ = _proc_stats(pid)
        peak_rss = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_rss
            while not stop.is_set():
                try:
                    peak_rss = max(peak_rss, _proc_stats(pid)[1])
                except OSError:
                    return
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        kube.create(
            "modelpolicies",
            {
                "apiVersion": "stoa.dev/v1alpha1",
                "kind": "ModelPolicy",
                "metadata": {"name": "bench-models"},
                "spec": {"targets": [{"name": "a", "baseURL": "http://a.invalid/v1", "model": "m"}]},
            },
        )
        names = [f"ag-{i:04d}" for i in range(args.agents)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: kube.create(
                        "agents",
                        {
                            "apiVersion": "stoa.dev/v1alpha1",
                            "kind": "Agent",
                            "metadata": {"name": n},
                            "spec": {
                                "role": "member",
                                "persona": f"You are {n}.",
                                "modelPolicyRef": {"name": "bench-models"},
                            },
                        },
                    ),
                    names,
                )
            )
        applied_s = time.monotonic() - t0
        custom = client.CustomObjectsApi(api)
        done: set[str] = set()
        while len(done) < len(names):
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit(f"timeout: {len(done)}/{len(names)} settled")
            items = custom.list_namespaced_custom_object("stoa.dev", "v1alpha1", ns, "agents")["items"]
            done = {i["metadata"]["name"] for i in items if settled(i, "Progressing", "True", "RollingOut")}
            time.sleep(1)
        all_settled_s = time.monotonic() - t0
        deployments = len(client.AppsV1Api(api).list_namespaced_deployment(ns).items)
        cpu1, _ = _proc_stats(pid)

        # Spec change -> Deployment update latency, measured with a watch on Deployments.
        seen: dict[str, float] = {}
        want: dict[str, int] = {}
        w = watch.Watch()

        def watcher() -> None:
            for event in w.stream(
                client.AppsV1Api(api).list_namespaced_deployment, ns, timeout_seconds=int(args.timeout)
            ):
                dep: Any = event["object"]
                name = dep.metadata.name.removeprefix("agent-")
                if name in want and dep.spec.replicas == want[name] and name not in seen:
                    seen[name] = time.monotonic()
                if stop.is_set():
                    return

        threading.Thread(target=watcher, daemon=True).start()
        time.sleep(1)
        latencies = []
        for i, name in enumerate(names[: args.changes]):
            want[name] = 3
            start = time.monotonic()
            kube.patch("agents", name, {"spec": {"replicas": 3}})
            deadline = start + 60
            while name not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
            latencies.append(seen.get(name, deadline) - start)
            _ = i
        stop.set()
        cpu2, _ = _proc_stats(pid)
        latencies.sort()
        result = {
            "benchmark": "operator_scale",
            "agents": args.agents,
            "condition_waited_for": "children created and Agent Progressing=True/RollingOut with "
            "observedGeneration == generation (no kubelet: pods never become Ready)",
            "apply_seconds": round(applied_s, 2),
            "all_settled_seconds": round(all_settled_s, 2),
            "agent_deployments": deployments,
            "operator_cpu_seconds_during_rollout": round(cpu1 - cpu0, 2),
            "operator_cpu_seconds_total": round(cpu2 - cpu0, 2),
            "operator_peak_rss_mib": round(peak_rss / 2**20, 1),
            "spec_change_to_child_update_seconds": {
                "n": len(latencies),
                "p50": round(statistics.median(latencies), 3),
                "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                "max": round(latencies[-1], 3),
            },
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
        out = ROOT / "bench" / "results" / "operator_scale.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if proc is not None:
            proc.stop()
        plane.destroy()


if __name__ == "__main__":
    sys.exit(main())
