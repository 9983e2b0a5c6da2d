"""Errors of the operator."""


class DroverOperatorError(Exception):
    """Base class of the operator's errors."""


class ConfigurationError(DroverOperatorError):
    """A setting is missing or invalid; the message names it."""


class MigrationError(DroverOperatorError):
    """The database schema could not be brought up to date."""


class PeeringError(DroverOperatorError):
    """The operator cannot take part in peering; the message says what to do."""
