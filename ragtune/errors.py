"""The ragtune error hierarchy.

Every error ragtune raises on purpose is a :class:`RagtuneError` and also a fitting builtin, so callers
can catch either. Messages say what was received and what to do about it, in the caller's terms: the
message (``str(exc)``) speaks Python (arguments, methods); an error that would read differently on the
command line also carries that wording in :attr:`RagtuneError.cli` (CLI flags and commands), which
``ragtune`` prints instead.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FeedbackConflictError",
    "FeedbackError",
    "FeedbackLogError",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "NotEnoughFeedbackError",
    "RagtuneError",
    "RefreshLockedError",
    "UnknownIdError",
    "VectorIndexError",
    "WorkspaceError",
]


class RagtuneError(Exception):
    """Base class of all errors raised by ragtune.

    Args:
        *args: The message (in Python terms), as for any exception.
        cli: The same message in command-line terms, when it differs (names flags and commands
            instead of arguments and methods); ``None``: the message reads the same in both.

    Attributes:
        cli: The command-line wording, or ``None``.
    """

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli

    def cli_message(self) -> str:
        """The message as the command line shows it: :attr:`cli` when set, else ``str(self)``."""
        return self.cli if self.cli is not None else str(self)


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


class FeedbackLogError(FeedbackError):
    """The feedback log file cannot be read or written (corrupt, read-only, disk full, locked too long).

    Args:
        *args: The message: what failed, on which file, and what to do.
        cli: The message in command-line terms, when it differs.
        path: The log file.
        kind: What is wrong: ``"corrupt"``, ``"unwritable"``, ``"disk_full"``, ``"locked"``,
            ``"io_error"`` or ``"error"``.
    """

    def __init__(self, *args: object, cli: str | None = None, path: str | None = None, kind: str = "error") -> None:
        super().__init__(*args, cli=cli)
        self.path = path
        self.kind = kind


class UnknownIdError(FeedbackError, LookupError):
    """Feedback names a query id that is not in the log, or a doc id that is not in the current index."""


class FeedbackConflictError(FeedbackError):
    """A feedback id was already recorded with other content (another query, doc, type, value or dwell)."""


class RefreshLockedError(RagtuneError, RuntimeError):
    """Another refresh holds the workspace lock."""


class NotEnoughFeedbackError(RagtuneError, RuntimeError):
    """There is too little (new) feedback to refresh on."""


class MissingDependencyError(RagtuneError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""
