"""``stoa operator drain`` (the chart's pre-delete hook) against a fake of the API: order, finalizers, report.
The real thing runs in tests/e2e/node/test_lifecycle_node.py (helm uninstall on the real node)."""

from __future__ import annotations

from typing import Any

from stoa_operator.drain import FINALIZER, Objects, drain


def _obj(ns: str, name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "finalizers": finalizers or []}}


class FakeObjects(Objects):
    """Deleting an object with our finalizer marks it deleting; ``operator`` releases those (as the running
    operator's finalizer handler does) unless it is False (no operator)."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]], operator: bool) -> None:
        super().__init__(api=None, namespaces=["a"])
        self.objects = objects
        self.operator = operator
        self.calls: list[tuple[str, str, str]] = []

    def list(self, plural: str) -> list[dict[str, Any]]:
        if self.operator:  # the operator stops and releases what is deleting
            self.objects[plural] = [o for o in self.objects[plural] if not o.get("deleting")]
        return [o for o in self.objects[plural] if o["metadata"]["namespace"] in self.namespaces]

    def delete(self, plural: str, obj: dict[str, Any]) -> None:
        self.calls.append(("delete", plural, obj["metadata"]["name"]))
        if FINALIZER in obj["metadata"]["finalizers"]:
            obj["deleting"] = True
        else:
            self.objects[plural].remove(obj)

    def drop_finalizer(self, plural: str, obj: dict[str, Any]) -> None:
        self.calls.append(("unfinalize", plural, obj["metadata"]["name"]))
        self.objects[plural].remove(obj)


def _world() -> dict[str, list[dict[str, Any]]]:
    return {
        "conversations": [_obj("a", "debate", [FINALIZER]), _obj("b", "other", [FINALIZER])],
        "agents": [_obj("a", "ada"), _obj("a", "ben")],
        "modelpolicies": [_obj("a", "small")],
    }


def test_conversations_go_first_while_the_operator_runs_then_agents_and_policies() -> None:
    world = _world()
    objects = FakeObjects(world, operator=True)
    report = drain(objects, timeout=5, every=0)
    assert objects.calls == [
        ("delete", "conversations", "debate"),
        ("delete", "agents", "ada"),
        ("delete", "agents", "ben"),
        ("delete", "modelpolicies", "small"),
    ]
    assert report.forced == []
    assert [o["metadata"]["name"] for o in world["conversations"]] == ["other"]  # another namespace: kept
    assert world["agents"] == []
    assert world["modelpolicies"] == []
    assert "1 Conversations stopped by the operator" in report.lines[-1]


def test_without_an_operator_the_finalizer_is_dropped_at_the_deadline_and_said() -> None:
    clock = iter(range(0, 1000, 10))
    objects = FakeObjects(_world(), operator=False)
    report = drain(objects, timeout=15, clock=lambda: float(next(clock)), every=0)
    assert ("unfinalize", "conversations", "debate") in objects.calls
    assert report.forced == ["a/debate"]
    assert any("NOT stopped in the runtime" in line for line in report.lines)
    assert "0 Conversations stopped by the operator" in report.lines[-1]
