"""TokenReview and SubjectAccessReview against the API server, with short-lived result caches.

Results are kept ``ttl`` seconds (0: none), keyed by a hash of the token (never the token itself) and by
the exact question. Errors are never cached. ``fresh=True`` skips the caches (open streams re-checking).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from stoa_web.access import (
    Check,
    UserInfo,
    access_review,
    decision_from_review,
    token_review,
    user_from_review,
)
from stoa_web.kube import Kube

K = TypeVar("K")
V = TypeVar("V")
MAX_ENTRIES = 10_000


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        if self.ttl <= 0:
            return None
        found = self._items.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < time.monotonic():
            self._items.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: who (from the TokenReview) and the token to act with."""

    user: UserInfo
    token: str


class Authenticator:
    def __init__(self, kube: Kube, ttl: float) -> None:
        self.kube = kube
        self._users: TtlCache[str, UserInfo] = TtlCache(ttl)
        self._decisions: TtlCache[tuple[str, tuple[str, ...], Check], tuple[bool, str]] = TtlCache(ttl)

    async def authenticate(self, token: str, *, fresh: bool = False) -> UserInfo | None:
        """The token's user, or None when the API server does not accept it. Raises ``KubeError`` when the
        API server cannot answer."""
        key = hashlib.sha256(token.encode()).hexdigest()
        if not fresh:
            cached = self._users.get(key)
            if cached is not None:
                return cached
        review = await self.kube.request(
            "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=token_review(token)
        )
        user = user_from_review(review)
        if user is not None:
            self._users.put(key, user)
        return user

    async def authorize(self, user: UserInfo, check: Check, *, fresh: bool = False) -> tuple[bool, str]:
        key = (user.username, user.groups, check)
        if not fresh:
            cached = self._decisions.get(key)
            if cached is not None:
                return cached
        review = await self.kube.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body=access_review(user, check),
        )
        decision = decision_from_review(review)
        self._decisions.put(key, decision)
        return decision
