"""pytest fixtures for the node agent. Use them from any e2e conftest:

from tests.e2e.nodeagent.fixtures import node_agent_factory  # noqa: F401 (fixture)

def test_x(node_agent_factory):
    node = node_agent_factory(namespaces=["demo"])   # started; stopped at teardown
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stoa_devenv.cluster import ControlPlane
from tests.e2e.nodeagent.agent import NodeAgent

NodeAgentFactory = Callable[..., NodeAgent]


@pytest.fixture
def node_agent_factory(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgentFactory]:
    """Start node agents with ``NodeAgent`` keyword arguments; on failure their state is printed."""
    agents: list[NodeAgent] = []

    def start(**kwargs: Any) -> NodeAgent:
        kwargs.setdefault("workdir", Path(tmp_path_factory.mktemp("node")))
        agent = NodeAgent(control_plane.kubeconfig, **kwargs).start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        print(agent.describe())  # shown by pytest only when the test failed
        agent.stop()
