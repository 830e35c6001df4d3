"""Pod status as the kubelet reports it: phase, conditions, container states, restart counts."""

from __future__ import annotations

from tests.e2e.nodeagent import spec
from tests.e2e.kube import JSON, Kube, KubeError
from tests.e2e.nodeagent.runs import Container, PodRun, now_rfc3339


def container_status(container: Container) -> JSON:
    state: JSON
    if container.running():
        state = {"running": {"startedAt": container.started_at}}
    elif container.terminated is not None and (container.final or container.proc is not None):
        state = {"terminated": container.terminated}
    else:
        waiting: JSON = {"reason": container.waiting_reason or "ContainerCreating"}
        if container.waiting_message:
            waiting["message"] = container.waiting_message
        state = {"waiting": waiting}
    status: JSON = {
        "name": container.name,
        "image": container.spec.get("image", ""),
        "imageID": "",
        "ready": container.ready and container.running(),
        "started": container.started and container.running(),
        "restartCount": container.restart_count,
        "state": state,
        "lastState": {"terminated": container.last_terminated} if container.last_terminated else {},
    }
    if container.proc is not None:
        status["containerID"] = f"stoa-node://{container.proc.pid}"
    return status


def _condition(run: PodRun, kind: str, value: bool) -> JSON:
    status = "True" if value else "False"
    previous = run.conditions.get(kind)
    if previous is None or previous[0] != status:
        run.conditions[kind] = (status, now_rfc3339())
    return {"type": kind, "status": status, "lastTransitionTime": run.conditions[kind][1]}


def pod_status(run: PodRun) -> JSON:
    statuses = [container_status(c) for c in run.containers.values()]
    phase_inputs = [
        {**s["state"], "ever_started": bool(c.started_at), "final": c.final}
        for s, c in zip(statuses, run.containers.values(), strict=True)
    ]
    phase = spec.pod_phase(run.pod["spec"].get("restartPolicy", "Always"), phase_inputs)
    all_ready = all(s["ready"] for s in statuses)
    return {
        "phase": phase,
        "hostIP": spec.POD_IP,
        "hostIPs": [{"ip": spec.POD_IP}],
        "podIP": spec.POD_IP,
        "podIPs": [{"ip": spec.POD_IP}],
        "startTime": run.start_time,
        "conditions": [
            _condition(run, "PodScheduled", True),
            _condition(run, "Initialized", True),
            _condition(run, "ContainersReady", all_ready),
            _condition(run, "Ready", all_ready),
        ],
        "containerStatuses": statuses,
    }


def report_status(kube: Kube, run: PodRun) -> None:
    """Patch the pod's status when it changed (a pod already gone is not an error)."""
    status = pod_status(run)
    if status == run.last_status:
        return
    try:
        kube.patch(f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status", {"status": status})
    except KubeError as err:
        if err.status not in (404, 409):
            raise
        return
    run.last_status = status
