"""The base of every Stoa settings class: pydantic-settings from the environment, unknown names refused.

A process owns a family of variable names (``STOA_`` for ``stoa agent`` and ``stoa gateway``,
``STOA_OPERATOR_`` for the operator). Any variable of that family that is not one of its settings (or of
a family it documents, like the gateway's ``STOA_KEY_*`` API keys) stops the start with an error naming
the variable, the closest setting, and, for a Service-link-shaped name, the Service that produces it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar, Self

from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from stoa_settings.links import service_of_link

_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("stoa_settings_environ", default=None)


# Read by the developer tooling and the tests (``stoa dev``, ``make``), never by a component: a developer who
# exports one (e.g. ``STOA_CACHE_DIR`` to move the build caches) must still be able to start every process.
DEVELOPER_VARIABLES = frozenset(
    {"STOA_CACHE_DIR", "STOA_STATE_DIR", "STOA_NODE_RUN_DIR", "STOA_TEST_ARTIFACTS", "STOA_UPDATE_GOLDEN"}
)


class UnknownSettingError(ValueError):
    """Variables of a process's family that are none of its settings (the message says what to do)."""

    def __init__(self, owner: str, names: list[str], known: list[str], docs: str) -> None:
        self.names = names
        lines = []
        for name in names:
            line = f"unknown setting {name}"
            service = service_of_link(name)
            if service is not None:
                line += (
                    f" (a Kubernetes Service link variable of a Service named {service!r}: run the pod "
                    "with enableServiceLinks: false)"
                )
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            if close:
                line += f"; did you mean {close[0]}?"
            lines.append(line)
        super().__init__(
            f"{owner}: {'; '.join(lines)}. Remove the variable or use one of the settings listed in {docs}"
        )


def env_names(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name -> field name, as pydantic-settings reads them."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{field}".upper(): field for field in settings_cls.model_fields}


class _StrictEnvironment(EnvSettingsSource):
    """The process environment (or the mapping given to ``from_environ``), checked for unknown names."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        source = os.environ if environ is None else environ
        if self.case_sensitive:
            return dict(source)
        return {name.lower(): value for name, value in source.items()}

    def __call__(self) -> dict[str, Any]:
        settings_cls = self.settings_cls
        assert issubclass(settings_cls, StoaSettings)
        environ = _ENVIRON.get()
        unknown = settings_cls.unknown_variables(os.environ if environ is None else environ)
        if unknown:
            raise UnknownSettingError(
                settings_cls.process, unknown, sorted(env_names(settings_cls)), settings_cls.docs
            )
        return super().__call__()


class StoaSettings(BaseSettings):
    """Subclasses set ``model_config`` (with ``env_prefix``) and the class variables below."""

    process: ClassVar[str] = "stoa"  # who refuses to start, for the message
    docs: ClassVar[str] = "the docs"  # where the settings are listed
    family: ClassVar[str] = "STOA_"  # every variable starting with this must be a setting ...
    other_families: ClassVar[tuple[str, ...]] = ()  # ... or start with one of these

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _StrictEnvironment(settings_cls))

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str]) -> list[str]:
        known = env_names(cls)
        return sorted(
            name
            for name in environ
            if name.upper().startswith(cls.family)
            and name.upper() not in known
            and name.upper() not in DEVELOPER_VARIABLES
            and not name.upper().startswith(cls.other_families)
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        """The settings ``environ`` gives (instead of the process environment): for contract tests."""
        token = _ENVIRON.set(dict(environ))
        try:
            return cls()
        finally:
            _ENVIRON.reset(token)
