"""ModelPolicy -> the namespace gateway's config, Deployment, Service; status with per-target health."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from stoa_api.status import ModelPolicyStatus, TargetHealth
from stoa_gateway.policy import ModelPolicySpec, policy_hash
from stoa_operator.builders.common import (
    GATEWAY_NAME,
    gateway_endpoint,
    gateway_labels,
    owner_from_body,
    selector,
)
from stoa_operator.builders.gateway import GatewayInputs, build_gateway, config_hash, key_envs, render_config
from stoa_operator.models.kinds import MODEL_POLICY
from stoa_operator.reconcile import readiness
from stoa_operator.reconcile.context import Context, Outcome, finish, validated_spec
from stoa_operator.reconcile.slo_rules import apply_slo_rules
from stoa_telemetry.rules import policy_rules

log = logging.getLogger(__name__)


def live_policies(
    ctx: Context, namespace: str, exclude: str | None = None
) -> dict[str, tuple[ModelPolicySpec, dict[str, Any]]]:
    """Every valid, not-deleting ModelPolicy of a namespace: name -> (spec, owner reference)."""
    found = {}
    for item in ctx.kube.list(MODEL_POLICY.api_version, MODEL_POLICY.kind, namespace):
        meta = item["metadata"]
        if meta.get("deletionTimestamp") or meta["name"] == exclude:
            continue
        try:
            spec = ModelPolicySpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue
        found[meta["name"]] = (spec, owner_from_body(item).reference(controller=False))
    return found


def sync_gateway(
    ctx: Context, namespace: str, exclude: str | None = None
) -> tuple[dict[str, Any] | None, str]:
    """Apply the namespace gateway for its live policies; returns (Deployment, config text).

    Serialised per namespace: every policy reconcile renders the whole shared config.
    """
    with ctx.namespace_lock(namespace):
        policies = live_policies(ctx, namespace, exclude)
        specs = {name: spec for name, (spec, _) in policies.items()}
        if not policies:
            return None, render_config({})
        s = ctx.settings
        inputs = GatewayInputs(
            namespace=namespace,
            policies=specs,
            owners=[policies[name][1] for name in sorted(policies)],
            image=s.gateway_image,
            replicas=s.gateway_replicas,
            port=s.gateway_port_number,
            image_pull_policy=s.image_pull_policy,
            image_pull_secrets=s.pull_secrets(),
            connection_secret=s.connection_secret,
            otel_env=ctx.otel_env,
        )
        applied = [ctx.kube.apply(child) for child in build_gateway(inputs)]
        return applied[-1], render_config(specs)


def _missing_secrets(ctx: Context, namespace: str, spec: ModelPolicySpec) -> list[str]:
    missing = []
    seen: dict[str, dict[str, Any] | None] = {}
    for target in spec.targets:
        ref = target.api_key_secret_ref
        if ref is None:
            continue
        if ref.name not in seen:
            seen[ref.name] = ctx.kube.get("v1", "Secret", namespace, ref.name)
        secret = seen[ref.name]
        if secret is None:
            missing.append(f"target {target.name}: Secret {ref.name} not found")
        elif ref.key not in (secret.get("data") or {}):
            missing.append(f"target {target.name}: Secret {ref.name} has no key {ref.key}")
    return missing


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _gateway_replicas(ctx: Context, namespace: str) -> list[readiness.Replica]:
    """Every running gateway pod of the namespace: Ready or not, and its ``/v1/stoa/status``."""
    labels = selector(gateway_labels())
    pods = ctx.kube.list("v1", "Pod", namespace, ",".join(f"{k}={v}" for k, v in labels.items()))
    replicas = []
    for pod in pods:
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        url = f"http://{ip}:{ctx.settings.gateway_port_number}/v1/stoa/status"
        reply = ctx.gateway_probe(url, ctx.settings.gateway_status_timeout_seconds)
        replicas.append(readiness.Replica(pod["metadata"]["name"], _pod_ready(pod), reply))
    return replicas


def reconcile_model_policy(ctx: Context, body: dict[str, Any]) -> Outcome:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = validated_spec(ctx, body, ModelPolicySpec)
    deployment, config_text = sync_gateway(ctx, namespace)
    problems = _missing_secrets(ctx, namespace, spec)
    _, conflicts = key_envs({name: spec} | {n: s for n, (s, _) in live_policies(ctx, namespace).items()})
    if name in conflicts:
        problems.append(conflicts[name])
    reason = "SecretNotFound" if problems and "Secret" in problems[0] else "KeyEnvConflict"
    observations = readiness.workload(
        f"gateway {GATEWAY_NAME}", readiness.rollout(deployment), problems, reason
    )
    replicas = _gateway_replicas(ctx, namespace)
    replies = [r.reply for r in replicas if r.reply is not None]
    want = policy_hash(spec)
    serving = readiness.served(name, want, replicas)
    observations = readiness.gate_ready(observations, serving)
    observations.append(readiness.limits_shared(replies))
    targets = readiness.merge_target_health(name, [t.name for t in spec.targets], replies)
    rule = apply_slo_rules(ctx, body, policy_rules(namespace, name, spec.slo) if spec.slo else None)
    status = ModelPolicyStatus(
        prometheus_rule=rule,
        endpoint=gateway_endpoint(namespace, ctx.settings.gateway_port_number),
        gateway=GATEWAY_NAME,
        config_hash=config_hash(config_text),
        spec_hash=want,
        served=serving.served,
        circuits=readiness.circuits(targets),
        targets=[TargetHealth.model_validate(t) for t in targets],
    )
    # A ready replica behind (the kubelet refreshes the ConfigMap lazily, and that makes no watch event):
    # look again soon. Without a ready replica the gateway Deployment's change brings the next reconcile.
    loading = serving.observation.reason == readiness.LOADING
    retry = ctx.settings.retry_seconds if problems or loading else None
    outcome = finish(ctx, body, observations, status, retry_in=retry)
    if loading and not problems:
        outcome.retry_reason = serving.observation.message
    return outcome
