"""The protocol every vector store backend implements.

A store holds the normalised document vectors of one index version, addressed by *position*
(row ``i`` = the doc at position ``i`` in that version's doc store), and answers inner-product
top-k queries. Backends: :mod:`ragtune.index.faiss_store` (default), :mod:`ragtune.index.chroma_store`;
this module holds the protocol only and imports none of them (they import it). Build or open a
configured backend's store with :func:`ragtune.index.create_store` / :func:`ragtune.index.open_store`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragtune.memory import release_pages

if TYPE_CHECKING:
    from ragtune.config import IndexConfig

__all__ = ["HNSW_EF_CONSTRUCTION", "HNSW_M", "VectorStore", "row_blocks"]

#: HNSW graph degree (faiss and Chroma); the search breadth is ``index.hnsw_ef_search``.
HNSW_M = 32
#: HNSW build breadth (faiss and Chroma; it was 64 for faiss, 100 for Chroma): a better graph for a
#: build about 4x longer, which the scale benchmark measured at 10^4 to 10^6 docs (benchmarks/RESULTS.md, "Scale").
HNSW_EF_CONSTRUCTION = 200
#: Rows per block when vectors are copied into a store (bounds the temporaries to one block).
BLOCK_ROWS = 65_536


def row_blocks(matrix: np.ndarray, rows: int = BLOCK_ROWS):  # type: ignore[no-untyped-def]
    """Yield ``(start, block)``: contiguous float32 blocks of ``matrix``'s rows, releasing a memory map's pages after each."""
    for start in range(0, len(matrix), rows):
        yield start, np.ascontiguousarray(matrix[start : start + rows], dtype=np.float32)
        release_pages(matrix)


class VectorStore(ABC):
    """A top-k inner-product index over one version's document vectors."""

    #: Backend name as used in :class:`ragtune.config.IndexConfig`.
    backend: str = ""
    #: The index type this store searches with (``"flat"``, ``"hnsw"``, ``"ivf"``).
    kind: str = ""

    @classmethod
    @abstractmethod
    def create(cls, directory: Path, vectors: np.ndarray, config: IndexConfig, *, name: str) -> VectorStore:
        """Build a store for ``vectors`` (row = position) and persist it under ``directory``.

        Args:
            directory: The (staging) version directory.
            vectors: ``(n, d)`` float32, L2-normalised.
            config: The index config.
            name: A name unique to this workspace version (used by server-side backends).
        """

    @classmethod
    @abstractmethod
    def open(cls, directory: Path, config: IndexConfig, *, name: str) -> VectorStore:
        """Open the store persisted under ``directory``."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product.

        Returns:
            ``(scores, positions)``, both ``(len(queries), k')`` with ``k' = min(k, len(self))``;
            positions are int64 rows of the doc store.
        """

    @abstractmethod
    def __len__(self) -> int:
        """Number of vectors."""

    def drop(self) -> None:  # noqa: B027 - optional hook
        """Release server-side resources of a pruned version (no-op for file backends)."""

