"""Registering the handlers on a kopf registry; explicit, stable handler ids; errors mapped onto kopf."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from stoa_operator.builders.common import LABEL_AGENT, LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY
from stoa_operator.errors import InvalidSpecError, PermanentError, TemporaryError
from stoa_operator.metrics import Metrics
from stoa_operator.models.kinds import AGENT, CONVERSATION, MODEL_POLICY, Kind
from stoa_operator.reconcile.agent import reconcile_agent
from stoa_operator.reconcile.context import Context, Outcome
from stoa_operator.reconcile.conversation import is_settled, reconcile_conversation, stop_conversation
from stoa_operator.reconcile.modelpolicy import live_policies, reconcile_model_policy, sync_gateway

log = logging.getLogger("stoa.operator")
Reconcile = Callable[[Context, dict[str, Any]], Outcome]
CHILDREN = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"),
)


def run_reconcile(
    ctx: Context,
    *,
    metrics: Metrics,
    kind: str,
    fn: Reconcile,
    body: dict[str, Any],
    trigger: str,
    retry: bool,
) -> None:
    """Run one reconcile with metrics and logs; map errors (and wanted retries) onto kopf."""
    meta = body.get("metadata") or {}
    started = time.perf_counter()
    result = "ok"
    try:
        outcome = fn(ctx, body)
        if outcome.written:
            metrics.status_writes.labels(kind).inc()
        if outcome.retry_in is not None:
            result = "retry"
            log.info(
                "Waiting for references kind=%s name=%s/%s reason=%s",
                kind,
                meta.get("namespace"),
                meta.get("name"),
                outcome.retry_reason,
            )
            if retry:
                raise kopf.TemporaryError(outcome.retry_reason, delay=outcome.retry_in)
    except InvalidSpecError as exc:
        result = "error"
        metrics.errors.labels(kind, "InvalidSpec").inc()
        raise kopf.PermanentError(str(exc)) from exc
    except TemporaryError as exc:
        result = "retry"
        metrics.errors.labels(kind, "Temporary").inc()
        log.warning(
            "Reconcile will retry kind=%s name=%s/%s error=%s",
            kind,
            meta.get("namespace"),
            meta.get("name"),
            exc,
        )
        if retry:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
    except PermanentError as exc:
        result = "error"
        metrics.errors.labels(kind, "Permanent").inc()
        raise kopf.PermanentError(str(exc)) from exc
    finally:
        metrics.duration.labels(kind).observe(time.perf_counter() - started)
        metrics.reconciles.labels(kind, trigger, result).inc()


def _register_kind(
    registry: kopf.OperatorRegistry,
    ctx: Context,
    *,
    metrics: Metrics,
    kind: Kind,
    fn: Reconcile,
    interval: float,
    skip_timer: Callable[[dict[str, Any]], bool] = lambda _b: False,
) -> None:
    res: dict[str, Any] = {
        "group": kind.group,
        "version": kind.version,
        "plural": kind.plural,
        "registry": registry,
    }

    @kopf.on.create(**res, id="reconcile-create")
    def on_create(body: kopf.Body, **_: Any) -> None:
        run_reconcile(
            ctx, metrics=metrics, kind=kind.kind, fn=fn, body=dict(body), trigger="create", retry=True
        )

    @kopf.on.update(**res, id="reconcile-update", field="spec")
    def on_update(body: kopf.Body, **_: Any) -> None:
        run_reconcile(
            ctx, metrics=metrics, kind=kind.kind, fn=fn, body=dict(body), trigger="update", retry=True
        )

    @kopf.on.resume(**res, id="reconcile-resume")
    def on_resume(body: kopf.Body, **_: Any) -> None:
        run_reconcile(
            ctx, metrics=metrics, kind=kind.kind, fn=fn, body=dict(body), trigger="resume", retry=True
        )

    @kopf.timer(**res, id="reconcile-timer", interval=interval, initial_delay=interval)
    def on_timer(body: kopf.Body, **_: Any) -> None:
        if body.get("metadata", {}).get("deletionTimestamp") or skip_timer(dict(body)):
            return
        run_reconcile(
            ctx, metrics=metrics, kind=kind.kind, fn=fn, body=dict(body), trigger="timer", retry=False
        )


def register(registry: kopf.OperatorRegistry, ctx: Context, metrics: Metrics) -> None:
    s = ctx.settings

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account or KUBECONFIG, as the kubernetes client resolves them."""
        return kopf.login_via_client(**kwargs)

    _register_kind(
        registry,
        ctx,
        metrics=metrics,
        kind=MODEL_POLICY,
        fn=reconcile_model_policy,
        interval=s.resync_seconds,
    )
    _register_kind(registry, ctx, metrics=metrics, kind=AGENT, fn=reconcile_agent, interval=s.resync_seconds)
    _register_kind(
        registry,
        ctx,
        metrics=metrics,
        kind=CONVERSATION,
        fn=reconcile_conversation,
        interval=s.conversation_sync_seconds,
        skip_timer=is_settled,
    )

    @kopf.on.delete(
        MODEL_POLICY.group,
        MODEL_POLICY.version,
        MODEL_POLICY.plural,
        id="gateway-config",
        optional=True,
        registry=registry,
    )
    def on_policy_delete(body: kopf.Body, **_: Any) -> None:
        """Drop the policy from the shared config (no finalizer: the drift timer of the others repairs)."""
        meta = body["metadata"]
        sync_gateway(ctx, meta["namespace"], exclude=meta["name"])

    @kopf.on.delete(
        CONVERSATION.group,
        CONVERSATION.version,
        CONVERSATION.plural,
        id="stop",
        retries=6,
        backoff=10,
        registry=registry,
    )
    def on_conversation_delete(body: kopf.Body, logger: Any, **_: Any) -> None:
        try:
            done = stop_conversation(ctx, dict(body))
        except TemporaryError as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
        logger.info("Conversation deleted: %s", done)

    def child_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        namespace = meta.get("namespace")
        deleted = event.get("type") == "DELETED"
        modified = event.get("type") == "MODIFIED" and body.get("kind") == "Deployment"
        if not namespace or not (deleted or modified):
            return
        if labels.get(LABEL_COMPONENT) == "gateway":
            if deleted:
                sync_gateway(ctx, namespace)
            else:
                for name in live_policies(ctx, namespace):
                    owner = ctx.kube.get(MODEL_POLICY.api_version, MODEL_POLICY.kind, namespace, name)
                    if owner is not None:
                        run_reconcile(
                            ctx,
                            metrics=metrics,
                            kind=MODEL_POLICY.kind,
                            fn=reconcile_model_policy,
                            body=owner,
                            trigger="child",
                            retry=False,
                        )
            return
        agent = labels.get(LABEL_AGENT)
        if agent:
            owner = ctx.kube.get(AGENT.api_version, AGENT.kind, namespace, agent)
            if owner is None or (owner.get("metadata") or {}).get("deletionTimestamp"):
                return
            run_reconcile(
                ctx,
                metrics=metrics,
                kind=AGENT.kind,
                fn=reconcile_agent,
                body=owner,
                trigger="child",
                retry=False,
            )

    for group, version, plural in CHILDREN:
        kopf.on.event(
            group=group,
            version=version,
            plural=plural,
            id=f"child-{plural}",
            labels={LABEL_MANAGED_BY: MANAGED_BY},
            registry=registry,
        )(child_event)
