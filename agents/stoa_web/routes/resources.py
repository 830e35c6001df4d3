"""``/v1/namespaces/{namespace}/agents`` and ``.../modelpolicies`` (status as the operator writes it, and
the gateway replicas' live view of each policy), and ``/v1/whoami``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel, ValidationError

from stoa_api.agent import AgentSpec
from stoa_api.base import NAME_PATTERN
from stoa_api.status import AgentStatus, ModelPolicyStatus
from stoa_gateway.policy import ModelPolicySpec
from stoa_operator.reconcile.readiness import merge_target_health
from stoa_web.access import requires
from stoa_web.auth import Caller
from stoa_web.events import CIRCUIT_STATES, FAILOVER_EVENTS
from stoa_web.models import (
    Agent,
    AgentList,
    GatewayEvent,
    GatewayTarget,
    GatewayView,
    ModelPolicy,
    ModelPolicyList,
    WhoAmI,
    object_meta,
)
from stoa_web.problems import ERROR_RESPONSES
from stoa_web.routes.table import RouteTable
from stoa_web.services import Services, caller, services

router = RouteTable(tags=["agents and model policies"])
Namespace = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]
Svc = Annotated[Services, Depends(services)]
Who = Annotated[Caller, Depends(caller)]
RECENT = 20


def _spec(model: type[BaseModel], item: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        return model.model_validate(item.get("spec") or {}), None
    except ValidationError as exc:
        return None, str(exc.errors()[0]["msg"])


def to_agent(item: dict[str, Any]) -> Agent:
    spec, error = _spec(AgentSpec, item)
    status = AgentStatus.model_validate(item.get("status") or {})
    return Agent(metadata=object_meta(item), spec=spec, spec_error=error, status=status)


@router.get("/v1/whoami", response_model=WhoAmI, responses=ERROR_RESPONSES, summary="Who the token is")
@requires("get", None, name_param=None)
async def whoami(svc: Svc, who: Who) -> WhoAmI:
    return WhoAmI(
        username=who.user.username,
        groups=list(who.user.groups),
        default_namespace=svc.settings.default_namespace,
    )


@router.get(
    "/v1/namespaces/{namespace}/agents", response_model=AgentList, responses=ERROR_RESPONSES, summary="Agents"
)
@requires("list", "agents", name_param=None)
async def list_agents(namespace: Namespace, svc: Svc, who: Who) -> AgentList:
    found = await svc.as_caller(who, "GET", svc.path(namespace, "agents"))
    items = sorted(found.get("items") or [], key=lambda i: i["metadata"]["name"])
    return AgentList(items=[to_agent(i) for i in items])


@router.get(
    "/v1/namespaces/{namespace}/agents/{name}",
    response_model=Agent,
    responses=ERROR_RESPONSES,
    summary="Agent",
)
@requires("get", "agents")
async def get_agent(namespace: Namespace, name: Name, svc: Svc, who: Who) -> Agent:
    return to_agent(await svc.as_caller(who, "GET", svc.path(namespace, "agents", name)))


def gateway_view(
    policy: str,
    targets: list[str],
    replies: list[dict[str, Any]],
    unreachable: list[str],
    audit: list[dict[str, Any]],
) -> GatewayView:
    """The replicas' view of one policy (pure): worst circuit per target (the operator's merge), summed
    in-flight requests and spend, the slowest replica's latency, and the policy's recent audit events."""
    merged = {t["name"]: t for t in merge_target_health(policy, targets, replies)}
    views = [((r.get("policies") or {}).get(policy) or {}) for r in replies]
    out = []
    for name in targets:
        seen = [v.get("targets", {}).get(name) or {} for v in views]
        latencies = [float(s["ewmaLatencySeconds"]) for s in seen if s.get("ewmaLatencySeconds") is not None]
        successes = sorted(str(s["lastSuccessTime"]) for s in seen if s.get("lastSuccessTime"))
        m = merged.get(name, {})
        out.append(
            GatewayTarget(
                name=name,
                circuit=str(m.get("circuit") or "unknown"),
                in_flight=sum(int(s.get("inFlight") or 0) for s in seen),
                latency_seconds=max(latencies) if latencies else None,
                last_error=m.get("lastError"),
                last_error_time=m.get("lastErrorTime"),
                last_failover_reason=m.get("lastFailoverReason"),
                last_failover_time=m.get("lastFailoverTime"),
                last_success_time=successes[-1] if successes else None,
            )
        )
    kinds = (*FAILOVER_EVENTS, *CIRCUIT_STATES)
    recent = sorted(
        (r for r in audit if r.get("policy") == policy and r.get("event") in kinds), key=lambda r: r["ts"]
    )
    return GatewayView(
        replicas=len(replies),
        unreachable=unreachable,
        targets=out,
        spent_today_usd=round(sum(float(v.get("spentTodayUSD") or 0) for v in views), 6),
        recent=[
            GatewayEvent(
                at=str(r["ts"]),
                event=str(r["event"]),
                policy=policy,
                target=r.get("target"),
                from_target=r.get("fromTarget"),
                reason=str(r.get("reason") or ""),
                agent=r.get("agent"),
                conversation=r.get("conversation"),
            )
            for r in recent[-RECENT:]
        ],
    )


async def _policies(svc: Services, namespace: str, items: list[dict[str, Any]]) -> list[ModelPolicy]:
    replies, unreachable = await svc.gateways.status(namespace)
    known = bool(replies or unreachable)
    audit = (
        [r for page in (await svc.gateways.audit(namespace)).values() for r in page.records] if known else []
    )
    out = []
    for item in items:
        spec, error = _spec(ModelPolicySpec, item)
        name = item["metadata"]["name"]
        targets = [t.name for t in spec.targets] if spec is not None else []
        out.append(
            ModelPolicy(
                metadata=object_meta(item),
                spec=spec,
                spec_error=error,
                status=ModelPolicyStatus.model_validate(item.get("status") or {}),
                gateway=gateway_view(name, targets, replies, unreachable, audit) if known else None,
            )
        )
    return out


@router.get(
    "/v1/namespaces/{namespace}/modelpolicies",
    response_model=ModelPolicyList,
    responses=ERROR_RESPONSES,
    summary="Model policies, with the gateway replicas' live view",
)
@requires("list", "modelpolicies", name_param=None)
async def list_model_policies(namespace: Namespace, svc: Svc, who: Who) -> ModelPolicyList:
    found = await svc.as_caller(who, "GET", svc.path(namespace, "modelpolicies"))
    items = sorted(found.get("items") or [], key=lambda i: i["metadata"]["name"])
    return ModelPolicyList(items=await _policies(svc, namespace, items))


@router.get(
    "/v1/namespaces/{namespace}/modelpolicies/{name}",
    response_model=ModelPolicy,
    responses=ERROR_RESPONSES,
    summary="Model policy, with the gateway replicas' live view",
)
@requires("get", "modelpolicies")
async def get_model_policy(namespace: Namespace, name: Name, svc: Svc, who: Who) -> ModelPolicy:
    item = await svc.as_caller(who, "GET", svc.path(namespace, "modelpolicies", name))
    return (await _policies(svc, namespace, [item]))[0]
