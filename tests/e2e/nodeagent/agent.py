"""A test-only kubelet + scheduler (+ kube-proxy): registers a Ready Node, binds pending Pods to it, runs
their containers as local processes and reports Pod status back to the real API server.

- Images are ignored. ``command`` (or the image's entrypoint, ``["stoa"]`` by default) + ``args`` run
  locally; ``stoa`` maps to this venv's ``stoa`` script, ``python``/``python3`` to ``sys.executable``.
- Env: literals, ``$(VAR)``, ``secretKeyRef``, ``configMapKeyRef``, ``envFrom``, ``fieldRef`` (name,
  namespace, uid, labels, annotations, nodeName, serviceAccountName, podIP = hostIP = 127.0.0.1).
- Ports: :mod:`~tests.e2e.nodeagent.spec` (env ``*_PORT`` / ``--port`` equal to a containerPort -> a free
  host port). Services: :mod:`~tests.e2e.nodeagent.services` (Service addresses in env and args -> a
  loopback proxy to the Ready pods).
- Volumes and the service account token: :mod:`~tests.e2e.nodeagent.volumes`; mount paths in command,
  args, env and workingDir are rewritten to local directories.
- Probes: :mod:`~tests.e2e.nodeagent.probes`; processes, restartPolicy and backoff:
  :mod:`~tests.e2e.nodeagent.processes`; status: :mod:`~tests.e2e.nodeagent.status`; the Node and its
  Lease: :mod:`~tests.e2e.nodeagent.node`.
- Deletion: SIGTERM to the process group, SIGKILL after the grace period, then the Pod is removed
  (delete with grace 0 and a UID precondition), as the kubelet does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tests.e2e.nodeagent import node, spec
from tests.e2e.kube import JSON, Kube, KubeError
from tests.e2e.nodeagent.processes import Restarts, signal_pod, step_container, stop_pod_processes
from tests.e2e.nodeagent.proxy import ServiceProxies
from tests.e2e.nodeagent.runs import Container, PodRun, Prober
from tests.e2e.nodeagent.services import Backend, ServiceKey, rewrite_service_addresses, service_references
from tests.e2e.nodeagent.status import report_status
from tests.e2e.nodeagent.volumes import SA_DIR, fetch_sources, sync_volumes, write_service_account

SERVICE_SYNC_SECONDS = 1.0
VOLUME_SYNC_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_programs() -> dict[str, list[str]]:
    """How image commands map to local programs: ``stoa`` is this venv's script."""
    stoa = Path(sys.executable).parent / "stoa"
    python = [sys.executable]
    return {
        "stoa": [str(stoa)] if stoa.exists() else [sys.executable, "-m", "stoa_cli.main"],
        "python": python,
        "python3": python,
        "python3.11": python,
    }


class NodeAgent:
    """Run ``start()`` from a fixture, ``stop()`` at teardown. Thread-safe helpers for tests below."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        name: str | None = None,
        namespaces: Iterable[str] | None = None,
        label_selector: str | None = None,
        workdir: Path | None = None,
        entrypoint: list[str] | None = None,
        programs: dict[str, list[str]] | None = None,
        extra_env: dict[str, str] | None = None,
        restart_backoff: tuple[float, float] = (0.5, 5.0),
        tick: float = 0.25,
    ) -> None:
        self.kube = Kube.from_kubeconfig(kubeconfig)
        self.name = name or f"stoa-node-{secrets.token_hex(3)}"
        self.namespaces = sorted(namespaces) if namespaces else None
        self.label_selector = label_selector
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.entrypoint = entrypoint if entrypoint is not None else ["stoa"]
        self.programs = {**default_programs(), **(programs or {})}
        self.extra_env = extra_env or {}
        self.restarts = Restarts(*restart_backoff)
        self.tick = tick
        self.pods: dict[str, PodRun] = {}  # uid -> run
        self.services = ServiceProxies()
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_heartbeat = 0.0
        self._next_node_status = 0.0
        self._next_service_sync = 0.0

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> NodeAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        node.register_node(self.kube, self.name)
        now = time.monotonic()
        self._next_heartbeat, self._next_node_status = (
            now + node.HEARTBEAT_SECONDS,
            now + node.NODE_STATUS_SECONDS,
        )
        self._thread = threading.Thread(target=self._run, name=f"node-agent-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, delete_pods: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            runs = list(self.pods.values())
            for run in runs:
                signal_pod(run, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                c.running() for r in runs for c in r.containers.values()
            ):
                time.sleep(0.05)
            for run in runs:
                signal_pod(run, signal.SIGKILL)
                for container in run.containers.values():
                    if container.proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            container.proc.wait(timeout=5)
                if delete_pods:
                    self._delete_pod(run.pod)
            self.pods.clear()
        self.services.close()
        node.delete_node(self.kube, self.name)

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for tests -----------------------------------------------------------------------------
    def _find(self, name: str, namespace: str) -> PodRun:
        with self._lock:
            for run in self.pods.values():
                if run.name == name and run.namespace == namespace:
                    return run
        raise KeyError(f"pod {namespace}/{name} is not running on node {self.name}")

    def _container(self, name: str, namespace: str, container: str | None) -> Container:
        run = self._find(name, namespace)
        return run.containers[container] if container else next(iter(run.containers.values()))

    def kill_pod_process(
        self, name: str, namespace: str = "default", container: str | None = None, sig: int = signal.SIGKILL
    ) -> int:
        """Signal a container's process group (default SIGKILL: a crash); returns the pid."""
        with self._lock:
            target = self._container(name, namespace, container)
            if target.proc is None or not target.running():
                raise RuntimeError(f"container {target.name} of pod {namespace}/{name} is not running")
            os.killpg(target.proc.pid, sig)
            return target.proc.pid

    def pod_port(self, name: str, namespace: str = "default", port: int | str | None = None) -> int:
        """The host port of a containerPort (number or name; default: the pod's first port)."""
        with self._lock:
            run = self._find(name, namespace)
            if port is None:
                return next(iter(run.ports.values()))
            if isinstance(port, str):
                for c in run.pod["spec"]["containers"]:
                    for p in c.get("ports") or []:
                        if p.get("name") == port:
                            return run.ports[int(p["containerPort"])]
                raise KeyError(f"pod {namespace}/{name} has no port named {port}")
            return run.ports[port]

    def pod_terminating(self, name: str, namespace: str = "default") -> bool:
        """True once the node has started stopping the pod (SIGTERM sent), or it is gone from the node."""
        with self._lock:
            try:
                return self._find(name, namespace).terminating_until is not None
            except KeyError:
                return True

    def pod_names(self, namespace: str | None = None) -> list[str]:
        with self._lock:
            return sorted(r.name for r in self.pods.values() if namespace in (None, r.namespace))

    def service_port(self, name: str, namespace: str, port: int) -> int:
        """The loopback port that reaches ``<name>.<namespace>.svc:<port>`` (proxy started if needed)."""
        return self.services.port_for(ServiceKey(namespace, name, port))

    def pod_env(self, name: str, namespace: str = "default", container: str | None = None) -> dict[str, str]:
        with self._lock:
            return dict(self._container(name, namespace, container).env)

    def logs(self, name: str, namespace: str = "default", container: str | None = None) -> str:
        with self._lock:
            path = self._container(name, namespace, container).log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self, tail: int = 20) -> str:
        """Every pod, container state and log tail, and the Service proxies: print it when a test fails."""
        lines = [f"node {self.name} workdir={self.workdir} errors={self.errors[-5:]}"]
        with self._lock:
            for run in self.pods.values():
                lines.append(f"pod {run.namespace}/{run.name} ports={run.ports}")
                for c in run.containers.values():
                    pid = c.proc.pid if c.proc else None
                    lines.append(
                        f"  container {c.name} pid={pid} running={c.running()} ready={c.ready} "
                        f"restarts={c.restart_count} waiting={c.waiting_reason!r} {c.waiting_message}"
                        f" argv={c.argv}"
                    )
                    if c.log_path.exists():
                        log = c.log_path.read_text(errors="replace").splitlines()[-tail:]
                        lines += [f"    | {line}" for line in log]
        lines += self.services.describe()
        return "\n".join(lines)

    # ---- main loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._once()
            except Exception as exc:  # keep the node alive; tests read .errors / describe()
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.tick - (time.monotonic() - started)))

    def _once(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            node.renew_lease(self.kube, self.name)
            self._next_heartbeat = now + node.HEARTBEAT_SECONDS
        if now >= self._next_node_status:
            node.post_node_status(self.kube, self.name)
            self._next_node_status = now + node.NODE_STATUS_SECONDS
        if now >= self._next_service_sync:
            self.services.update_services(self._list("services"))
            self._next_service_sync = now + SERVICE_SYNC_SECONDS
        self._bind_pending()
        mine = {p["metadata"]["uid"]: p for p in self._list("pods", f"spec.nodeName={self.name}")}
        with self._lock:
            for uid, pod in mine.items():
                run = self.pods.get(uid)
                if run is None:
                    if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") in (
                        "Succeeded",
                        "Failed",
                    ):
                        if pod["metadata"].get("deletionTimestamp"):
                            self._delete_pod(pod)
                        continue
                    run = self._new_run(pod)
                run.pod = pod
            for uid, run in list(self.pods.items()):
                if uid not in mine:  # force-deleted: nothing to report, just stop it
                    signal_pod(run, signal.SIGKILL)
                    del self.pods[uid]
                    continue
                self._step(run)
            self.services.update_backends([self._backend(run) for run in self.pods.values()])

    def _list(self, plural: str, field_selector: str | None = None) -> list[JSON]:
        query: dict[str, str] = {}
        if field_selector:
            query["fieldSelector"] = field_selector
        if self.label_selector and plural == "pods":
            query["labelSelector"] = self.label_selector
        paths = (
            [f"/api/v1/namespaces/{ns}/{plural}" for ns in self.namespaces]
            if self.namespaces
            else [f"/api/v1/{plural}"]
        )
        items: list[JSON] = []
        for path in paths:
            items += self.kube.request("GET", path, query=query or None).get("items", [])
        return items

    def _bind_pending(self) -> None:
        for pod in self._list("pods", "spec.nodeName=,status.phase=Pending"):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
            }
            try:
                self.kube.create(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", binding
                )
            except KubeError as err:
                if err.status not in (404, 409):
                    raise

    # ---- pods ------------------------------------------------------------------------------------------
    def _new_run(self, pod: JSON) -> PodRun:
        meta = pod["metadata"]
        workdir = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        run = PodRun(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            pod=pod,
            workdir=workdir,
            ports={p: _free_port() for p in spec.pod_ports(pod)},
        )
        for c in pod["spec"]["containers"]:
            run.containers[c["name"]] = Container(spec=c, log_path=workdir / f"{c['name']}.log")
        self.pods[run.uid] = run
        return run

    @staticmethod
    def _backend(run: PodRun) -> Backend:
        return Backend(
            namespace=run.namespace,
            name=run.name,
            labels=run.pod["metadata"].get("labels") or {},
            containers=run.pod["spec"]["containers"],
            ports=run.ports,
            ready=run.ready(),
        )

    def _with_services(self, run: PodRun, values: list[str]) -> list[str]:
        """Service addresses in ``values`` pointed at their loopback proxies (started on first use)."""
        known = self.services.known()
        proxies = {
            key: self.services.port_for(key)
            for value in values
            for key in service_references(value, run.namespace, known)
        }
        return [rewrite_service_addresses(v, run.namespace, known, proxies) for v in values]

    def _prepare(self, run: PodRun) -> None:
        """Volumes, service account, env and argv of every container (raises MissingReferenceError)."""
        sources = fetch_sources(self.kube, run)
        volume_dirs = sync_volumes(run, sources, force=True)
        sa_dir = write_service_account(self.kube, run)
        for container in run.containers.values():
            mounts = {
                m["mountPath"]: str(Path(volume_dirs[m["name"]]) / m.get("subPath", ""))
                for m in container.spec.get("volumeMounts") or []
                if m["name"] in volume_dirs
            }
            base = {
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(run.workdir / "home"),
                "TMPDIR": str(run.workdir / "tmp"),
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
                "HOSTNAME": run.name,
                **self.extra_env,
            }
            if sa_dir is not None:
                mounts.setdefault(SA_DIR, str(sa_dir))
                base["KUBECONFIG"] = str(sa_dir / "kubeconfig")
            env = spec.resolve_env(run.pod, container.spec, sources, run.ports)
            names = list(env)
            values = self._with_services(run, [spec.rewrite_paths(env[k], mounts) for k in names])
            env = dict(zip(names, values, strict=True))
            container.env = {**base, **env}
            argv = spec.command_argv(container.spec, env, mounts, self.entrypoint, self.programs)
            container.argv = self._with_services(run, spec.rewrite_port_args(argv, run.ports))
            run.mounts[container.name] = mounts
            if container.spec.get("readinessProbe"):
                container.readiness = Prober(container.spec["readinessProbe"])
            if container.spec.get("livenessProbe"):
                container.liveness = Prober(container.spec["livenessProbe"])
            if container.spec.get("startupProbe"):
                container.startup = Prober(container.spec["startupProbe"])
        (run.workdir / "home").mkdir(exist_ok=True)
        (run.workdir / "tmp").mkdir(exist_ok=True)
        run.prepared = True

    def _step(self, run: PodRun) -> None:
        now = time.monotonic()
        if run.pod["metadata"].get("deletionTimestamp"):
            if stop_pod_processes(run, now):
                with contextlib.suppress(KubeError):
                    report_status(self.kube, run)
                self._delete_pod(run.pod)
                del self.pods[run.uid]
            return
        if not run.prepared:
            try:
                self._prepare(run)
            except spec.MissingReferenceError as err:
                for c in run.containers.values():
                    c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(err)
                report_status(self.kube, run)
                return
        elif now >= run.next_volume_sync:
            sync_volumes(run, fetch_sources(self.kube, run))
            run.next_volume_sync = now + VOLUME_SYNC_SECONDS
        for container in run.containers.values():
            step_container(run, container, now, self.restarts, self.programs)
        report_status(self.kube, run)

    def _delete_pod(self, pod: JSON) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            self.kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except KubeError as err:
            if err.status not in (404, 409):
                raise
