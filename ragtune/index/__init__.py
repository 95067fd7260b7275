"""Vector stores: one small protocol (:mod:`ragtune.index.base`), one file per backend.

The backends are registered here by name as ``"module:Class"`` strings and imported only when a
store of that backend is created or opened, so importing :mod:`ragtune.index` stays light (no
faiss, no chromadb).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragtune.errors import ConfigError
from ragtune.index.base import VectorStore

if TYPE_CHECKING:
    from ragtune.config import IndexConfig

__all__ = ["BACKENDS", "VectorStore", "create_store", "open_store"]

#: Backend name (``index.backend``) → ``"module:Class"`` of its :class:`VectorStore`.
BACKENDS: dict[str, str] = {
    "faiss": "ragtune.index.faiss_store:FaissStore",
    "chroma": "ragtune.index.chroma_store:ChromaStore",
}


def _backend(name: str) -> type[VectorStore]:
    target = BACKENDS.get(name)
    if target is None:
        raise ConfigError(f"unknown index backend {name!r}; use 'faiss' or 'chroma'")
    module, _, attr = target.partition(":")
    cls: type[VectorStore] = getattr(importlib.import_module(module), attr)
    return cls


def create_store(directory: Path, vectors: np.ndarray, config: IndexConfig, *, name: str) -> VectorStore:
    """Build the configured backend's store."""
    return _backend(config.backend).create(directory, vectors, config, name=name)


def open_store(directory: Path, config: IndexConfig, *, name: str, backend: str | None = None) -> VectorStore:
    """Open a version's store with the backend it was written with."""
    return _backend(backend or config.backend).open(directory, config, name=name)
