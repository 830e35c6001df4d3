"""Pure translation of a Pod spec into local processes: env, ports, paths, argv, probes, status.

No I/O here: the node agent gathers ConfigMaps/Secrets and allocated ports, these functions decide.

Port mechanism: all pods share the loopback interface, so every ``containerPort`` of a pod is given its
own free host port. A container learns it through its environment: each env var whose name ends in
``_PORT`` or ``_PORT_NUMBER`` and whose literal value equals one of the pod's containerPorts is rewritten
to the host port (``STOA_METRICS_PORT_NUMBER: "9090"`` with ``containerPort: 9090`` ->
``STOA_METRICS_PORT_NUMBER: "41234"``), and ``$(VAR)`` references in command/args/env are expanded
afterwards, as the kubelet does, so ``args: [gateway, --port, $(STOA_GATEWAY_PORT_NUMBER)]`` follows.
Probes on a port (by number or name) go to the host port. Flags named ``*port`` whose value is a
containerPort follow too (``--port 8080`` and ``--metrics-port=9090`` -> the host port). In a real
cluster the same Pod spec is self-consistent (env value == containerPort). Service addresses:
:mod:`tests.e2e.nodeagent.services`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
POD_IP = "127.0.0.1"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class MissingReferenceError(Exception):
    """A non-optional ConfigMap/Secret (or key) a container needs does not exist yet."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes, others stay."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(sub, value)


def field_value(pod: JSON, path: str) -> str:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIPs": POD_IP,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise MissingReferenceError(f"fieldRef {path} is not supported by the node agent")


def _lookup(
    kind: str, ref: JSON, sources: Mapping[tuple[str, str], JSON | None], key: str | None
) -> dict[str, str] | str | None:
    """Data of a ConfigMap/Secret (decoded), or one key of it; None when optional and missing."""
    optional = bool(ref.get("optional", False))
    obj = sources.get((kind, ref["name"]))
    if obj is None:
        if optional:
            return None
        raise MissingReferenceError(f"{kind} {ref['name']} not found")
    data = decoded_data(kind, obj)
    if key is None:
        return data
    if key not in data:
        if optional:
            return None
        raise MissingReferenceError(f"key {key} not found in {kind} {ref['name']}")
    return data[key]


def decoded_data(kind: str, obj: JSON) -> dict[str, str]:
    if kind == "Secret":
        merged = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        merged.update(obj.get("stringData") or {})
        return merged
    merged = dict(obj.get("data") or {})
    merged.update({k: base64.b64decode(v).decode() for k, v in (obj.get("binaryData") or {}).items()})
    return merged


def pod_ports(pod: JSON) -> list[int]:
    """Every distinct containerPort of the pod (the pod shares one network namespace)."""
    ports: list[int] = []
    for container in pod["spec"]["containers"]:
        for port in container.get("ports") or []:
            if port["containerPort"] not in ports:
                ports.append(int(port["containerPort"]))
    return ports


def resolve_env(
    pod: JSON,
    container: JSON,
    sources: Mapping[tuple[str, str], JSON | None],
    ports: Mapping[int, int],
) -> dict[str, str]:
    """The container's environment: envFrom, then env in order, with ``$(VAR)`` and port rewriting."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if field in source:
                data = _lookup(kind, source[field], sources, None)
                if isinstance(data, dict):
                    env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        value: str | dict[str, str] | None
        if "valueFrom" in item:
            ref = item["valueFrom"]
            if "fieldRef" in ref:
                value = field_value(pod, ref["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in ref:
                value = _lookup("Secret", ref["secretKeyRef"], sources, ref["secretKeyRef"]["key"])
            elif "configMapKeyRef" in ref:
                value = _lookup("ConfigMap", ref["configMapKeyRef"], sources, ref["configMapKeyRef"]["key"])
            elif "resourceFieldRef" in ref:
                value = "1"
            else:
                raise MissingReferenceError(f"env {name}: unsupported valueFrom {sorted(ref)}")
            if value is None:
                continue
        else:
            value = expand(item.get("value", ""), env)
        assert isinstance(value, str)
        if name.endswith(("_PORT", "_PORT_NUMBER")) and value.isdigit() and int(value) in ports:
            value = str(ports[int(value)])
        env[name] = value
    return env


def referenced_objects(pod: JSON) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the pod's env and volumes read."""
    refs: set[tuple[str, str]] = set()
    for container in pod["spec"]["containers"]:
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                refs.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                refs.add(("Secret", source["secretRef"]["name"]))
        for item in container.get("env") or []:
            ref = item.get("valueFrom") or {}
            if "secretKeyRef" in ref:
                refs.add(("Secret", ref["secretKeyRef"]["name"]))
            if "configMapKeyRef" in ref:
                refs.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
    for volume in pod["spec"].get("volumes") or []:
        for kind, (field, name_key) in VOLUME_SOURCES.items():
            if field in volume:
                refs.add((kind, volume[field][name_key]))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                refs.add(("ConfigMap", source["configMap"]["name"]))
            if "secret" in source:
                refs.add(("Secret", source["secret"]["name"]))
    return refs


VOLUME_SOURCES = {"ConfigMap": ("configMap", "name"), "Secret": ("secret", "secretName")}


def volume_files(volume: JSON, sources: Mapping[tuple[str, str], JSON | None]) -> dict[str, str] | None:
    """Relative path -> content of a ConfigMap/Secret/projected volume; {} for emptyDir and the rest."""
    parts: list[tuple[str, JSON]] = []
    for kind, (field, name_key) in VOLUME_SOURCES.items():
        if field in volume:
            parts.append((kind, {**volume[field], "name": volume[field][name_key]}))
    for source in (volume.get("projected") or {}).get("sources") or []:
        if "configMap" in source:
            parts.append(("ConfigMap", source["configMap"]))
        if "secret" in source:
            parts.append(("Secret", source["secret"]))
    files: dict[str, str] = {}
    for kind, ref in parts:
        data = _lookup(kind, ref, sources, None)
        if not isinstance(data, dict):
            continue
        items = ref.get("items")
        if items:
            files.update({i["path"]: data[i["key"]] for i in items if i["key"] in data})
        else:
            files.update(data)
    return files


def rewrite_paths(value: str, mounts: Mapping[str, str]) -> str:
    """Replace container mount paths (``/etc/stoa/x.yaml``) with their local directories, in one pass."""
    if not mounts:
        return value
    alternatives = "|".join(re.escape(p.rstrip("/") or "/") for p in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=$|[/\s:=,;\"'])")
    normalized = {p.rstrip("/") or "/": local for p, local in mounts.items()}
    return pattern.sub(lambda m: normalized[m.group(1)], value)


def command_argv(
    container: JSON,
    env: Mapping[str, str],
    mounts: Mapping[str, str],
    entrypoint: list[str],
    programs: Mapping[str, list[str]],
) -> list[str]:
    """The local argv: command (or the image's entrypoint) + args, expanded, with programs mapped."""
    command = list(container.get("command") or entrypoint)
    argv = [rewrite_paths(expand(a, env), mounts) for a in [*command, *(container.get("args") or [])]]
    if not argv:
        raise MissingReferenceError(f"container {container['name']} has no command and no entrypoint")
    head = programs.get(argv[0]) or programs.get(argv[0].rsplit("/", 1)[-1])
    return [*head, *argv[1:]] if head else argv


_PORT_FLAG = re.compile(r"^--?[A-Za-z0-9-]*port$", re.IGNORECASE)


def rewrite_port_args(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """``--port 8080`` / ``--port=8080`` (any flag ending in ``port``) with a containerPort -> host port."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and _PORT_FLAG.match(argv[i - 1]) and arg.isdigit() and int(arg) in ports:
            out.append(str(ports[int(arg)]))
            continue
        flag, sep, value = arg.partition("=")
        if sep and _PORT_FLAG.match(flag) and value.isdigit() and int(value) in ports:
            out.append(f"{flag}={ports[int(value)]}")
        else:
            out.append(arg)
    return out


@dataclass(frozen=True)
class ProbeTarget:
    kind: str  # "http", "tcp" or "exec"
    port: int = 0
    path: str = "/"
    command: tuple[str, ...] = ()


def probe_target(probe: JSON, container: JSON, ports: Mapping[int, int]) -> ProbeTarget | None:
    def host_port(port: int | str) -> int:
        if isinstance(port, str) and not port.isdigit():
            named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            if port not in named:
                raise MissingReferenceError(f"probe port {port} is not a named port of {container['name']}")
            port = named[port]
        return ports.get(int(port), int(port))

    if "httpGet" in probe:
        get = probe["httpGet"]
        return ProbeTarget("http", host_port(get["port"]), get.get("path", "/"))
    if "tcpSocket" in probe:
        return ProbeTarget("tcp", host_port(probe["tcpSocket"]["port"]))
    if "exec" in probe:
        return ProbeTarget("exec", command=tuple(probe["exec"]["command"]))
    return None


def probe_timing(probe: JSON) -> tuple[float, float, float, int, int]:
    """initialDelay, period, timeout, successThreshold, failureThreshold (Kubernetes defaults)."""
    return (
        float(probe.get("initialDelaySeconds", 0)),
        float(probe.get("periodSeconds", 10)),
        float(probe.get("timeoutSeconds", 1)),
        int(probe.get("successThreshold", 1)),
        int(probe.get("failureThreshold", 3)),
    )


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def next_backoff(restarts_in_a_row: int, base: float, cap: float) -> float:
    return float(min(cap, base * (2 ** max(0, restarts_in_a_row - 1)))) if restarts_in_a_row else 0.0


def pod_phase(policy: str, states: list[JSON]) -> str:
    """Pending until every container has started once; Succeeded/Failed when all are done for good."""
    if any("waiting" in s and not s.get("ever_started") for s in states):
        return "Pending"
    if policy != "Always" and states and all("terminated" in s and s.get("final") for s in states):
        return "Succeeded" if all(s["terminated"]["exitCode"] == 0 for s in states) else "Failed"
    return "Running"


def exit_code_of(returncode: int) -> int:
    """Popen's returncode (negative for signals) as a container exit code (128 + signal)."""
    return 128 - returncode if returncode < 0 else returncode
