"""Runtime exceptions and the one place where library exceptions become a ``FailureKind``."""

from __future__ import annotations

import aio_pika.exceptions
import aiormq.exceptions

from stoa_agents.protocol import MalformedMessageError
from stoa_agents.store.db import CONNECTION_ERRORS
from stoa_agents.turns.classify import FailureKind
from stoa_agents.turns.plan import MisroutedError, UnknownConversationError

__all__ = ["MisroutedError", "UnknownConversationError", "failure_kind"]

_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aio_pika.exceptions.ChannelInvalidStateError,
)
_PUBLISH_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.DeliveryError,
    aiormq.exceptions.PublishError,
)


def failure_kind(exc: BaseException, broker_closed: bool) -> FailureKind:
    if isinstance(exc, MalformedMessageError):
        return FailureKind.MALFORMED
    if isinstance(exc, UnknownConversationError):
        return FailureKind.UNKNOWN_CONVERSATION
    if isinstance(exc, MisroutedError):
        return FailureKind.MISROUTED
    if broker_closed or isinstance(exc, _BROKER_ERRORS):
        return FailureKind.BROKER_UNAVAILABLE
    if isinstance(exc, _PUBLISH_ERRORS + CONNECTION_ERRORS):
        return FailureKind.TRANSIENT
    return FailureKind.UNEXPECTED
