"""The pydantic conventions of every CRD spec and status model (Agent, Conversation, ModelPolicy and
their parts): camelCase aliases, unknown fields rejected, immutable, and field docstrings as the
descriptions ``kubectl explain`` shows."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CrdModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )
