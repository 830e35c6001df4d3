"""``stoa run``'s pure parts and its one owner of teardown."""

from __future__ import annotations

import asyncio
import functools

import pytest

from stoa_agents.local.chaos import Chaos
from stoa_agents.local.teardown import Teardown, started
from stoa_agents.local.wiring import LocalPlan, plan_run
from stoa_api.manifests import parse_manifests

MANIFESTS = """
apiVersion: stoa.dev/v1alpha1
kind: Agent
metadata: {name: ada}
spec: {role: pro, persona: p, modelPolicyRef: {name: m}}
---
apiVersion: stoa.dev/v1alpha1
kind: ModelPolicy
metadata: {name: m}
spec: {targets: [{name: t, baseURL: "http://m/v1", model: x}]}
---
apiVersion: stoa.dev/v1alpha1
kind: Conversation
metadata: {name: c}
spec: {topic: t, participants: [{agentRef: ada}, {agentRef: ben}]}
"""


async def test_teardown_stops_everything_in_reverse_even_when_a_stop_fails() -> None:
    stopped: list[str] = []

    async def stop(name: str) -> None:
        stopped.append(name)
        if name == "gateway":
            raise RuntimeError("already gone")

    async with Teardown() as owner:
        for name in ("postgres", "gateway", "fleet"):
            owner.own(name, functools.partial(stop, name))
        owner.own_sync("model", lambda: stopped.append("model"))
    assert stopped == ["model", "fleet", "gateway", "postgres"]


async def test_a_failed_start_leaves_nothing_running_unowned() -> None:
    owner = Teardown()
    stopped: list[str] = []

    async def slow_ok() -> str:
        await asyncio.sleep(0.05)
        owner.own_sync("slow", lambda: stopped.append("slow"))
        return "up"

    async def fails() -> str:
        raise RuntimeError("no RabbitMQ")

    ok, bad = await asyncio.gather(slow_ok(), fails(), return_exceptions=True)
    assert started(ok) == "up"
    with pytest.raises(RuntimeError, match="no RabbitMQ"):
        started(bad)
    await owner.close()
    assert stopped == ["slow"]  # the start that was still running when the other failed is stopped too


def test_plan_names_missing_agents() -> None:
    assert plan_run(parse_manifests(MANIFESTS)) == "Conversation c names unknown agents: ben"
    plan = plan_run(parse_manifests(MANIFESTS.replace(", {agentRef: ben}", "")))
    assert isinstance(plan, LocalPlan)
    assert plan.needed == ["ada"]


def test_plan_refuses_what_the_operator_would_report() -> None:
    """The same MissingReference the operator writes into the Agent's status."""
    no_policy = MANIFESTS.replace("modelPolicyRef: {name: m}", "modelPolicyRef: {name: gone}")
    assert plan_run(parse_manifests(no_policy.replace(", {agentRef: ben}", ""))) == (
        "Agent ada: ModelPolicy gone not found"
    )
    pinned = MANIFESTS.replace("modelPolicyRef: {name: m}", "modelPolicyRef: {name: m}, model: nope")
    assert plan_run(parse_manifests(pinned.replace(", {agentRef: ben}", ""))) == (
        "Agent ada: ModelPolicy m has no target nope (spec.model pins a target by name; its targets: t)"
    )


def test_plan_refuses_a_conversation_it_would_never_run() -> None:
    text = MANIFESTS.replace(", {agentRef: ben}", "").replace(
        "spec: {topic: t,", "spec: {suspend: true, topic: t,"
    )
    assert plan_run(parse_manifests(text)) == (
        "Conversation c has suspend: true, which stoa run cannot act on later: set it to false"
    )


def test_plan_defaults_participant_roles_from_the_agents_and_notes_cluster_only_fields() -> None:
    text = MANIFESTS.replace(", {agentRef: ben}", "").replace(
        "spec: {role: pro, persona: p,", "spec: {role: pro, persona: p, image: mine:1,"
    )
    plan = plan_run(parse_manifests(text))
    assert isinstance(plan, LocalPlan)
    (participant,) = plan.conversations["c"].participants
    assert participant.role == "pro"  # from Agent ada's spec.role: the conversation set none
    assert plan.notes == ("Agent ada: image apply on a cluster only",)


def test_chaos_is_due_every_n_turns() -> None:
    assert not Chaos(0).due(100)
    chaos = Chaos(3)
    assert [chaos.due(n) for n in (2, 3)] == [False, True]
    chaos.last_kill_turns = 3
    assert [chaos.due(n) for n in (5, 6)] == [False, True]
