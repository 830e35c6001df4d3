"""``stoa dev deploy``: ``helm upgrade --install`` Stoa in bundled mode (RabbitMQ, PostgreSQL and the demo
model in the release namespace), printing each step.

- On the local node (``stoa dev cluster up``): the images are built here without a registry (or taken
  from ``~/.cache/stoa/images``), loaded into the node's containerd, and the chart is pointed at them.
- On any other cluster (kind, minikube, yours; the current kube context): the chart gets ``--image`` and
  ``--model-image`` (``make deploy`` passes ``IMAGE`` and ``MODEL_IMAGE``), which may carry a registry port
  (``registry:5000/stoa:dev``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from pathlib import Path

from stoa_devenv import state
from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.images import ensure_images
from stoa_devenv.imagespec import chart_image_values
from stoa_devenv.tools import REPO_ROOT, helm_binary

CHART = REPO_ROOT / "charts" / "stoa"
LOCAL_IMAGES = ("stoa", "stoa-model", "rabbitmq", "postgres")


def split_image(ref: str) -> tuple[str, str]:
    """``registry:5000/team/stoa:dev`` -> (``registry:5000/team/stoa``, ``dev``); no tag -> ``latest``."""
    name, _, last = ref.rpartition("/")
    if ":" in last:
        repo, tag = last.rsplit(":", 1)
        return (f"{name}/{repo}" if name else repo), tag
    return ref, "latest"


def image_sets(image: str, model_image: str) -> list[str]:
    repo, tag = split_image(image)
    model_repo, model_tag = split_image(model_image)
    return [
        f"image.repository={repo}",
        f"image.tag={tag}",
        f"bundled.model.image.repository={model_repo}",
        f"bundled.model.image.tag={model_tag}",
    ]


def add_parser(dev_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = dev_sub.add_parser(
        "deploy", help="helm install Stoa (bundled mode) on the local node or any cluster"
    )
    deploy.add_argument("--namespace", default="stoa-system", help="release namespace (default: stoa-system)")
    deploy.add_argument("--release", default="stoa", help="release name (default: stoa)")
    deploy.add_argument("--image", default="ghcr.io/stoa-dev/stoa:dev", help="Stoa image (other clusters)")
    deploy.add_argument(
        "--model-image", default="ghcr.io/stoa-dev/stoa-model:dev", help="demo model image (other clusters)"
    )
    deploy.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more chart values")
    deploy.set_defaults(func=run)


def _local_node() -> dict[str, str] | None:
    """The local node's state when the current kube context is it (no KUBECONFIG, or KUBECONFIG = its)."""
    cluster = state.load("cluster")
    if not cluster or not cluster.get("node"):
        return None
    current = os.environ.get("KUBECONFIG")
    if current and Path(current).resolve() != Path(cluster["kubeconfig"]).resolve():
        return None
    return {k: str(v) for k, v in cluster.items()}


def run(args: argparse.Namespace) -> int:
    node = _local_node()
    kube: list[str] = []
    if node is not None:
        print(f"Deploying to the local node (kubeconfig {node['kubeconfig']})", flush=True)
        refs = ensure_images(LOCAL_IMAGES)
        load_into_containerd(node["containerd_address"], refs.values())
        sets = [f"{k}={v}" for k, v in chart_image_values({n: r.ref for n, r in refs.items()}).items()]
        kube = ["--kubeconfig", node["kubeconfig"]]
    else:
        print("Deploying to the current kube context", flush=True)
        sets = image_sets(args.image, args.model_image)
    cmd = [
        str(helm_binary()), *kube, "upgrade", "--install", args.release, str(CHART),
        "--namespace", args.namespace, "--create-namespace", "--set", "bundled.enabled=true",
        *(f"--set={value}" for value in [*sets, *args.set]), "--wait", "--timeout", "10m",
    ]  # fmt: skip
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode
