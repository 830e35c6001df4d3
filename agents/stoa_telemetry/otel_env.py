"""Which ``OTEL_*`` variables the operator passes to the pods it builds (pure).

The chart sets the standard variables on the operator (endpoint, headers, sampler, resource attributes,
content capture); the operator copies them to every agent and gateway Deployment so one setting wires the
whole installation. ``OTEL_SERVICE_NAME`` is not copied: each component names itself (``stoa-agent``,
``stoa-gateway``, ``stoa-operator``).
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIXES = ("OTEL_",)
NOT_PASSED = frozenset({"OTEL_SERVICE_NAME"})


def passed_down(environ: Mapping[str, str]) -> dict[str, str]:
    """The OTEL_* variables of ``environ`` that pods should get, sorted by name (stable pod templates)."""
    return {
        k: environ[k]
        for k in sorted(environ)
        if k.startswith(PREFIXES) and k not in NOT_PASSED and environ[k]
    }


def container_env(otel: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in otel.items()]
