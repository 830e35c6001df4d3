"""Reading the gateway config file (YAML or JSON: ``{policies: [{name, spec}]}``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from stoa_gateway.policy import GatewayConfig


class ConfigError(ValueError):
    """The config file is unreadable or does not validate; the message says where."""


def parse_gateway_config(content: bytes, source: str = "<config>") -> GatewayConfig:
    """Parse YAML (a superset of JSON) and validate it; pure."""
    try:
        data = yaml.safe_load(content) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with 'policies'")
    try:
        return GatewayConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate the gateway config file; raises ``ConfigError``."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    return parse_gateway_config(content, str(path))
