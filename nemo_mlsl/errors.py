"""One exception hierarchy so that callers (and the CLI) can tell user mistakes from bugs."""


class MLSLError(Exception):
    """Base class for every error nemo-mlsl raises on purpose."""


class ConfigError(MLSLError, ValueError):
    """Bad user input: the message names the field, the value and the fix."""


class DataError(MLSLError):
    """Missing or inconsistent prepared data (``.bin/.idx``, manifest)."""


class FitError(MLSLError):
    """A scaling-law fit could not be made (too few points, degenerate data)."""


class MLSLWarning(UserWarning):
    """Something the user must know that did not stop the command (``mlsl`` prints it as ``mlsl <command>: warning: ...``)."""
