"""Services without kube-proxy or DNS (pure): which addresses name a Service, and which pods back it.

Every pod shares the loopback interface, so there are neither ClusterIPs nor cluster DNS. Instead the node
agent runs one loopback TCP proxy per referenced Service port (:mod:`tests.e2e.nodeagent.proxy`) and, before
a container starts, rewrites Service addresses in its env values and args to that proxy:

- ``<svc>.<ns>.svc[.cluster.local]:<port>`` always (the name is unambiguous, the Service may come later);
- ``<svc>.<ns>:<port>`` and ``<svc>:<port>`` (the pod's namespace) only when that Service exists.

``http://stoa-gateway.demo.svc:8080/v1`` becomes ``http://127.0.0.1:41234/v1``. The proxy forwards each
connection to a Ready pod selected by the Service (``publishNotReadyAddresses`` includes the others), on
the host port of the Service port's ``targetPort`` (number or name), round robin.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tests.e2e.kube import JSON

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_ADDRESS = re.compile(rf"(?<![\w.-])(?P<host>{_LABEL}(?:\.{_LABEL})*):(?P<port>\d{{1,5}})(?![\w.@])")


@dataclass(frozen=True, order=True)
class ServiceKey:
    """One port of one Service, as clients name it (the Service ``port``, not the ``targetPort``)."""

    namespace: str
    name: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}.svc:{self.port}"


def _service_of(host: str, namespace: str, known: Collection[tuple[str, str]]) -> tuple[str, str] | None:
    labels = host.split(".")
    if len(labels) == 5 and labels[2:] == ["svc", "cluster", "local"]:
        return labels[1], labels[0]
    if len(labels) == 3 and labels[2] == "svc":
        return labels[1], labels[0]
    if len(labels) == 2 and (labels[1], labels[0]) in known:
        return labels[1], labels[0]
    if len(labels) == 1 and (namespace, labels[0]) in known:
        return namespace, labels[0]
    return None


def service_references(value: str, namespace: str, known: Collection[tuple[str, str]]) -> list[ServiceKey]:
    """The Service ports a value names (``known``: existing (namespace, name) pairs)."""
    refs: list[ServiceKey] = []
    for match in _ADDRESS.finditer(value):
        service = _service_of(match.group("host"), namespace, known)
        if service is not None:
            refs.append(ServiceKey(service[0], service[1], int(match.group("port"))))
    return refs


def rewrite_service_addresses(
    value: str, namespace: str, known: Collection[tuple[str, str]], proxies: Mapping[ServiceKey, int]
) -> str:
    """Replace every Service address that has a proxy with ``127.0.0.1:<proxy port>``."""

    def sub(match: re.Match[str]) -> str:
        service = _service_of(match.group("host"), namespace, known)
        if service is None:
            return match.group(0)
        proxy = proxies.get(ServiceKey(service[0], service[1], int(match.group("port"))))
        return match.group(0) if proxy is None else f"127.0.0.1:{proxy}"

    return _ADDRESS.sub(sub, value)


@dataclass(frozen=True)
class Backend:
    """A pod that may serve Services: its labels, containers, host ports and readiness."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    containers: list[JSON]
    ports: Mapping[int, int]  # containerPort -> host port
    ready: bool


def _target_container_port(target: int | str, containers: Iterable[JSON]) -> int | None:
    if isinstance(target, int) or target.isdigit():
        return int(target)
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def backend_ports(service: JSON | None, port: int, backends: Iterable[Backend]) -> list[int]:
    """Host ports serving ``port`` of ``service``: its selected (Ready) pods, in name order."""
    if service is None:
        return []
    spec = service.get("spec") or {}
    selector: Mapping[str, str] = spec.get("selector") or {}
    entry = next((p for p in spec.get("ports") or [] if int(p.get("port", 0)) == port), None)
    if not selector or entry is None:
        return []
    target = entry.get("targetPort", entry["port"])
    include_not_ready = bool(spec.get("publishNotReadyAddresses"))
    namespace = service["metadata"]["namespace"]
    hosts: list[int] = []
    for backend in sorted(backends, key=lambda b: b.name):
        if backend.namespace != namespace or not (backend.ready or include_not_ready):
            continue
        if any(backend.labels.get(k) != v for k, v in selector.items()):
            continue
        container_port = _target_container_port(target, backend.containers)
        if container_port is not None:
            hosts.append(backend.ports.get(container_port, container_port))
    return hosts
