"""Typed errors. Each carries a one-line message that names the problem.

The CLI prints ``error: <message>`` and exits non-zero for any :class:`RecsError`; only
unexpected exceptions produce a traceback. Serving maps them to HTTP 4xx.
"""


class RecsError(Exception):
    """Base class: an expected failure caused by input, data or configuration."""

    exit_code = 2


class ConfigError(RecsError):
    """A flag, parameter, use case or file that does not fit (unknown use case, bad URL...)."""


class DataError(RecsError):
    """Input data violates a contract (missing column, null id, unknown event, empty result)."""


class ModelMismatchError(RecsError):
    """A model/config does not match the data's use case or feature spec."""


class ModelFitError(RecsError):
    """Training diverged (NaN/inf factors or loss), as implicit's ModelFitError."""


class StorageError(RecsError):
    """A URI cannot be read or written."""


class BundleError(RecsError):
    """A model bundle is missing, incomplete, or fails checksum verification."""
