"""Agent -> Deployment (``stoa agent``), headless Service, ServiceAccount; status from both + runtime."""

from __future__ import annotations

import logging
from typing import Any

from stoa_agents.envcontract import CONNECTION_KEYS
from stoa_api.agent import AgentSpec
from stoa_api.status import AgentStatus
from stoa_operator.builders.agent import AgentInputs, build_agent
from stoa_operator.builders.common import agent_child_name, gateway_endpoint, owner_from_body
from stoa_operator.models.kinds import MODEL_POLICY
from stoa_operator.reconcile import observability, readiness
from stoa_operator.reconcile.conditions import Observation
from stoa_operator.reconcile.context import Context, Outcome, finish, validated_spec
from stoa_operator.reconcile.slo_rules import apply_slo_rules
from stoa_operator.runtime_adapter import Connection, RuntimeUnavailableError, agent_queue
from stoa_telemetry.rules import agent_rules

log = logging.getLogger(__name__)


def missing_references(ctx: Context, namespace: str, spec: AgentSpec) -> list[str]:
    missing = []
    refs = ([spec.model_policy_ref] if spec.model_policy_ref else []) + list(spec.fallback_policies)
    for index, ref in enumerate(refs):
        policy = ctx.kube.get(MODEL_POLICY.api_version, MODEL_POLICY.kind, namespace, ref.name)
        if policy is None:
            missing.append(f"ModelPolicy {ref.name} not found")
        elif index == 0 and spec.model is not None:
            targets = [t.get("name") for t in (policy.get("spec") or {}).get("targets") or []]
            if spec.model not in targets:
                missing.append(
                    f"ModelPolicy {ref.name} has no target {spec.model} (spec.model pins a target by name;"
                    f" its targets: {', '.join(map(str, targets)) or 'none'})"
                )
    secret_name = ctx.settings.connection_secret
    secret = ctx.kube.get("v1", "Secret", namespace, secret_name)
    if secret is None:
        missing.append(f"Secret {secret_name} not found")
    else:
        absent = [k for k in CONNECTION_KEYS.values() if k not in (secret.get("data") or {})]
        if absent:
            missing.append(f"Secret {secret_name} has no key {', '.join(absent)}")
    return missing


def _observability(
    ctx: Context, conn: Connection, namespace: str, name: str, spec: AgentSpec
) -> tuple[dict[str, Any], list[Observation]]:
    """status.slo / errorBudgetRemaining from the turn records, status.probe and ProbeFailing."""
    fields: dict[str, Any] = {"slo": None, "error_budget_remaining": None, "probe": None}
    observed: list[Observation] = []
    # The probe first: a probe it times out now is a turn record the SLO must already count.
    if spec.probe is not None and spec.probe.enabled:
        report = ctx.runtime.run_probe(conn, namespace, name, spec.probe, ctx.now())
        fields["probe"] = observability.probe_status(report)
        observed.append(observability.probe_observation(report))
    if spec.slo is not None:
        counts = ctx.runtime.agent_turn_counts(
            conn,
            namespace,
            name,
            observability.slo_windows(spec.slo),
            observability.latency_ms(spec.slo),
        )
        fields["slo"], fields["error_budget_remaining"] = observability.slo_status(spec.slo, counts)
    return fields, observed


def _runtime_fields(
    ctx: Context, namespace: str, name: str, spec: AgentSpec
) -> tuple[dict[str, Any], list[Observation]]:
    """The runtime's part of the status (as the runtime wrote it), SLOs and probes, and whether it could
    be read."""
    conn, problem = ctx.connection(namespace)
    if conn is None:
        return {}, [readiness.runtime_synced(problem, configured=False)]
    try:
        runtime = ctx.runtime.agent_status(conn, namespace, name)
        extra, observed = _observability(ctx, conn, namespace, name, spec)
    except RuntimeUnavailableError as exc:
        return {}, [readiness.runtime_synced(str(exc), configured=True)]
    fields = {**runtime.model_dump(exclude_unset=True), **extra}
    return fields, [readiness.runtime_synced(None, configured=True), *observed]


def reconcile_agent(ctx: Context, body: dict[str, Any]) -> Outcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = validated_spec(ctx, body, AgentSpec)
    queue = agent_queue(namespace, name)
    missing = missing_references(ctx, namespace, spec)
    if missing:
        return finish(
            ctx,
            body,
            readiness.blocked(missing),
            AgentStatus(queue=queue),
            retry_in=ctx.settings.retry_seconds,
        )
    s = ctx.settings
    inputs = AgentInputs(
        name=name,
        namespace=namespace,
        spec=spec,
        owner=owner_from_body(body).reference(controller=True),
        image=s.agent_image,
        connection_secret=s.connection_secret,
        model_base_url=gateway_endpoint(namespace, s.gateway_port_number),
        metrics_port=s.agent_metrics_port_number,
        image_pull_policy=s.image_pull_policy,
        image_pull_secrets=s.pull_secrets(),
        otel_env=ctx.otel_env,
    )
    applied = [ctx.kube.apply(child) for child in build_agent(inputs)]
    ro = readiness.rollout(applied[-1])
    observations = readiness.workload(f"Deployment {agent_child_name(name)}", ro, [], "")
    rule = apply_slo_rules(ctx, body, agent_rules(namespace, name, spec.slo) if spec.slo else None)
    runtime_fields, synced = _runtime_fields(ctx, namespace, name, spec)
    status = AgentStatus(
        replicas=spec.replicas,
        ready_replicas=ro.ready,
        standby_replicas=max(ro.ready - 1, 0),
        queue=queue,
        prometheus_rule=rule,
        **runtime_fields,
    )
    return finish(ctx, body, [*observations, *synced], status)
