"""Run one container of a rendered pod template with ``docker run``, as the kubelet would configure it.

Translates what the chart sets into Docker's terms, so a test runs an image under exactly the chart's
contract: env (values and Secret references), emptyDir mounts (tmpfs), the pod and container security
contexts (user, group, fsGroup, read-only root, no privilege escalation, dropped capabilities), resource
limits, command and args. Anything it cannot translate raises instead of being silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9}


def memory_bytes(quantity: str | int) -> int:
    text = str(quantity)
    for suffixes in (_BINARY, _DECIMAL):
        for suffix, factor in suffixes.items():
            if text.endswith(suffix):
                return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def cpus(quantity: str | int | float) -> str:
    text = str(quantity)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else str(float(text))


def secret_data(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """{Secret name: stringData} of the rendered Secrets."""
    return {o["metadata"]["name"]: dict(o.get("stringData") or {}) for o in objects if o["kind"] == "Secret"}


def _env(container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> list[str]:
    args: list[str] = []
    for item in container.get("env") or []:
        if "value" in item:
            value = str(item["value"])
        elif "secretKeyRef" in (item.get("valueFrom") or {}):
            ref = item["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        else:
            raise ValueError(f"cannot translate env {item['name']}: {item}")
        args += ["--env", f"{item['name']}={value}"]
    return args


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    pod_sc = pod.get("securityContext") or {}
    sc = {**pod_sc, **(container.get("securityContext") or {})}
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    if sc.get("runAsNonRoot") and uid in (None, 0):
        raise ValueError("runAsNonRoot without a numeric non-root runAsUser: the kubelet would refuse it")
    args: list[str] = []
    if uid is not None:
        args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
    if pod_sc.get("fsGroup") is not None:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    caps = sc.get("capabilities") or {}
    args += [a for cap in caps.get("drop") or [] for a in ("--cap-drop", cap)]
    args += [a for cap in caps.get("add") or [] for a in ("--cap-add", cap)]
    profile = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if profile != "RuntimeDefault":  # Docker's default profile is the runtime default
        raise ValueError(f"cannot translate seccompProfile {profile}")
    return args


def _mounts(pod: Mapping[str, Any], container: Mapping[str, Any], volumes_root: Path) -> list[str]:
    """emptyDirs as fresh host directories of mode 0777, bind-mounted, as the kubelet makes them (a tmpfs
    mount would get the image directory's owner and mode copied onto it: not an emptyDir)."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    args: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "emptyDir" not in volume or (volume["emptyDir"] or {}).get("medium"):
            raise ValueError(f"cannot translate volume {volume}")
        source = volumes_root / mount["name"]
        source.mkdir(parents=True, exist_ok=True)
        source.chmod(0o777)
        args += ["--mount", f"type=bind,source={source},destination={mount['mountPath']}"]
    return args


def _limits(container: Mapping[str, Any]) -> list[str]:
    limits = (container.get("resources") or {}).get("limits") or {}
    args: list[str] = []
    if "memory" in limits:
        args += ["--memory", str(memory_bytes(limits["memory"]))]
    if "cpu" in limits:
        args += ["--cpus", cpus(limits["cpu"])]
    return args


def docker_run_args(
    deployment: Mapping[str, Any],
    secrets: Mapping[str, Mapping[str, str]],
    volumes_root: Path,
    container: str | None = None,
) -> list[str]:
    """``docker run`` options, image and arguments (everything after ``docker run``, minus the network);
    emptyDirs are made under ``volumes_root``."""
    pod = deployment["spec"]["template"]["spec"]
    containers = pod["containers"]
    spec = next(c for c in containers if container in (None, c["name"]))
    command = list(spec.get("command") or [])
    args = [*_env(spec, secrets), *_security(pod, spec), *_mounts(pod, spec, volumes_root), *_limits(spec)]
    if command:
        args += ["--entrypoint", command[0]]
    return [*args, spec["image"], *command[1:], *(str(a) for a in spec.get("args") or [])]
