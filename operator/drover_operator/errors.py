"""Errors of the operator."""


class DroverOperatorError(Exception):
    """Base class of the operator's errors."""


class ConfigurationError(DroverOperatorError):
    """A setting is missing or invalid; the message names it."""


class MigrationError(DroverOperatorError):
    """The database schema could not be brought up to date."""


class PeeringError(DroverOperatorError):
    """The operator cannot take part in peering; the message says what to do."""


class RequestError(DroverOperatorError):
    """A request refused: `status` (HTTP), a problem `type`, and what is wrong. The API
    answers it as a problem; raised wherever the refusal is decided."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type, message
