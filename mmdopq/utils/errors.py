"""Errors a user can fix, told apart from bugs.

mmdopq's tools print the message of a :class:`UserError` alone (no traceback; ``--debug``
shows it) and exit with status 2. Each subclass also derives from the builtin exception
that code catching errors would expect (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working. The message names the file, key, layer or value at
fault and what to do.
"""


class UserError(Exception):
    """An error in what the user gave (config, checkpoint, data, options, work dir)."""


class ConfigError(UserError, ValueError):
    """A config key or command-line option has a wrong value."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs does not exist."""


class DataError(UserError, ValueError):
    """The data cannot be used as it is (unreadable image, classes that do not match)."""


class ImageError(UserError, RuntimeError):
    """An image (named, with its dataset index) could not be loaded or run."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be used with this config (unreadable, mismatched, not finite)."""


class WorkDirError(UserError, OSError):
    """The work directory cannot be written, or another run is using it."""


__all__ = [
    'CheckpointError',
    'ConfigError',
    'DataError',
    'ImageError',
    'MissingFileError',
    'UserError',
    'WorkDirError',
]
