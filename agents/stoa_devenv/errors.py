"""Errors raised when a local component cannot be provided."""


class ComponentMissingError(RuntimeError):
    """A binary or package the local environment needs is not installed and cannot be installed here."""


class ComponentFailedError(RuntimeError):
    """A local component started but did not become ready; the message carries its log tail."""
