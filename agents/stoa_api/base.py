"""Shared pydantic configuration of CR spec types: camelCase aliases, unknown fields rejected, and each
field's docstring as its description (the CRD's ``kubectl explain`` text)."""

from __future__ import annotations

from stoa_settings.crdmodel import CrdModel

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GROUP = "stoa.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class Spec(CrdModel):
    """The CRD model conventions (``CrdModel``)."""
