"""Cross-fitting for the query-side tier: every feedback query is judged by a model that never saw it.

A held-out share of the feedback (15%) leaves the gate a few dozen queries, and a paired bootstrap
over a few dozen queries cannot tell a real +0.03 from noise. The query tier trains in seconds, so
it can afford k-fold cross-validation instead: the feedback queries are split into ``folds`` by a
hash of their text; for each fold, the map and the click memory are fitted on every other pair and
the fold's queries are transformed with them. Every query thus gets an out-of-fold vector from each
candidate; the promoted tier is fitted on all feedback and keeps its candidate's out-of-fold vectors,
which are what the serving tier is judged by in the next refresh (``ragtune.refresh``).

There is one candidate: the click memory at ``train.memory_weight``, then the map pulled toward
the identity by ``train.query_interpolation`` (as :class:`ragtune.embedder.Embedder` applies them).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ragtune.config import TrainConfig
from ragtune.embedder import ModelSpec
from ragtune.query_tier import QueryMemory, apply_query_map, apply_query_memory, interpolate_map
from ragtune.training.query_map import train_query_map

__all__ = ["FittedTier", "QueryPairs", "crossfit_query_tier", "fit_query_tier", "fold_of", "pair_folds", "transform"]

logger = logging.getLogger(__name__)


@dataclass
class QueryPairs:
    """Training pairs of the query tier.

    Attributes:
        queries: ``(n, d)`` raw query vectors (the document-side model's, no tier applied).
        positives: ``(n,)`` index row of each pair's clicked doc.
        weights: ``(n,)`` click weights.
        keys: Normalised query text of each pair (pairs of one query share it).
        neighbours: ``(n, h)`` each pair's query's nearest index rows (``-1`` pads): the hard
            negatives of the map's softmax sample on corpora past
            :data:`~ragtune.training.query_map.SOFTMAX_DOCS`; ``None`` on smaller ones.
    """

    queries: np.ndarray
    positives: np.ndarray
    weights: np.ndarray
    keys: list[str]
    neighbours: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class FittedTier:
    """A fitted query tier: the linear map and the click memory (``None`` when the memory is off)."""

    weight: np.ndarray
    memory: QueryMemory | None
    train_s: float
    epochs: int


def fold_of(key: str, folds: int, seed: int) -> int:
    """The fold of a normalised query text: a salted hash, so it is stable across refreshes."""
    h = hashlib.sha1(f"fold:{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") % folds


def pair_folds(pair_keys: list[str], judged_keys: list[str], folds: int, seed: int) -> np.ndarray:
    """The fold of each training pair: its query's fold if that query is judged, else -1 (every fold model trains on it)."""
    judged = set(judged_keys)
    return np.array([fold_of(k, folds, seed) if k in judged else -1 for k in pair_keys], dtype=np.int64)


def fit_query_tier(pairs: QueryPairs, rows: np.ndarray, docs: np.ndarray, config: TrainConfig) -> FittedTier:
    """Fit the map (fixed ``query_epochs``, no early stopping: nothing is held out here) and the memory on ``rows``."""
    keys = [pairs.keys[i] for i in rows]
    group = {k: g for g, k in enumerate(dict.fromkeys(keys))}
    res = train_query_map(
        pairs.queries[rows], pairs.positives[rows], pairs.weights[rows], docs, config, query_groups=[group[k] for k in keys],
        neighbours=pairs.neighbours[rows] if pairs.neighbours is not None else None,
    )  # fmt: skip
    memory = (
        QueryMemory(np.ascontiguousarray(pairs.queries[rows]), np.ascontiguousarray(docs[pairs.positives[rows]]), pairs.weights[rows])
        if config.memory_weight > 0 and len(rows)
        else None
    )
    return FittedTier(res.weight, memory, res.seconds, res.epochs_run)


def transform(raw: np.ndarray, fitted: FittedTier, config: TrainConfig) -> np.ndarray:
    """``raw`` query vectors under the fitted tier: the memory (when there is one), then the interpolated map."""
    out = raw
    if fitted.memory is not None:
        temperature = ModelSpec.memory_temperature  # the spec's fixed default, as served
        out = apply_query_memory(out, fitted.memory, weight=config.memory_weight, threshold=config.memory_threshold, temperature=temperature)
    return apply_query_map(out, interpolate_map(fitted.weight, config.query_interpolation))


def crossfit_query_tier(pairs: QueryPairs, gate_keys: list[str], gate_raw: np.ndarray, docs: np.ndarray, config: TrainConfig, folds: int) -> np.ndarray:
    """Out-of-fold query vectors of the gate queries under the tier.

    Args:
        pairs: All training pairs.
        gate_keys: Normalised text of each query to judge; pairs of other keys are always trained on.
        gate_raw: Their raw query vectors.
        docs: The index's document vectors.
        config: Training settings (``seed`` salts the fold hash).
        folds: Number of folds (>= 2).

    Returns:
        ``(len(gate_keys), d)`` query vectors, each row from the fold model that did not see that query
        (a query of a fold with nothing to train on keeps its raw vector).
    """
    fold = np.array([fold_of(k, folds, config.seed) for k in gate_keys], dtype=np.int64)
    pair_fold = pair_folds(pairs.keys, gate_keys, folds, config.seed)
    out = np.array(gate_raw, dtype=np.float32, copy=True)
    for f in range(folds):
        members = np.flatnonzero(fold == f)
        rows = np.flatnonzero(pair_fold != f)
        if not len(members) or not len(rows):
            continue
        fitted = fit_query_tier(pairs, rows, docs, config)
        logger.info("query tier fold %d/%d: fitted on %d pairs, judging %d queries (%.1fs)", f + 1, folds, len(rows), len(members), fitted.train_s)
        out[members] = transform(gate_raw[members], fitted, config)
    return out
