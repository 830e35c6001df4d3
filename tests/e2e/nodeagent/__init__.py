"""Test-only node agent: a kubelet + scheduler stand-in that runs Pods as local processes.

    from tests.e2e.nodeagent import NodeAgent
    with NodeAgent(control_plane.kubeconfig, namespaces=["demo"]) as node:
        ...  # Deployments in "demo" get Running, Ready pods; node.kill_pod_process(name, "demo")

Fixtures: ``tests.e2e.nodeagent.fixtures`` (``node_agent_factory``).
"""

from tests.e2e.nodeagent.agent import NodeAgent
from tests.e2e.nodeagent.spec import POD_IP

__all__ = ["POD_IP", "NodeAgent"]
