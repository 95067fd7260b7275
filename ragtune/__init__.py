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
    FeedbackError,
    InputError,
    MissingDependencyError,
    ModelError,
    NotEnoughFeedbackError,
    RagtuneError,
    RefreshLockedError,
    WorkspaceError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
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
    "WorkspaceError",
    "__version__",
]
