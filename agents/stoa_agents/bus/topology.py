"""Queue names and arguments (pure). See docs/runtime.md "Queue topology" and the verified standby note."""

from __future__ import annotations

from typing import Any

from stoa_agents.identity import split_agent_key

DEAD_LETTER_EXCHANGE = "stoa.dlx"


def queue_name(key: str) -> str:
    """``stoa.agent.<namespace>.<name>`` for the agent key ``<namespace>/<name>``; ``stoa.agent.<name>``
    for an unscoped key (``stoa run``). DNS labels hold no dots, so the name is unambiguous."""
    namespace, agent = split_agent_key(key)
    return f"stoa.agent.{namespace}.{agent}" if namespace else f"stoa.agent.{agent}"


def dead_letter_queue_name(key: str) -> str:
    return f"{queue_name(key)}.dlq"


def queue_arguments(key: str, delivery_limit: int) -> dict[str, Any]:
    """One active consumer + hot standbys, bounded redeliveries, at-least-once dead-lettering.

    ``key`` is the agent key (``agent_key``); it is also the dead-letter routing key.

    ``x-delivery-limit`` must be an int (a string is silently ignored); at-least-once dead-lettering only
    holds together with ``x-overflow: reject-publish``.
    """
    if not isinstance(delivery_limit, int) or isinstance(delivery_limit, bool) or delivery_limit < 1:
        raise ValueError(f"delivery limit must be a positive int, got {delivery_limit!r}")
    return {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": key,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dead_letter_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


def with_heartbeat(url: str, heartbeat_seconds: int) -> str:
    """The AMQP URL with an explicit heartbeat (aio-pika's default of 60 s hides frozen peers for minutes)."""
    if "heartbeat=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}heartbeat={heartbeat_seconds}"
