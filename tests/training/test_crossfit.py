"""Cross-fitting the query tier: candidates compose as the embedder applies them, folds never see themselves."""

from __future__ import annotations

import numpy as np

from ragtune.config import TrainConfig
from ragtune.embedder import apply_query_map
from ragtune.training.crossfit import FittedTier, QueryPairs, crossfit_query_tier, fold_of, query_tier_candidates, transform
from ragtune.training.query_map import interpolate_map
from ragtune.training.query_memory import QueryMemory, apply_query_memory


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_candidates_apply_memory_then_map():
    rng = np.random.default_rng(0)
    q = _unit(rng.normal(size=(6, 8)))
    weight = (np.eye(8) + 0.3 * rng.normal(size=(8, 8))).astype(np.float32)
    fitted = FittedTier(weight, QueryMemory(q.copy(), q[::-1].copy()), 0.0, 0)
    tc = TrainConfig(query_interpolation=[0.5], memory_weights=[1.0])
    names = dict(query_tier_candidates(tc))
    assert set(names) == {"query@0.5", "memory@1", "memory@1+query@0.5"}
    moved = apply_query_memory(q, fitted.memory, weight=1.0, threshold=tc.memory_threshold, temperature=tc.memory_temperature)  # type: ignore[arg-type]
    np.testing.assert_allclose(transform(q, fitted, names["memory@1"], tc), moved, atol=1e-6)
    np.testing.assert_allclose(transform(q, fitted, names["query@0.5"], tc), apply_query_map(q, interpolate_map(weight, 0.5)), atol=1e-6)
    np.testing.assert_allclose(transform(q, fitted, names["memory@1+query@0.5"], tc), apply_query_map(moved, interpolate_map(weight, 0.5)), atol=1e-6)


def test_fold_of_is_stable_and_spreads():
    keys = [f"query {i}" for i in range(200)]
    folds = [fold_of(k, 5, 42) for k in keys]
    assert folds == [fold_of(k, 5, 42) for k in keys]
    assert set(folds) == set(range(5)) and max(np.bincount(folds)) < 60


def test_a_query_is_never_judged_by_a_model_that_saw_it():
    """Each query's only near neighbour in the memory is itself: out of fold, the memory leaves it as it was."""
    rng = np.random.default_rng(1)
    d, n = 32, 40
    q = _unit(rng.normal(size=(n, d)))  # random 32-d directions: pairwise cosines far below the 0.5 threshold
    docs = _unit(rng.normal(size=(n, d)))
    keys = [f"q{i}" for i in range(n)]
    pairs = QueryPairs(q, np.arange(n), np.ones(n), keys)
    tc = TrainConfig(query_interpolation=[1.0], memory_weights=[1.0], query_epochs=2)
    oof = crossfit_query_tier(pairs, keys, q, docs, tc, folds=5)
    np.testing.assert_allclose(oof["memory@1"], q, atol=1e-6)
    # in sample, the same memory would have moved every query toward its own clicked doc
    in_sample = apply_query_memory(q, QueryMemory(q, docs), weight=1.0, threshold=tc.memory_threshold, temperature=tc.memory_temperature)
    assert np.all(np.sum(in_sample * docs, axis=1) > np.sum(q * docs, axis=1) + 0.1)
