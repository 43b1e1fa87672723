"""The user's mistakes and bad data, as opposed to bugs: entry points print these as one line and exit
with code 2; anything else keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the input (config, data, checkpoint) that the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work."""


class DataError(UserError, ValueError):
    """Data that cannot be read as the layout promises (annotations, videos, caches)."""


class MissingInputError(UserError, FileNotFoundError):
    """A data root, file or folder the run was pointed at that does not exist."""
