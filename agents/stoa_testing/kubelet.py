"""A container's environment as the kubelet builds it (pure), for contract tests of the env seam.

Service link variables first (every Service of the namespace with a cluster IP, unless the pod sets
``enableServiceLinks: false``), then the container's ``env`` in order: literals with ``$(VAR)``
expansion, ``secretKeyRef`` (a missing Secret or key fails unless ``optional``) and ``fieldRef``
(``metadata.name``, ``metadata.namespace``, ``metadata.uid``, ``spec.nodeName``, ``status.podIP``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Service:
    name: str
    cluster_ip: str
    ports: Sequence[ServicePort] = field(default_factory=tuple)


@dataclass(frozen=True)
class PodIdentity:
    name: str
    namespace: str
    uid: str = "00000000-0000-0000-0000-000000000000"
    node_name: str = "node-1"
    pod_ip: str = "10.244.0.10"


class MissingReferenceError(Exception):
    """A Secret or key a container needs does not exist (the kubelet would not start it)."""


def service_link_env(services: Sequence[Service]) -> dict[str, str]:
    """``<SVC>_SERVICE_HOST``, ``<SVC>_SERVICE_PORT[_<NAME>]``, ``<SVC>_PORT[_<n>_<PROTO>[_...]]``."""
    env: dict[str, str] = {}
    for svc in services:
        if not svc.cluster_ip or svc.cluster_ip == "None" or not svc.ports:
            continue
        prefix = svc.name.upper().replace("-", "_")
        first = svc.ports[0]
        env[f"{prefix}_SERVICE_HOST"] = svc.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(first.port)
        env[f"{prefix}_PORT"] = f"{first.protocol.lower()}://{svc.cluster_ip}:{first.port}"
        for port in svc.ports:
            if port.name:
                env[f"{prefix}_SERVICE_PORT_{port.name.upper().replace('-', '_')}"] = str(port.port)
            base = f"{prefix}_PORT_{port.port}_{port.protocol.upper()}"
            env[base] = f"{port.protocol.lower()}://{svc.cluster_ip}:{port.port}"
            env[f"{base}_PROTO"] = port.protocol.lower()
            env[f"{base}_PORT"] = str(port.port)
            env[f"{base}_ADDR"] = svc.cluster_ip
    return env


def _expand(value: str, env: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(sub, value)


def _field(pod: PodIdentity, path: str) -> str:
    fields = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "status.podIP": pod.pod_ip,
    }
    if path not in fields:
        raise MissingReferenceError(f"unsupported fieldRef {path}")
    return fields[path]


def container_env(
    pod_spec: Mapping[str, Any],
    container: Mapping[str, Any],
    pod: PodIdentity,
    *,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    services: Sequence[Service] = (),
) -> dict[str, str]:
    """The environment the kubelet gives ``container`` of a pod with ``pod_spec``; ``secrets``: name ->
    decoded data of the Secrets of the pod's namespace; ``services``: the namespace's Services."""
    env = {} if pod_spec.get("enableServiceLinks") is False else service_link_env(services)
    for item in container.get("env") or []:
        name = item["name"]
        source = item.get("valueFrom")
        if source is None:
            env[name] = _expand(str(item.get("value", "")), env)
        elif "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = (secrets or {}).get(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise MissingReferenceError(f"env {name}: Secret {ref['name']} key {ref['key']} not found")
            env[name] = data[ref["key"]]
        else:
            raise MissingReferenceError(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env
