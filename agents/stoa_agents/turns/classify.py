"""What to do with a delivery that failed (pure): retry in place, requeue, reject, abandon or exit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stoa_gateway.backoff import next_delay


class FailureKind(StrEnum):
    """Why processing a delivery raised. (Duplicates and finished conversations are not failures: the
    turn's outcome says so and the delivery is acked.)"""

    MALFORMED = "malformed"  # body is not a turn message
    UNKNOWN_CONVERSATION = "unknownConversation"
    MISROUTED = "misrouted"  # message addressed to another agent, or a seq from the future
    TRANSIENT = "transient"  # database unreachable, publish refused or unconfirmed
    BROKER_UNAVAILABLE = "brokerUnavailable"  # our channel/connection is gone: the delivery is void
    UNEXPECTED = "unexpected"  # a bug or a poison message


class Action(StrEnum):
    RETRY = "retry"  # keep holding the message, back off, run the turn again (effects are idempotent)
    REQUEUE = "requeue"  # nack with requeue: counts towards x-delivery-limit, then dead-lettered
    REJECT = "reject"  # dead-letter at once
    ABANDON = "abandon"  # the channel is gone; the broker redelivers after reconnect
    EXIT = "exit"  # give up holding it: exit without acking, a standby (or restart) takes over


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def classify(kind: FailureKind, infra_elapsed_seconds: float, infra_budget_seconds: float) -> Decision:
    """One table for every failure. Requeues are immediate in RabbitMQ, so transient ones retry in place."""
    match kind:
        case FailureKind.MALFORMED | FailureKind.UNKNOWN_CONVERSATION | FailureKind.MISROUTED:
            return Decision(Action.REJECT, f"cannot be processed ({kind.value})")
        case FailureKind.TRANSIENT:
            if infra_elapsed_seconds < infra_budget_seconds:
                return Decision(Action.RETRY, "transient failure, retrying in place")
            return Decision(
                Action.EXIT, f"transient failure for {infra_elapsed_seconds:.0f}s, giving up the message"
            )
        case FailureKind.BROKER_UNAVAILABLE:
            return Decision(Action.ABANDON, "broker connection lost; the message will be redelivered")
        case FailureKind.UNEXPECTED:
            return Decision(Action.REQUEUE, "unexpected error; requeued towards the delivery limit")


def retry_delay(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Exponential backoff without jitter for in-place retries (attempt 1 -> base)."""
    return next_delay(max(1, attempt), base=base, cap=cap)
