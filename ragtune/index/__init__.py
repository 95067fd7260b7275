"""Vector stores: one small protocol, one file per backend."""

from __future__ import annotations

from ragtune.index.base import VectorStore, open_store

__all__ = ["VectorStore", "open_store"]
