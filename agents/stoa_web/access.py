"""Who may call what (pure): the access each route needs, and the review bodies that ask the API server.

Every ``/v1`` route declares its ``Access`` with ``@requires``; the guard (``guard.py``) refuses to start
an app with an undeclared ``/v1`` route, then authenticates and authorizes each call before the route
runs, so a request body is never parsed for a caller who may not make the call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stoa_api.base import GROUP

F = TypeVar("F", bound=Callable[..., Any])
ACCESS_ATTR = "__stoa_access__"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Access:
    """``verb`` on ``resource`` (a Stoa plural) in the path's namespace, named by the ``name`` path
    parameter when the route has one. ``resource=None``: any authenticated caller (``/v1/whoami``)."""

    verb: str
    resource: str | None
    name_param: str | None = "name"


def requires(verb: str, resource: str | None, name_param: str | None = "name") -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, ACCESS_ATTR, Access(verb, resource, name_param))
        return fn

    return mark


def access_of(endpoint: Any) -> Access | None:
    found = getattr(endpoint, ACCESS_ATTR, None)
    return found if isinstance(found, Access) else None


@dataclass(frozen=True)
class UserInfo:
    """What a TokenReview says about a token."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One authorization question: may ``user`` ``verb`` ``resource``/``name`` in ``namespace``?"""

    verb: str
    resource: str
    namespace: str
    name: str | None = None

    def describe(self) -> str:
        what = f"{self.resource}.{GROUP}" + (f" {self.name!r}" if self.name else "")
        return f"{self.verb} {what} in namespace {self.namespace!r}"


def check_for(access: Access, path_params: dict[str, str]) -> Check | None:
    if access.resource is None:
        return None
    name = path_params.get(access.name_param) if access.name_param else None
    return Check(access.verb, access.resource, path_params["namespace"], name)


def invalid_path_params(path_params: dict[str, str]) -> str | None:
    """Namespace and object names are DNS labels; anything else is refused before any review."""
    for key in ("namespace", "name"):
        value = path_params.get(key)
        if value is not None and (len(value) > 63 or not DNS_LABEL.match(value)):
            return f"{key} {value!r} is not a valid Kubernetes name"
    return None


def token_review(token: str) -> dict[str, Any]:
    """The TokenReview body (default audiences: the API server's, the token the caller uses with it)."""
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }


def user_from_review(review: dict[str, Any]) -> UserInfo | None:
    status = review.get("status") or {}
    if not status.get("authenticated"):
        return None
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username:
        return None
    extra = {str(k): tuple(str(x) for x in v) for k, v in (user.get("extra") or {}).items()}
    return UserInfo(
        username=username,
        uid=str(user.get("uid") or ""),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        extra=extra,
    )


def access_review(user: UserInfo, check: Check) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "namespace": check.namespace,
        "verb": check.verb,
        "group": GROUP,
        "resource": check.resource,
    }
    if check.name:
        attributes["name"] = check.name
    spec: dict[str, Any] = {
        "user": user.username,
        "groups": list(user.groups),
        "resourceAttributes": attributes,
    }
    if user.uid:
        spec["uid"] = user.uid
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def decision_from_review(review: dict[str, Any]) -> tuple[bool, str]:
    """(allowed, reason the API server gave, possibly empty)."""
    status = review.get("status") or {}
    allowed = bool(status.get("allowed")) and not status.get("denied")
    return allowed, str(status.get("reason") or status.get("evaluationError") or "")


def denial_message(user: UserInfo, check: Check) -> str:
    return f"user {user.username!r} may not {check.describe()}"
