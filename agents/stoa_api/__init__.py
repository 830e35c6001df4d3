"""Pure pydantic types for the ``spec`` of Stoa's custom resources (group ``stoa.dev/v1alpha1``)."""

from stoa_api.agent import AgentSpec
from stoa_api.conversation import ConversationSpec, Participant, ParticipantRole, TurnPolicyType
from stoa_api.manifests import Manifest, ManifestError, load_manifests, parse_manifests

__all__ = [
    "AgentSpec",
    "ConversationSpec",
    "Manifest",
    "ManifestError",
    "Participant",
    "ParticipantRole",
    "TurnPolicyType",
    "load_manifests",
    "parse_manifests",
]
