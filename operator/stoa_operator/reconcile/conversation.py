"""Conversation -> the durable runtime record and kickoff (started once), suspend/resume, status sync."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from stoa_api.conversation import ConversationSpec, TranscriptRetention
from stoa_api.status import ConversationStatus
from stoa_operator.errors import TemporaryError
from stoa_operator.models.kinds import AGENT, CONVERSATION, MODEL_POLICY
from stoa_operator.reconcile import readiness
from stoa_operator.reconcile.conditions import SERVED
from stoa_operator.reconcile.context import Context, Outcome, finish, validated_spec
from stoa_operator.reconcile.readiness import LOADING
from stoa_operator.runtime_adapter import RuntimeUnavailableError, runtime_name, transcript_hint

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")


def is_settled(body: dict[str, Any]) -> bool:
    """Finished and already observed: the status timer has nothing left to do."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == generation


def _served_problems(ctx: Context, namespace: str, agents: dict[str, dict[str, Any]]) -> list[str]:
    """What a first turn would trip on: a participant's ModelPolicy (or fallback) that a *ready* gateway
    replica does not serve yet (ModelPolicy ``Served=False/Loading``, or not reconciled at its generation):
    that replica would answer 404 unknown model, or use the old spec. Without any ready replica the agents
    wait for the gateway to come up (which then loads the current ConfigMap), so that does not hold the
    start; a missing policy blocks the Agent itself."""
    names: list[str] = []
    for agent in agents.values():
        spec = agent.get("spec") or {}
        refs = [spec.get("modelPolicyRef") or {}, *(spec.get("fallbackPolicies") or [])]
        names += [str(r["name"]) for r in refs if r.get("name") and r["name"] not in names]
    waiting = []
    for name in names:
        policy = ctx.kube.get(MODEL_POLICY.api_version, MODEL_POLICY.kind, namespace, name)
        if policy is None:
            continue
        generation = (policy.get("metadata") or {}).get("generation")
        conditions = (policy.get("status") or {}).get("conditions") or []
        served = next((c for c in conditions if c.get("type") == SERVED), None)
        if served is None or served.get("observedGeneration") != generation:
            waiting.append(f"ModelPolicy {name}: not reconciled yet")
        elif served.get("status") != "True" and served.get("reason") == LOADING:
            waiting.append(f"ModelPolicy {name}: {served.get('message')}")
    return waiting


def reconcile_conversation(ctx: Context, body: dict[str, Any]) -> Outcome:
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    spec = validated_spec(ctx, body, ConversationSpec)
    hint = transcript_hint(namespace, name, spec.participants[0].agent_ref)
    base = {"runtime_name": runtime_name(namespace, name), "transcript": hint}
    current = body.get("status") or {}
    current_phase = current.get("phase") or "Pending"
    agents = {
        p.agent_ref: ctx.kube.get(AGENT.api_version, AGENT.kind, namespace, p.agent_ref)
        for p in spec.participants
    }
    missing = [f"Agent {agent} not found" for agent, found in agents.items() if found is None]
    conn, problem = ctx.connection(namespace)
    if problem:
        missing.append(problem)
    if missing or conn is None:
        fields = ConversationStatus.model_validate({**base, "phase": current_phase})
        return finish(ctx, body, readiness.blocked(missing), fields, retry_in=ctx.settings.retry_seconds)
    found = {agent: body for agent, body in agents.items() if body is not None}
    if current.get("conversationId") != uid:  # not started yet (as far as status shows)
        live = ctx.kube.get(CONVERSATION.api_version, CONVERSATION.kind, namespace, name)
        if live is None or live["metadata"].get("uid") != uid:
            # A stale body of a deleted resource: starting it would archive the conversation of the
            # resource that now has this name.
            return Outcome(status=current, events=[], written=False)
        try:
            spec = spec.with_agent_roles(
                {a: str((b.get("spec") or {}).get("role") or "") for a, b in found.items()}
            )
        except ValueError as exc:
            fields = ConversationStatus.model_validate({**base, "phase": current_phase})
            return finish(ctx, body, readiness.blocked([str(exc)], "RoleConflict"), fields,
                          retry_in=ctx.settings.retry_seconds)  # fmt: skip
        waiting = _served_problems(ctx, namespace, found)
        if waiting:
            fields = ConversationStatus.model_validate({**base, "phase": current_phase})
            outcome = finish(
                ctx, body, readiness.waiting(waiting), fields, retry_in=ctx.settings.retry_seconds
            )
            outcome.retry_reason = "; ".join(waiting)
            return outcome
    try:
        record = ctx.runtime.ensure_conversation(conn, namespace, name, spec, uid)
    except RuntimeUnavailableError as exc:
        fields = ConversationStatus.model_validate({**base, "phase": current_phase})
        return finish(
            ctx,
            body,
            readiness.blocked([str(exc)], "RuntimeUnavailable"),
            fields,
            retry_in=ctx.settings.retry_seconds,
        )
    # The runtime's part as the runtime wrote it (one type from the store to the resource).
    status = ConversationStatus.model_validate({**record.model_dump(exclude_unset=True), **base})
    return finish(ctx, body, readiness.conversation(record.phase, record.reason), status)


def stop_conversation(ctx: Context, body: dict[str, Any]) -> str:
    """On deletion (finalizer): stop it; purge the transcript if ``transcriptRetention: purge``."""
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    try:
        purge = (
            ConversationSpec.model_validate(body.get("spec") or {}).transcript_retention
            is TranscriptRetention.PURGE
        )
    except ValidationError:
        purge = False
    conn, problem = ctx.connection(namespace)
    if conn is None:
        return f"not stopped: {problem}"
    try:
        return str(ctx.runtime.stop_conversation(conn, namespace, name, uid, purge))
    except RuntimeUnavailableError as exc:
        raise TemporaryError(f"cannot stop conversation {namespace}/{name}: {exc}", delay=10) from exc
