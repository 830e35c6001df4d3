"""What went wrong and what to do next: retry later (temporary) or fix the spec/code (permanent)."""

from __future__ import annotations


class OperatorError(Exception):
    """Base of the operator's errors; handlers map subclasses onto kopf errors."""


class TemporaryError(OperatorError):
    """A dependency is missing or busy (404 on a reference, 409, 429, 5xx, network): retry after ``delay``."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(OperatorError):
    """Retrying cannot help: an invalid spec, or a 400/422 from the API server (a builder bug)."""


class InvalidSpecError(PermanentError):
    """The spec does not validate against the pydantic model."""


class NotFoundError(PermanentError):
    """The API server answered 404 (a reader turns it into ``None``)."""
