"""``stoa dev images``: build (or take from the cache) the test bed's images and load them into a node."""

from __future__ import annotations

import argparse
import json
import sys

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.imageload import load_into_containerd, node_containerd_address
from stoa_devenv.images import ensure_images
from stoa_devenv.imagespec import NODE_IMAGES, SPECS, chart_image_values


def add_parser(dev_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    images = dev_sub.add_parser(
        "images",
        help="build images without Docker or a registry (cached in ~/.cache/stoa/images); load them",
    )
    images.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"images to provide (default: {' '.join(NODE_IMAGES)}); known: {' '.join(SPECS)}",
    )
    images.add_argument(
        "--load",
        action="store_true",
        help="import them into the node's containerd (--address, $CONTAINERD_ADDRESS or the local node)",
    )
    images.add_argument("--address", help="containerd socket to load into")
    images.add_argument("--namespace", default="k8s.io", help="containerd namespace (default: k8s.io)")
    images.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="NAME=REF",
        help="also tag image NAME as REF in containerd, e.g. stoa=ghcr.io/stoa-dev/stoa:dev",
    )
    images.add_argument(
        "--rebuild", action="append", default=[], metavar="NAME", help="build NAME again even if cached"
    )
    images.add_argument("--json", action="store_true", help="print machine-readable output")
    images.set_defaults(func=run)


def parse_tags(values: list[str]) -> dict[str, list[str]]:
    aliases: dict[str, list[str]] = {}
    for value in values:
        name, sep, ref = value.partition("=")
        if not sep or not name or not ref:
            raise SystemExit(f"--tag wants NAME=REF, got {value!r}")
        aliases.setdefault(name, []).append(ref)
    return aliases


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ComponentMissingError, ComponentFailedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    names = args.names or list(NODE_IMAGES)
    aliases = parse_tags(args.tag)
    address = None
    if args.load:
        address = args.address or node_containerd_address()
        if address is None:
            raise ComponentMissingError(
                "no node to load into: start one with `stoa dev cluster up` (make cluster-up), or pass "
                "--address / CONTAINERD_ADDRESS=<containerd socket>"
            )
    refs = ensure_images(names, rebuild=args.rebuild)
    if address is not None:
        load_into_containerd(address, refs.values(), namespace=args.namespace, aliases=aliases)
    if args.json:
        print(
            json.dumps(
                {
                    name: {"ref": r.ref, "id": r.image_id, "archive": str(r.archive), "size": r.size}
                    for name, r in refs.items()
                }
            )
        )
        return 0
    for name, ref in refs.items():
        print(f"{name}={ref.ref}")
    values = chart_image_values({name: ref.ref for name, ref in refs.items()})
    if values:
        print("helm install flags for these images: " + " ".join(f"--set {k}={v}" for k, v in values.items()))
    return 0
