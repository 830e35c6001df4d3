"""Stoa model gateway: the ModelPolicy engine.

Schema and config: ``stoa_gateway.policy`` / ``stoa_gateway.config`` (re-exported here).
Server: ``stoa_gateway.server`` (``create_app``, ``run_gateway``, ``start_gateway``); CLI:
``stoa_gateway.cli.main``. The fake provider (test tooling) lives in ``stoa_testing.fake_provider``.
"""

from stoa_gateway.config import ConfigError, load_gateway_config, parse_gateway_config
from stoa_gateway.policy import GatewayConfig, ModelPolicy, ModelPolicySpec, PolicyEntry

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "ModelPolicy",
    "ModelPolicySpec",
    "PolicyEntry",
    "load_gateway_config",
    "parse_gateway_config",
]
