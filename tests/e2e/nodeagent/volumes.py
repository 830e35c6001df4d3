"""A pod's files: ConfigMap/Secret/projected volumes kept in sync, emptyDirs, and the service account.

ConfigMap / Secret / projected volumes become files, rewritten atomically when their objects change (hot
reload); emptyDir and every other kind become an empty directory. Unless
``automountServiceAccountToken: false``, a bound token from the TokenRequest API is written with the CA and
namespace to ``<pod>/serviceaccount``, plus a kubeconfig using it (``KUBECONFIG`` points there: the
kubernetes client and kopf fall back to it outside a cluster).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.nodeagent import spec
from tests.e2e.kube import JSON, Kube, KubeError
from tests.e2e.nodeagent.runs import PodRun

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
Sources = dict[tuple[str, str], JSON | None]


def fetch_sources(kube: Kube, run: PodRun) -> Sources:
    """Every ConfigMap and Secret the pod references (None when it does not exist)."""
    sources: Sources = {}
    for kind, name in spec.referenced_objects(run.pod):
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        sources[(kind, name)] = kube.get_or_none(f"/api/v1/namespaces/{run.namespace}/{plural}/{name}")
    return sources


def _volume_refs(volume: JSON) -> list[tuple[str, str]]:
    refs = [(kind, volume[f][k]) for kind, (f, k) in spec.VOLUME_SOURCES.items() if f in volume]
    for source in (volume.get("projected") or {}).get("sources") or []:
        if "configMap" in source:
            refs.append(("ConfigMap", source["configMap"]["name"]))
        if "secret" in source:
            refs.append(("Secret", source["secret"]["name"]))
    return refs


def sync_volumes(run: PodRun, sources: Sources, force: bool = False) -> dict[str, str]:
    """Write ConfigMap/Secret volumes (atomically, only when their objects changed); volume -> dir."""
    dirs: dict[str, str] = {}
    for volume in run.pod["spec"].get("volumes") or []:
        target = run.workdir / "volumes" / volume["name"]
        target.mkdir(parents=True, exist_ok=True)
        dirs[volume["name"]] = str(target)
        refs = _volume_refs(volume)
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


def write_service_account(kube: Kube, run: PodRun) -> Path | None:
    """Token, CA, namespace and a kubeconfig for the pod's ServiceAccount; None when not mounted."""
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
        token = kube.create(f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{sa}/token", request)[
            "status"
        ]["token"]
    except KubeError as err:
        if err.status == 404:
            raise spec.MissingReferenceError(f"ServiceAccount {sa} not found") from err
        raise
    sa_dir = run.workdir / "serviceaccount"
    sa_dir.mkdir(exist_ok=True)
    (sa_dir / "token").write_text(token)
    (sa_dir / "namespace").write_text(run.namespace)
    if kube.ca_file:
        shutil.copy(kube.ca_file, sa_dir / "ca.crt")
    cluster: JSON = {"server": kube.server}
    if kube.ca_file:
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
