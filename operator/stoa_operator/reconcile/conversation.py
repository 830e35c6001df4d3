"""Conversation -> the durable runtime record and kickoff (started once), suspend/resume, status sync."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from stoa_api.conversation import ConversationSpec, TranscriptRetention
from stoa_api.status import ConversationStatus
from stoa_operator.errors import TemporaryError
from stoa_operator.models.kinds import AGENT
from stoa_operator.reconcile import readiness
from stoa_operator.reconcile.context import Context, Outcome, finish, validated_spec
from stoa_operator.runtime_adapter import RuntimeUnavailableError, runtime_name, transcript_hint

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")


def is_settled(body: dict[str, Any]) -> bool:
    """Finished and already observed: the status timer has nothing left to do."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == generation


def reconcile_conversation(ctx: Context, body: dict[str, Any]) -> Outcome:
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    spec = validated_spec(ctx, body, ConversationSpec)
    base = {"runtime_name": runtime_name(namespace, name), "transcript": transcript_hint(namespace, name)}
    current_phase = (body.get("status") or {}).get("phase") or "Pending"
    missing = [
        f"Agent {p.agent_ref} not found"
        for p in spec.participants
        if ctx.kube.get(AGENT.api_version, AGENT.kind, namespace, p.agent_ref) is None
    ]
    conn, problem = ctx.connection(namespace)
    if problem:
        missing.append(problem)
    if missing or conn is None:
        fields = ConversationStatus.model_validate({**base, "phase": current_phase})
        return finish(ctx, body, readiness.blocked(missing), fields, retry_in=ctx.settings.retry_seconds)
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
    if record.id != uid:
        message = (
            f"the runtime already holds conversation {runtime_name(namespace, name)} "
            "from an earlier resource "
            "(transcript kept); delete it with transcriptRetention purge or use another name"
        )
        return finish(
            ctx, body, readiness.blocked([message], "NameInUse"), ConversationStatus.model_validate(base)
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
