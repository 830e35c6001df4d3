"""Plain manifests the e2e tests create (the product's own manifests come from its builders)."""

from __future__ import annotations

from typing import Any


def deployment(name: str, pod_spec: dict[str, Any], replicas: int = 2) -> dict[str, Any]:
    """A Deployment of ``replicas`` pods labelled ``app=<name>`` running ``pod_spec``."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
