"""A test-only kubelet + scheduler: registers a Ready Node, binds pending Pods to it and runs their
containers as local processes, reporting Pod status back to the real API server.

- Images are ignored. ``command`` (or the image's entrypoint, ``["stoa"]`` by default) + ``args`` run
  locally; ``stoa`` maps to this venv's ``stoa`` script, ``python``/``python3`` to ``sys.executable``.
- Env: literals, ``$(VAR)``, ``secretKeyRef``, ``configMapKeyRef``, ``envFrom``, ``fieldRef`` (name,
  namespace, uid, labels, annotations, nodeName, serviceAccountName, podIP = hostIP = 127.0.0.1).
- Ports: see :mod:`tests.e2e.nodeagent.spec` (env ``*_PORT`` equal to a containerPort -> a free host port).
- Volumes: ConfigMap / Secret / projected -> files, rewritten when the object changes (hot reload);
  emptyDir and everything else -> an empty directory. Mount paths in command, args, env and workingDir
  are rewritten to those directories.
- Service account: unless ``automountServiceAccountToken: false``, a bound token from the TokenRequest
  API, written with the CA and namespace to the usual directory, and ``KUBECONFIG`` pointing at a
  kubeconfig that uses it (the kubernetes client and kopf fall back to it outside a cluster).
- Probes: readiness, liveness and startup (httpGet / tcpSocket / exec against 127.0.0.1).
- restartPolicy with exponential backoff (``restart_backoff``), restartCount, lastState, exit codes.
- Deletion: SIGTERM to the process group, SIGKILL after the grace period, then the Pod is removed
  (delete with grace 0 and a UID precondition), as the kubelet does.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.e2e.nodeagent import spec
from tests.e2e.nodeagent.kube import JSON, Kube, KubeError

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


@dataclass
class Prober:
    probe: JSON
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    passed: bool = False  # readiness/startup: currently passing


@dataclass
class Container:
    spec: JSON
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    crashes_in_a_row: int = 0
    last_started_monotonic: float = 0.0
    next_start_at: float = 0.0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: JSON | None = None
    terminated: JSON | None = None  # current state when exited and not (yet) restarted
    final: bool = False  # exited and will not restart
    kill_at: float | None = None
    ready: bool = False
    started: bool = False
    readiness: Prober | None = None
    liveness: Prober | None = None
    startup: Prober | None = None
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    pod: JSON
    workdir: Path
    ports: dict[int, int]
    containers: dict[str, Container] = field(default_factory=dict)
    mounts: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> mountPath -> dir
    volume_versions: dict[str, str] = field(default_factory=dict)
    prepared: bool = False
    start_time: str = field(default_factory=_now)
    terminating_until: float | None = None
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, since)
    last_status: JSON | None = None
    next_volume_sync: float = 0.0


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
        self.backoff_base, self.backoff_cap = restart_backoff
        self.tick = tick
        self.pods: dict[str, PodRun] = {}  # uid -> run
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_heartbeat = 0.0
        self._next_node_status = 0.0

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> NodeAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register_node()
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
                self._signal_all(run, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                c.running() for r in runs for c in r.containers.values()
            ):
                time.sleep(0.05)
            for run in runs:
                self._signal_all(run, signal.SIGKILL)
                for container in run.containers.values():
                    if container.proc is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            container.proc.wait(timeout=5)
                if delete_pods:
                    self._delete_pod(run)
            self.pods.clear()
        with contextlib.suppress(KubeError, OSError):
            self.kube.delete(f"/api/v1/nodes/{self.name}")

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

    def kill_pod_process(
        self, name: str, namespace: str = "default", container: str | None = None, sig: int = signal.SIGKILL
    ) -> int:
        """Signal a container's process group (default SIGKILL: a crash); returns the pid."""
        with self._lock:
            run = self._find(name, namespace)
            target = run.containers[container] if container else next(iter(run.containers.values()))
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

    def pod_env(self, name: str, namespace: str = "default", container: str | None = None) -> dict[str, str]:
        with self._lock:
            run = self._find(name, namespace)
            target = run.containers[container] if container else next(iter(run.containers.values()))
            return dict(target.env)

    def logs(self, name: str, namespace: str = "default", container: str | None = None) -> str:
        with self._lock:
            run = self._find(name, namespace)
            target = run.containers[container] if container else next(iter(run.containers.values()))
            path = target.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self, tail: int = 20) -> str:
        """Every pod, container state and log tail: print it when a test fails."""
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
        return "\n".join(lines)

    # ---- node ------------------------------------------------------------------------------------------
    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "stoa.dev/node-agent": "true",
                },
            },
        }
        try:
            self.kube.create("/api/v1/nodes", node)
        except KubeError as err:
            if err.status != 409:
                raise
        self._node_status()
        self._heartbeat()

    def _node_status(self) -> None:
        now = _now()
        resources = {"cpu": "32", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
        conditions = [
            {"type": t, "status": "False", "reason": r, "lastHeartbeatTime": now, "lastTransitionTime": now}
            for t, r in (
                ("MemoryPressure", "KubeletHasSufficientMemory"),
                ("DiskPressure", "KubeletHasNoDiskPressure"),
                ("PIDPressure", "KubeletHasSufficientPID"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "stoa test node agent is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        )
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": spec.POD_IP},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": self.name,
                "containerRuntimeVersion": "stoa-node-agent://0.1",
                "kernelVersion": os.uname().release,
                "kubeProxyVersion": "v1.33.0",
                "kubeletVersion": "v1.33.0",
                "machineID": self.name,
                "operatingSystem": "linux",
                "osImage": "stoa test node agent",
                "systemUUID": self.name,
            },
        }
        self.kube.patch(f"/api/v1/nodes/{self.name}/status", {"status": status})

    def _heartbeat(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        lease = self.kube.get_or_none(path)
        if lease is None:
            node = self.kube.get(f"/api/v1/nodes/{self.name}")
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()},
            }
            with contextlib.suppress(KubeError):
                self.kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body)
        else:
            self.kube.patch(path, {"spec": {"renewTime": _micro_now()}}, kind="merge-patch")

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
            self._heartbeat()
            self._next_heartbeat = now + 10
        if now >= self._next_node_status:
            self._node_status()
            self._next_node_status = now + 30
        self._bind_pending()
        mine = {p["metadata"]["uid"]: p for p in self._list_pods(f"spec.nodeName={self.name}")}
        with self._lock:
            for uid, pod in mine.items():
                run = self.pods.get(uid)
                if run is None:
                    if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") in (
                        "Succeeded",
                        "Failed",
                    ):
                        if pod["metadata"].get("deletionTimestamp"):
                            self._delete_pod_object(pod)
                        continue
                    run = self._new_run(pod)
                run.pod = pod
            for uid, run in list(self.pods.items()):
                if uid not in mine:  # force-deleted: nothing to report, just stop it
                    self._signal_all(run, signal.SIGKILL)
                    del self.pods[uid]
                    continue
                self._step(run)

    def _list_pods(self, field_selector: str) -> list[JSON]:
        query = {"fieldSelector": field_selector}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        paths = (
            [f"/api/v1/namespaces/{ns}/pods" for ns in self.namespaces]
            if self.namespaces
            else ["/api/v1/pods"]
        )
        items: list[JSON] = []
        for path in paths:
            items += self.kube.request("GET", path, query=query).get("items", [])
        return items

    def _bind_pending(self) -> None:
        for pod in self._list_pods("spec.nodeName=,status.phase=Pending"):
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

    def _sources(self, run: PodRun) -> dict[tuple[str, str], JSON | None]:
        sources: dict[tuple[str, str], JSON | None] = {}
        for kind, name in spec.referenced_objects(run.pod):
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            sources[(kind, name)] = self.kube.get_or_none(
                f"/api/v1/namespaces/{run.namespace}/{plural}/{name}"
            )
        return sources

    def _prepare(self, run: PodRun) -> None:
        """Volumes, service account, env and argv of every container (raises MissingReferenceError)."""
        sources = self._sources(run)
        volume_dirs = self._sync_volumes(run, sources, force=True)
        sa_dir = self._service_account(run)
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
            env = {k: spec.rewrite_paths(v, mounts) for k, v in env.items()}
            container.env = {**base, **env}
            container.argv = spec.command_argv(container.spec, env, mounts, self.entrypoint, self.programs)
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

    def _sync_volumes(
        self, run: PodRun, sources: dict[tuple[str, str], JSON | None], force: bool = False
    ) -> dict[str, str]:
        """Write ConfigMap/Secret volumes (atomically, only when their objects changed)."""
        dirs: dict[str, str] = {}
        for volume in run.pod["spec"].get("volumes") or []:
            target = run.workdir / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            dirs[volume["name"]] = str(target)
            refs = [(kind, volume[f][k]) for kind, (f, k) in spec.VOLUME_SOURCES.items() if f in volume] + [
                (
                    "ConfigMap" if "configMap" in s else "Secret",
                    (s.get("configMap") or s.get("secret"))["name"],
                )
                for s in (volume.get("projected") or {}).get("sources") or []
                if "configMap" in s or "secret" in s
            ]
            if not refs:
                continue
            version = ",".join(
                str(((sources.get(r) or {}).get("metadata") or {}).get("resourceVersion")) for r in refs
            )
            if not force and run.volume_versions.get(volume["name"]) == version:
                continue
            files = spec.volume_files(volume, sources) or {}
            for rel, content in files.items():
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(content)
                tmp.replace(path)
            for existing in target.rglob("*"):
                if existing.is_file() and existing.relative_to(target).as_posix() not in files:
                    existing.unlink()
            run.volume_versions[volume["name"]] = version
        return dirs

    def _service_account(self, run: PodRun) -> Path | None:
        pod_spec = run.pod["spec"]
        if pod_spec.get("automountServiceAccountToken") is False:
            return None
        sa = pod_spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600 * 6,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": run.name, "uid": run.uid},
            },
        }
        try:
            token = self.kube.create(
                f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{sa}/token", request
            )["status"]["token"]
        except KubeError as err:
            if err.status == 404:
                raise spec.MissingReferenceError(f"ServiceAccount {sa} not found") from err
            raise
        sa_dir = run.workdir / "serviceaccount"
        sa_dir.mkdir(exist_ok=True)
        (sa_dir / "token").write_text(token)
        (sa_dir / "namespace").write_text(run.namespace)
        if self.kube.ca_file:
            shutil.copy(self.kube.ca_file, sa_dir / "ca.crt")
        cluster: JSON = {"server": self.kube.server}
        if self.kube.ca_file:
            cluster["certificate-authority"] = str(sa_dir / "ca.crt")
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": sa, "user": {"tokenFile": str(sa_dir / "token")}}],
            "contexts": [
                {"name": "local", "context": {"cluster": "local", "user": sa, "namespace": run.namespace}}
            ],
            "current-context": "local",
        }
        (sa_dir / "kubeconfig").write_text(json.dumps(kubeconfig, indent=2))
        return sa_dir

    def _step(self, run: PodRun) -> None:
        now = time.monotonic()
        deleting = bool(run.pod["metadata"].get("deletionTimestamp"))
        if deleting:
            self._terminate(run, now)
            return
        if not run.prepared:
            try:
                self._prepare(run)
            except spec.MissingReferenceError as err:
                for c in run.containers.values():
                    c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(err)
                self._report(run)
                return
        elif now >= run.next_volume_sync:
            self._sync_volumes(run, self._sources(run))
            run.next_volume_sync = now + 1.0
        policy = run.pod["spec"].get("restartPolicy", "Always")
        for container in run.containers.values():
            self._step_container(run, container, policy, now)
        self._report(run)

    def _start(self, run: PodRun, container: Container) -> None:
        log: IO[bytes] = container.log_path.open("ab")
        log.write(f"--- {_now()} start {container.argv}\n".encode())
        log.flush()
        cwd = container.spec.get("workingDir")
        cwd = spec.rewrite_paths(cwd, run.mounts[container.name]) if cwd else str(run.workdir)
        try:
            container.proc = subprocess.Popen(
                container.argv,
                env=container.env,
                cwd=cwd if Path(cwd).is_dir() else str(run.workdir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as err:
            container.waiting_reason, container.waiting_message = "StartError", str(err)
            container.proc = None
            container.final = False
            container.next_start_at = time.monotonic() + self.backoff_cap
            return
        finally:
            log.close()
        container.started_at = _now()
        container.last_started_monotonic = time.monotonic()
        container.terminated = None
        container.waiting_reason = container.waiting_message = ""
        container.kill_at = None
        container.ready = False
        container.started = container.startup is None
        for prober in (container.readiness, container.liveness, container.startup):
            if prober is not None:
                prober.successes = prober.failures = 0
                prober.passed = False
                prober.next_at = time.monotonic() + spec.probe_timing(prober.probe)[0]

    def _step_container(self, run: PodRun, container: Container, policy: str, now: float) -> None:
        if container.proc is None:
            if container.final or now < container.next_start_at:
                return
            self._start(run, container)
            return
        code = container.proc.poll()
        if code is None:
            if container.kill_at is not None and now >= container.kill_at:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.proc.pid, signal.SIGKILL)
            self._probe_all(run, container, now)
            return
        terminated = self._exited(container, code)
        if run.terminating_until is None and spec.should_restart(policy, terminated["exitCode"]):
            ran = time.monotonic() - container.last_started_monotonic
            container.crashes_in_a_row = 1 if ran > 30 else container.crashes_in_a_row + 1
            delay = spec.next_backoff(container.crashes_in_a_row, self.backoff_base, self.backoff_cap)
            container.next_start_at = now + delay
            container.restart_count += 1
            container.last_terminated = container.terminated
            container.proc = None
            container.waiting_reason = "CrashLoopBackOff" if delay >= 1 else "ContainerCreating"
            container.waiting_message = f"back-off {delay:.1f}s restarting failed container"
        else:
            container.final = True

    def _exited(self, container: Container, returncode: int) -> JSON:
        if container.terminated is not None:
            return container.terminated
        exit_code = spec.exit_code_of(returncode)
        terminated: JSON = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": _now(),
        }
        if returncode < 0:
            terminated["signal"] = -returncode
        container.terminated = terminated
        container.ready = False
        return terminated

    def _probe_all(self, run: PodRun, container: Container, now: float) -> None:
        if container.startup is not None and not container.started:
            if self._probe(run, container, container.startup, now):
                container.started = container.startup.passed
            return
        if container.liveness is not None:
            self._probe(run, container, container.liveness, now)
            failure_threshold = spec.probe_timing(container.liveness.probe)[4]
            if container.liveness.failures >= failure_threshold and container.kill_at is None:
                assert container.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.proc.pid, signal.SIGTERM)
                container.kill_at = now + float(run.pod["spec"].get("terminationGracePeriodSeconds", 30))
        if container.readiness is None:
            container.ready = True
        else:
            self._probe(run, container, container.readiness, now)
            container.ready = container.readiness.passed

    def _probe(self, run: PodRun, container: Container, prober: Prober, now: float) -> bool:
        """Run the probe when due; updates counters. Returns whether it ran."""
        if now < prober.next_at:
            return False
        _, period, timeout, success_threshold, failure_threshold = spec.probe_timing(prober.probe)
        prober.next_at = now + period
        try:
            target = spec.probe_target(prober.probe, container.spec, run.ports)
            ok = True if target is None else self._check(target, timeout, container)
        except spec.MissingReferenceError:
            ok = False
        if ok:
            prober.successes, prober.failures = prober.successes + 1, 0
            if prober.successes >= success_threshold:
                prober.passed = True
        else:
            prober.successes, prober.failures = 0, prober.failures + 1
            if prober.failures >= failure_threshold:
                prober.passed = False
        return True

    def _check(self, target: spec.ProbeTarget, timeout: float, container: Container) -> bool:
        if target.kind == "http":
            conn = http.client.HTTPConnection(spec.POD_IP, target.port, timeout=timeout)
            try:
                conn.request("GET", target.path, headers={"User-Agent": "kube-probe/1.33"})
                return 200 <= conn.getresponse().status < 400
            except (OSError, http.client.HTTPException):
                return False
            finally:
                conn.close()
        if target.kind == "tcp":
            try:
                with socket.create_connection((spec.POD_IP, target.port), timeout=timeout):
                    return True
            except OSError:
                return False
        argv = spec.command_argv(
            {"name": "probe", "command": list(target.command)}, container.env, {}, [], self.programs
        )
        try:
            return (
                subprocess.run(
                    argv, env=container.env, capture_output=True, timeout=timeout, check=False
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    # ---- termination -----------------------------------------------------------------------------------
    def _signal_all(self, run: PodRun, sig: int) -> None:
        for container in run.containers.values():
            if container.proc is not None and container.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.proc.pid, sig)

    def _terminate(self, run: PodRun, now: float) -> None:
        if run.terminating_until is None:
            meta = run.pod["metadata"]
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = run.pod["spec"].get("terminationGracePeriodSeconds", 30)
            run.terminating_until = now + float(grace)
            self._signal_all(run, signal.SIGTERM)
        elif now >= run.terminating_until:
            self._signal_all(run, signal.SIGKILL)
        for container in run.containers.values():
            if container.proc is not None:
                code = container.proc.poll()
                if code is not None:
                    self._exited(container, code)
        if any(c.running() for c in run.containers.values()):
            return
        for container in run.containers.values():
            container.final = True
        with contextlib.suppress(KubeError):
            self._report(run)
        self._delete_pod(run)
        del self.pods[run.uid]

    def _delete_pod(self, run: PodRun) -> None:
        self._delete_pod_object(run.pod)

    def _delete_pod_object(self, pod: JSON) -> None:
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

    # ---- status ----------------------------------------------------------------------------------------
    def _container_status(self, container: Container) -> JSON:
        state: JSON
        if container.running():
            state = {"running": {"startedAt": container.started_at}}
        elif container.terminated is not None and (container.final or container.proc is not None):
            state = {"terminated": container.terminated}
        else:
            waiting: JSON = {"reason": container.waiting_reason or "ContainerCreating"}
            if container.waiting_message:
                waiting["message"] = container.waiting_message
            state = {"waiting": waiting}
        status: JSON = {
            "name": container.name,
            "image": container.spec.get("image", ""),
            "imageID": "",
            "ready": container.ready and container.running(),
            "started": container.started and container.running(),
            "restartCount": container.restart_count,
            "state": state,
            "lastState": {"terminated": container.last_terminated} if container.last_terminated else {},
        }
        if container.proc is not None:
            status["containerID"] = f"stoa-node://{container.proc.pid}"
        return status

    def _condition(self, run: PodRun, kind: str, value: bool) -> JSON:
        status = "True" if value else "False"
        previous = run.conditions.get(kind)
        if previous is None or previous[0] != status:
            run.conditions[kind] = (status, _now())
        return {"type": kind, "status": status, "lastTransitionTime": run.conditions[kind][1]}

    def _report(self, run: PodRun) -> None:
        statuses = [self._container_status(c) for c in run.containers.values()]
        phase_inputs = [
            {**s["state"], "ever_started": bool(c.started_at), "final": c.final}
            for s, c in zip(statuses, run.containers.values(), strict=True)
        ]
        phase = spec.pod_phase(run.pod["spec"].get("restartPolicy", "Always"), phase_inputs)
        all_ready = all(s["ready"] for s in statuses)
        status = {
            "phase": phase,
            "hostIP": spec.POD_IP,
            "hostIPs": [{"ip": spec.POD_IP}],
            "podIP": spec.POD_IP,
            "podIPs": [{"ip": spec.POD_IP}],
            "startTime": run.start_time,
            "conditions": [
                self._condition(run, "PodScheduled", True),
                self._condition(run, "Initialized", True),
                self._condition(run, "ContainersReady", all_ready),
                self._condition(run, "Ready", all_ready),
            ],
            "containerStatuses": statuses,
        }
        if status == run.last_status:
            return
        try:
            self.kube.patch(f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status", {"status": status})
        except KubeError as err:
            if err.status not in (404, 409):
                raise
            return
        run.last_status = status
