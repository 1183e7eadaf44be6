"""The errors a user can cause or survive. ``cli.main`` reports any :class:`DvaeError` as one line
on stderr with exit status 2 (``--debug`` shows the traceback); everything else is a bug."""

from __future__ import annotations


class DvaeError(Exception):
    """Base of every user-facing error: its message names the file, key or value and what to do."""


class ConfigError(DvaeError, ValueError):
    """A configuration or command-line problem (unknown key, bad value, bad option)."""


class DataError(DvaeError, ValueError):
    """A corpus, audio file or feature cache that cannot be used as asked."""


class RunError(DvaeError, RuntimeError):
    """A run directory that cannot be used as asked (missing, corrupt, refused resume)."""


class StorageError(DvaeError, OSError):
    """Writing failed (disk full, read-only directory): nothing already saved was lost."""


class TrainingError(DvaeError, RuntimeError):
    """Training cannot go on (diverged after every rollback, inconsistent resume, ...)."""
