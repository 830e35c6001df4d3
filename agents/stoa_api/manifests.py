"""Reading multi-document YAML manifests (kinds Agent, ModelPolicy, Conversation) into typed documents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stoa_api.agent import AgentSpec
from stoa_api.base import API_VERSION
from stoa_api.conversation import ConversationSpec
from stoa_gateway.policy import ModelPolicySpec


class ManifestError(ValueError):
    """A manifest is unreadable, of an unknown kind or does not validate; the message says where."""


@dataclass(frozen=True)
class Manifest:
    kind: str
    name: str
    namespace: str
    spec: BaseModel
    source: str


def _spec_types() -> dict[str, type[BaseModel]]:
    return {"Agent": AgentSpec, "Conversation": ConversationSpec, "ModelPolicy": ModelPolicySpec}


def _one(doc: Any, source: str, types: dict[str, type[BaseModel]]) -> Manifest:
    if not isinstance(doc, dict):
        raise ManifestError(f"{source}: a manifest must be a mapping")
    kind = doc.get("kind")
    if kind not in types:
        raise ManifestError(f"{source}: unknown kind {kind!r} (expected one of {', '.join(sorted(types))})")
    if doc.get("apiVersion") != API_VERSION:
        raise ManifestError(f"{source}: {kind} needs apiVersion {API_VERSION}, got {doc.get('apiVersion')!r}")
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{source}: {kind} without metadata.name")
    namespace = str(meta.get("namespace") or "default")
    try:
        spec = types[kind].model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        raise ManifestError(f"{source}: {kind}/{name}: {exc}") from exc
    return Manifest(kind=kind, name=name, namespace=namespace, spec=spec, source=source)


def parse_manifests(text: str, source: str = "<manifests>") -> list[Manifest]:
    """Parse one multi-document YAML text; empty documents are skipped."""
    types = _spec_types()
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from exc
    return [_one(doc, f"{source}#{i}", types) for i, doc in enumerate(docs) if doc is not None]


def load_manifests(directory: str | Path) -> list[Manifest]:
    """Every ``*.yaml``/``*.yml`` file of a directory (sorted by name), or a single file."""
    path = Path(directory)
    files = [path] if path.is_file() else sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if not files:
        raise ManifestError(f"{path}: no YAML manifests found")
    result: list[Manifest] = []
    for file in files:
        result.extend(parse_manifests(file.read_text(), str(file)))
    names = [(m.kind, m.namespace, m.name) for m in result]
    dupes = sorted({f"{k}/{n}" for k, ns, n in names if names.count((k, ns, n)) > 1})
    if dupes:
        raise ManifestError(f"{path}: defined twice: {', '.join(dupes)}")
    return result
