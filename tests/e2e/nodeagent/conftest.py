"""Fixtures of the node agent's own tests."""

from tests.e2e.nodeagent.fixtures import node_agent_factory

__all__ = ["node_agent_factory"]
