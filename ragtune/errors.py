"""The ragtune error hierarchy.

Every error ragtune raises on purpose is a :class:`RagtuneError` and also a fitting builtin, so callers
can catch either. Messages say what was received and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FeedbackError",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "NotEnoughFeedbackError",
    "RagtuneError",
    "RefreshLockedError",
    "VectorIndexError",
    "WorkspaceError",
]


class RagtuneError(Exception):
    """Base class of all errors raised by ragtune."""


class ConfigError(RagtuneError, ValueError):
    """A configuration value is invalid."""


class WorkspaceError(RagtuneError, FileNotFoundError):
    """The workspace is missing, incomplete, or holds something else than asked for."""


class InputError(RagtuneError, ValueError):
    """User input (a corpus file, a feedback file, a query id) is malformed or unknown."""


class ModelError(RagtuneError, OSError):
    """A model could not be loaded or saved."""


class VectorIndexError(RagtuneError, LookupError):
    """The vector index is missing or inconsistent."""


class FeedbackError(RagtuneError, ValueError):
    """The feedback log was given an unknown query/doc id or a malformed event."""


class RefreshLockedError(RagtuneError, RuntimeError):
    """Another refresh holds the workspace lock."""


class NotEnoughFeedbackError(RagtuneError, RuntimeError):
    """There is too little (new) feedback to refresh on."""


class MissingDependencyError(RagtuneError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""
