"""faiss backend: exact (``IndexFlatIP``), HNSW or IVF over normalised vectors; GPU when available."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.errors import MissingDependencyError, VectorIndexError
from ragtune.index.base import HNSW_EF_CONSTRUCTION, HNSW_M, VectorStore, row_blocks
from ragtune.memory import release_pages

if TYPE_CHECKING:
    from ragtune.config import IndexConfig

__all__ = ["FaissStore"]

logger = logging.getLogger(__name__)
FILENAME = "index.faiss"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a hard dependency
        raise MissingDependencyError("the faiss backend needs faiss (pip install faiss-cpu, or ragtune[gpu] for faiss-gpu)") from exc
    return faiss


def _to_gpu(index: Any, config: IndexConfig) -> Any:
    """Move ``index`` to GPU 0 when asked and possible (faiss-gpu from the ``gpu`` extra)."""
    faiss = _faiss()
    if not config.use_gpu:
        return index
    if not hasattr(faiss, "StandardGpuResources"):
        _hint_gpu_extra()
        return index
    if faiss.get_num_gpus() < 1:
        return index
    if hasattr(index, "hnsw"):  # faiss has no GPU HNSW
        return index
    res = faiss.StandardGpuResources()
    logger.info("faiss index on GPU")
    return faiss.index_cpu_to_gpu(res, 0, index)


_hinted = False


def _hint_gpu_extra() -> None:
    """Once per process: a CUDA GPU is here but this faiss build has no GPU support."""
    global _hinted
    torch = sys.modules.get("torch")  # torch is loaded whenever a model is; never imported for this check
    if _hinted or torch is None or not torch.cuda.is_available():
        return
    _hinted = True
    logger.warning("a CUDA GPU is present but this faiss build has no GPU support; searching on CPU. For faiss on the GPU, "
        "install faiss-gpu (pip install 'ragtune[gpu]') in place of faiss-cpu: both provide the faiss module")


class FaissStore(VectorStore):
    """faiss index persisted as ``index.faiss``."""

    backend = "faiss"

    def __init__(self, index: Any, config: IndexConfig) -> None:
        self._index = index
        self._config = config
        self.kind = "hnsw" if hasattr(index, "hnsw") else "ivf" if hasattr(index, "nprobe") else "flat"

    @classmethod
    def _build(cls, vectors: np.ndarray, config: IndexConfig) -> Any:
        """Build the configured kind over ``vectors`` (in memory or memory-mapped), adding a block at a time."""
        faiss = _faiss()
        n, d = vectors.shape
        kind = config.resolved_kind(n)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = config.ef_search(n)
        elif kind == "ivf" and n >= 2:
            # sqrt(n) cells (>= 39 points each), k-means on at most 64 points per cell: training stays
            # seconds at a million docs (4 * sqrt(n) cells on every point took tens of minutes there)
            nlist = max(1, min(int(n**0.5), n // 39 or 1))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False) if n > 64 * nlist else None
            index.train(np.ascontiguousarray(vectors if sample is None else vectors[np.sort(sample)], dtype=np.float32))
            release_pages(vectors)
            index.nprobe = min(config.ivf_nprobe, nlist)
        else:
            index = faiss.IndexFlatIP(d)
        for _, block in row_blocks(vectors):
            index.add(block)
        return index

    @classmethod
    def create(cls, directory: Path, vectors: np.ndarray, config: IndexConfig, *, name: str) -> FaissStore:
        faiss = _faiss()
        if vectors.ndim != 2:
            raise VectorIndexError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        index = cls._build(vectors, config)
        faiss.write_index(index, str(directory / FILENAME))
        return cls(_to_gpu(index, config), config)

    @classmethod
    def open(cls, directory: Path, config: IndexConfig, *, name: str) -> FaissStore:
        faiss = _faiss()
        path = directory / FILENAME
        if not path.is_file():
            vectors = directory / "vectors.npy"
            if not vectors.is_file():
                raise VectorIndexError(f"index file {path} is missing; `ragtune doctor --repair` rebuilds it from the version's vectors.npy")
            # searches keep working: exactly, over the version's own vectors, held in memory until the file is back
            logger.warning("index file %s is missing: searching exactly over %s meanwhile; `ragtune doctor --repair` rebuilds it", path, vectors)
            flat = cls._build(np.load(vectors, mmap_mode="r"), dataclasses.replace(config, kind="flat"))
            return cls(flat, config)  # stays on the CPU: a corpus-sized exact index may not fit a GPU
        index = faiss.read_index(str(path))
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = config.ef_search(index.ntotal)
        if hasattr(index, "nprobe"):
            index.nprobe = min(config.ivf_nprobe, getattr(index, "nlist", config.ivf_nprobe))
        return cls(_to_gpu(index, config), config)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self._index.ntotal)
        if k <= 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, pos = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, pos.astype(np.int64)

    def __len__(self) -> int:
        return int(self._index.ntotal)
