"""ragtune: a retriever that learns from its own users.

Index a corpus, serve retrieval (Python, CLI, LangChain), log what users see and click, mine
training data from it, and refresh the embedder safely (LoRA / full / query-side tier, a promotion
gate, versioned re-embedding, atomic swap and rollback).
"""

from __future__ import annotations

from ragtune.api import Hit, Ragtune, SearchResults
from ragtune.config import RagtuneConfig
from ragtune.errors import (
    ConfigError,
    FeedbackConflictError,
    FeedbackError,
    InputError,
    MissingDependencyError,
    ModelError,
    NotEnoughFeedbackError,
    RagtuneError,
    RefreshLockedError,
    UnknownIdError,
    WorkspaceError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FeedbackConflictError",
    "FeedbackError",
    "Hit",
    "InputError",
    "MissingDependencyError",
    "ModelError",
    "NotEnoughFeedbackError",
    "Ragtune",
    "RagtuneConfig",
    "RagtuneError",
    "RefreshLockedError",
    "SearchResults",
    "UnknownIdError",
    "WorkspaceError",
    "__version__",
]
