"""The query-side tier at serving time: pure numpy, no torch, nothing of :mod:`ragtune.training`.

Two transforms move query embeddings while documents keep their vectors (no re-embedding):

* **The linear query map** ``q' = normalize(W q)``, pulled toward the identity by a WiSE-FT ratio
  (:func:`interpolate_map`, :func:`apply_query_map`). It is trained by
  :func:`ragtune.training.query_map.train_query_map`.
* **The click memory** (:class:`QueryMemory`, :func:`apply_query_memory`): queries move toward what
  users clicked for similar past queries.

The click memory is a nearest-neighbour tier beside the linear query map. Each entry is a past
training query ``k_i``, the vector ``v_i`` of a document chosen for it, and that training pair's
weight ``w_i`` (:mod:`ragtune.mining`: the share of the query's searches that chose the document,
each choice weighted for position bias and click noise). For a new query ``q`` (its raw embedding),
the entries of weight > 0 whose key's cosine to ``q`` exceeds ``threshold`` vote with
``w_i * exp(cos(q, k_i) / temperature)``, normalised to sum to 1, for ``v_i``, and
``q' = normalize(q + weight * strength * sum_i vote_i v_i)``, where
``strength`` grows linearly from 0 at the threshold to 1 at cosine 1. Queries unlike any past one
are left exactly as they were: the tier's forgetting guard is the threshold itself. Documents keep
their vectors (no re-embedding) and nothing is trained: the gate picks ``weight``.

Picked on SciFact *train* queries only (simulated clicks on two thirds of them, nDCG@10 on the other
third, the test split never consulted): threshold 0.5 and weight 1.0 gave 0.672 → 0.722, with the
third's cold part (no relevant document shared with a clicked query) 0.681 → 0.683; the linear map
gave 0.711 there. Weighting the votes by the clicks' inverse propensities alone did slightly worse
(0.718) on those once-asked queries (without randomised traffic no propensity is estimated, and
those weights are 1). Votes are weighted by how often a query's users chose the document: once
popular queries repeat, a memory whose entries all vote alike pulls a query toward
its stray clicks as hard as toward its answer, and a query with many stray clicks outvotes its
neighbours (``benchmarks/RESULTS.md``, "Repeated queries in the click memory"). Thresholds 0.3-0.4
gained as much but cost cold queries 0.01; 0.6-0.7 gained less. The threshold is a cosine between
two queries of the same model: other models, whose similarities sit higher or lower than MiniLM's,
want their own (``train.memory_threshold``).

:class:`ragtune.embedder.Embedder` applies the memory first, then the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragtune.errors import InputError

__all__ = ["QueryMemory", "apply_query_map", "apply_query_memory", "interpolate_map"]


def interpolate_map(weight: np.ndarray, ratio: float) -> np.ndarray:
    """WiSE-FT for the map: ``I + ratio * (W - I)`` (``ratio`` 1 = as trained, 0 = identity)."""
    if ratio >= 1.0:
        return weight
    eye = np.eye(weight.shape[0], dtype=np.float32)
    return (eye + ratio * (weight - eye)).astype(np.float32)


def apply_query_map(vecs: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """``normalize(vecs @ weight.T)``; identity when ``weight`` is ``None``."""
    if weight is None:
        return vecs
    out = vecs @ weight.T
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class QueryMemory:
    """Past queries (``keys``, raw embeddings), the vectors of the docs chosen for them (``values``) and each entry's weight.

    ``weights`` ``None`` (a memory saved before entries had weights) weighs every entry alike.
    """

    keys: np.ndarray
    values: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float32)
            if w.shape != (len(self.keys),) or not np.isfinite(w).all() or (w < 0).any():
                raise InputError(f"a click memory's weights must be {len(self.keys)} finite numbers >= 0 (one per entry), got shape {w.shape}")
            self.weights = w

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"keys": np.ascontiguousarray(self.keys, dtype=np.float32), "values": np.ascontiguousarray(self.values, dtype=np.float32)}
        if self.weights is not None:
            tensors["weights"] = np.ascontiguousarray(self.weights, dtype=np.float32)
        save_file(tensors, str(path))

    @classmethod
    def load(cls, path: str | Path) -> QueryMemory:
        from safetensors.numpy import load_file

        data = load_file(str(path))
        return cls(data["keys"], data["values"], data.get("weights"))


def apply_query_memory(vecs: np.ndarray, memory: QueryMemory, *, weight: float, threshold: float, temperature: float) -> np.ndarray:
    """The queries ``vecs`` (L2-normalised, ``(n, d)``) moved by ``memory``; see the module docstring."""
    if len(vecs) == 0 or len(memory.keys) == 0 or weight == 0:
        return vecs
    sims = vecs @ memory.keys.T  # (n, m)
    near = sims > threshold
    logits = sims / temperature
    if memory.weights is not None:  # w * exp(cos / T), in log space: no underflow at small temperatures
        near &= (memory.weights > 0)[None, :]  # an entry of weight 0 neither votes nor sets the strength
        logits = logits + np.log(np.maximum(memory.weights, np.finfo(np.float32).tiny))[None, :]
    logits = np.where(near, logits, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    has = near.any(axis=1)
    votes = np.zeros_like(sims)
    votes[has] = np.exp(logits[has] - top[has])
    votes[has] /= votes[has].sum(axis=1, keepdims=True)
    nearest = np.where(near, sims, -np.inf).max(axis=1)
    strength = np.where(has, np.clip((nearest - threshold) / (1.0 - threshold), 0.0, 1.0), 0.0)
    out = vecs + (weight * strength)[:, None] * (votes @ memory.values)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
    return np.ascontiguousarray(out, dtype=np.float32)
