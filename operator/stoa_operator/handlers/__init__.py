"""kopf handlers only: every trigger of a kind calls that kind's single reconcile function."""

from stoa_operator.handlers.register import register

__all__ = ["register"]
