"""Put built images into a containerd (the node's, for the kubelet): ``ctr images import`` of the tarballs.

Idempotent: an image whose reference is already present with the same image id (config digest) is skipped,
so loading on every test session costs a ``ctr images ls`` when nothing changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from stoa_devenv import state
from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.images import IMAGE_CACHE, ImageRef
from stoa_devenv.procs import apt_install

K8S_NAMESPACE = "k8s.io"  # where the CRI plugin, and so the kubelet, looks for images


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def node_containerd_address() -> str | None:
    """The containerd socket of the local node, or None when none runs.

    ``CONTAINERD_ADDRESS`` (ctr's own variable) wins; otherwise the ``containerd_address`` that
    ``stoa dev cluster up`` records in its state (the node's owner fills that in).
    """
    explicit = os.environ.get("CONTAINERD_ADDRESS")
    if explicit:
        return explicit
    cluster = state.load("cluster") or {}
    address = cluster.get("containerd_address")
    return str(address) if address else None


def _ctr() -> str:
    found = shutil.which("ctr")
    if found is None:
        apt_install(["containerd"], "ctr, to load images into the node's containerd")
        found = shutil.which("ctr")
    if found is None:
        raise ComponentMissingError("ctr not found: apt-get install containerd")
    return found


def _run(address: str, namespace: str, *args: str, timeout: float = 600) -> str:
    cmd = [_ctr(), "--address", address, "--namespace", namespace, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise ComponentFailedError(f"ctr {' '.join(args[:2])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def parse_image_list(text: str) -> dict[str, str]:
    """``ctr images ls`` output -> {reference: manifest digest}."""
    images: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 3 and columns[2].startswith("sha256:"):
            images[columns[0]] = columns[2]
    return images


def config_digest(manifest: Mapping[str, object]) -> str | None:
    """The image id (config digest) an image manifest names; None for an index."""
    config = manifest.get("config")
    if isinstance(config, Mapping):
        digest = config.get("digest")
        return str(digest) if digest else None
    return None


def present_image_ids(address: str, namespace: str = K8S_NAMESPACE) -> dict[str, str]:
    """{reference: image id} of the images in that containerd namespace."""
    ids: dict[str, str] = {}
    for ref, digest in parse_image_list(_run(address, namespace, "images", "ls")).items():
        manifest = json.loads(_run(address, namespace, "content", "get", digest))
        image_id = config_digest(manifest)
        if image_id:
            ids[ref] = image_id
    return ids


def cached_refs(cache: Path = IMAGE_CACHE) -> set[str]:
    """The references of the image archives the cache still holds (it keeps the newest two per image)."""
    refs = set()
    for meta in cache.glob("*.json"):
        with_ref = json.loads(meta.read_text()).get("ref")
        if with_ref:
            refs.add(str(with_ref))
    return refs


def stale_refs(present: Iterable[str], keep: Iterable[str]) -> list[str]:
    """What a node start removes: every reference but those kept (each load imports or tags it again)."""
    kept = set(keep)
    return sorted(ref for ref in present if ref not in kept)


def prune_containerd(
    address: str | Path,
    keep: Iterable[str],
    *,
    namespace: str = K8S_NAMESPACE,
    progress: Callable[[str], None] = _stderr,
) -> list[str]:
    """Remove every image reference in ``namespace`` but ``keep`` (no container may run: call it at node
    start), so the node's image root holds what the image cache holds and not every build since the first:
    without it each new Stoa image stays in containerd for good (14 GB after two weeks of test runs).
    containerd's garbage collector then frees the unreferenced layers and snapshots."""
    address = str(address)
    present = parse_image_list(_run(address, namespace, "images", "ls"))
    stale = stale_refs(present, keep)
    for start in range(0, len(stale), 50):
        _run(address, namespace, "images", "rm", "--sync", *stale[start : start + 50])
    if stale:
        progress(f"Images: removed {len(stale)} stale references from containerd ({namespace})")
    return stale


def load_into_containerd(
    address: str | Path,
    images: Iterable[ImageRef],
    *,
    namespace: str = K8S_NAMESPACE,
    aliases: Mapping[str, Iterable[str]] | None = None,
    progress: Callable[[str], None] = _stderr,
) -> list[str]:
    """Import each image into containerd at ``address`` unless the same image id is there; returns the
    references imported. ``aliases`` ({image name: [extra refs]}) tags an image under more names, e.g. the
    chart's default ``ghcr.io/stoa-dev/stoa:dev``."""
    address = str(address)
    if not Path(address.removeprefix("unix://")).exists():
        raise ComponentFailedError(
            f"no containerd socket at {address}: is the node running (stoa dev cluster status)?"
        )
    wanted = list(images)
    present = present_image_ids(address, namespace)
    imported: list[str] = []
    for image in wanted:
        if present.get(image.ref) == image.image_id:
            progress(f"Image {image.name}: already in containerd {address} ({namespace}) as {image.ref}")
        else:
            started = time.monotonic()
            _run(address, namespace, "images", "import", str(image.archive), timeout=900)
            imported.append(image.ref)
            progress(
                f"Image {image.name}: imported {image.ref} into containerd {address} ({namespace})"
                f" in {time.monotonic() - started:.1f}s"
            )
        for alias in (aliases or {}).get(image.name, ()):
            if present.get(alias) != image.image_id:
                _run(address, namespace, "images", "tag", "--force", image.ref, alias)
                progress(f"Image {image.name}: tagged {alias}")
    return imported
