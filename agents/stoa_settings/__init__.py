"""What every Stoa process's settings share: read once from ``STOA_*`` variables, refuse unknown names
of their own family (a typo or a stale name fails the start with a message naming the variable, instead
of being ignored), and never use a name a Kubernetes Service link could produce."""

from stoa_settings.base import DEVELOPER_VARIABLES, StoaSettings, UnknownSettingError, env_names
from stoa_settings.links import is_service_link_name, service_of_link

__all__ = [
    "DEVELOPER_VARIABLES",
    "StoaSettings",
    "UnknownSettingError",
    "env_names",
    "is_service_link_name",
    "service_of_link",
]
