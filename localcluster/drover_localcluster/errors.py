"""Errors raised by the local cluster tooling."""


class LocalClusterError(Exception):
    """Something the local cluster needs is missing or failed; the message says what to do."""


class BuildError(LocalClusterError):
    """A binary could not be built from its Go module."""


class StartupError(LocalClusterError):
    """A component did not become ready; the message points at its log file."""
