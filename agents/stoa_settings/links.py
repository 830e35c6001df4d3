"""The names Kubernetes gives Service link variables (pure, standard library only).

For every Service of a pod's namespace the kubelet injects, unless the pod sets
``enableServiceLinks: false`` (Stoa's pods do), variables named after the Service in upper case with
``-`` -> ``_`` (``stoa-gateway`` -> ``STOA_GATEWAY``)::

    <SVC>_SERVICE_HOST  <SVC>_SERVICE_PORT  <SVC>_SERVICE_PORT_<PORT NAME>
    <SVC>_PORT  <SVC>_PORT_<n>_<PROTO>  <SVC>_PORT_<n>_<PROTO>_PROTO|_PORT|_ADDR

(``pkg/kubelet/envvars`` in Kubernetes). A setting with a name of one of these shapes could be set by
whoever creates a Service, so no Stoa setting has one: listen ports are ``*_PORT_NUMBER``.
"""

from __future__ import annotations

import re

_SERVICE = r"(?P<service>[A-Z](?:[A-Z0-9_]*?[A-Z0-9])?)"
_PROTO = r"(?:TCP|UDP|SCTP)"
_LINK = re.compile(
    rf"^{_SERVICE}_(?:"
    r"SERVICE_HOST|SERVICE_PORT|SERVICE_PORT_[A-Z0-9](?:[A-Z0-9_]*[A-Z0-9])?"
    rf"|PORT|PORT_[0-9]+_{_PROTO}(?:_PROTO|_PORT|_ADDR)?"
    r")$"
)


def service_of_link(name: str) -> str | None:
    """The Service name (``stoa-gateway``) whose link variables include ``name``, or None.

    Ambiguous names (``A_PORT_80_TCP_PORT`` is a link of ``a``; ``A_PORT`` also of ``a``) give the
    shortest Service name, which is enough to say where the variable may come from.
    """
    match = _LINK.match(name)
    if match is None:
        return None
    return match.group("service").lower().replace("_", "-")


def is_service_link_name(name: str) -> bool:
    return service_of_link(name) is not None
