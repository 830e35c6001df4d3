"""``stoa operator drain``: what ``helm uninstall`` runs first (the chart's pre-delete hook Job), while the
operator still runs.

1. Delete every Conversation of the watched namespaces. The operator's finalizer stops each running one
   (phase Failed, reason "Conversation resource deleted") and keeps its transcript in that namespace's
   PostgreSQL under ``<namespace>/<name>@<uid8>`` (``transcriptRetention: keep``) or purges it.
2. Delete every Agent and ModelPolicy there, in the foreground: each is gone once its Deployment (and so
   its pods), Service and ConfigMap are.

A Conversation the operator has not released by the deadline (no operator running) gets its finalizer
removed here, and the output says it was not stopped. Nothing else is deleted: the CRDs stay (Helm never
removes ``crds/``), as do your Secrets and databases. Idempotent: running it again finds nothing to do.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from stoa_api.base import GROUP, VERSION

FINALIZER = "stoa.dev/finalizer"
KINDS = ("conversations", "agents", "modelpolicies")


@dataclass
class Report:
    """What the drain did (printed line by line)."""

    lines: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


class Objects:
    """The Stoa custom objects of some namespaces (all when none are given), through the API server."""

    def __init__(self, api: client.CustomObjectsApi, namespaces: list[str]) -> None:
        self.api = api
        self.namespaces = namespaces

    def list(self, plural: str) -> list[dict[str, Any]]:
        if not self.namespaces:
            items: list[dict[str, Any]] = self.api.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
            return items
        found: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            found += self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
        return found

    def delete(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, meta["name"],
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise

    def drop_finalizer(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        rest = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        try:
            self.api.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], {"metadata": {"finalizers": rest}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _wait_gone(
    objects: Objects, plural: str, deadline: float, clock: Callable[[], float], every: float
) -> list[dict[str, Any]]:
    """Wait until no object of ``plural`` is left or the deadline passes; returns those left."""
    while True:
        left = objects.list(plural)
        if not left or clock() >= deadline:
            return left
        time.sleep(every)


def drain(
    objects: Objects,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    every: float = 1.0,
) -> Report:
    report = Report()
    scope = ", ".join(objects.namespaces) or "all namespaces"
    conversations = objects.list("conversations")
    report.say(
        f"Draining Stoa in {scope}: {len(conversations)} Conversations first (the operator stops each)"
    )
    for conv in conversations:
        objects.delete("conversations", conv)
    left = _wait_gone(objects, "conversations", clock() + timeout, clock, every)
    for conv in left:
        objects.drop_finalizer("conversations", conv)
        report.forced.append(_key(conv))
        report.say(
            f"Conversation {_key(conv)}: not released by the operator within {timeout:.0f}s; finalizer "
            "removed, the conversation was NOT stopped in the runtime"
        )
    for plural in ("agents", "modelpolicies"):
        found = objects.list(plural)
        report.say(f"Deleting {len(found)} {plural} (with their Deployments, Services and ConfigMaps)")
        for obj in found:
            objects.delete(plural, obj)
    for plural in ("agents", "modelpolicies"):
        for obj in _wait_gone(objects, plural, clock() + timeout, clock, every):
            report.say(
                f"{plural} {_key(obj)}: still deleting after {timeout:.0f}s (garbage collection goes on)"[
                    :200
                ]
            )
    report.say(
        f"Drained: {len(conversations) - len(report.forced)} Conversations stopped by the operator "
        "(transcripts kept or purged as each transcriptRetention says), Agents and ModelPolicies deleted; "
        "CRDs, Secrets and your databases are kept"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stoa operator drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", default="", help="comma-separated namespaces (default: all)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait at each step (120)")
    args = parser.parse_args(argv)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
    try:
        drain(Objects(client.CustomObjectsApi(), namespaces), args.timeout)
    except ApiException as exc:
        print(f"Drain failed: HTTP {exc.status} {exc.reason}: {str(exc.body)[:500]}", file=sys.stderr)
        return 1
    return 0
