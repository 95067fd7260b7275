"""Cross-fitting the query tier: the one candidate composes as the embedder applies it, folds never see themselves."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.config import TrainConfig
from ragtune.embedder import Embedder, ModelSpec
from ragtune.query_tier import QueryMemory, apply_query_map, apply_query_memory, interpolate_map
from ragtune.training.crossfit import FittedTier, QueryPairs, crossfit_query_tier, fit_query_tier, fold_of, pair_folds, transform

TEMPERATURE = ModelSpec.memory_temperature


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_transform_applies_the_memory_then_the_interpolated_map():
    rng = np.random.default_rng(0)
    q = _unit(rng.normal(size=(6, 8)))
    weight = (np.eye(8) + 0.3 * rng.normal(size=(8, 8))).astype(np.float32)
    memory = QueryMemory(q.copy(), q[::-1].copy())
    tc = TrainConfig(query_interpolation=0.5, memory_weight=1.0)
    moved = apply_query_memory(q, memory, weight=1.0, threshold=tc.memory_threshold, temperature=TEMPERATURE)
    assert not np.allclose(moved, q)  # the memory does move these queries
    want = apply_query_map(moved, interpolate_map(weight, 0.5))
    np.testing.assert_allclose(transform(q, FittedTier(weight, memory, 0.0, 0), tc), want, atol=1e-6)
    # no memory fitted (train.memory_weight 0): the map alone
    np.testing.assert_allclose(transform(q, FittedTier(weight, None, 0.0, 0), tc), apply_query_map(q, interpolate_map(weight, 0.5)), atol=1e-6)
    # interpolation 0: the identity map, the memory alone
    np.testing.assert_allclose(transform(q, FittedTier(weight, memory, 0.0, 0), TrainConfig(query_interpolation=0.0, memory_weight=1.0)), moved, atol=1e-6)


def test_transform_is_what_the_served_spec_applies(tmp_path):
    """The offline check judges the candidate that is served: transform == Embedder.transform_queries of the written spec."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    q = _unit(rng.normal(size=(10, 16)))
    keys = _unit(q[:5] + 0.2 * rng.normal(size=(5, 16)))  # near some of the queries: the memory moves those
    memory = QueryMemory(keys, _unit(rng.normal(size=(5, 16))))
    weight = (np.eye(16) + 0.2 * rng.normal(size=(16, 16))).astype(np.float32)
    tc = TrainConfig(query_interpolation=0.35, memory_weight=0.5, memory_threshold=0.5)
    save_file({"weight": weight}, str(tmp_path / "query_map.safetensors"))
    memory.save(tmp_path / "query_memory.safetensors")
    spec = ModelSpec(
        base="unused", query_map="query_map.safetensors", query_interpolation=tc.query_interpolation,
        query_memory="query_memory.safetensors", memory_weight=tc.memory_weight, memory_threshold=tc.memory_threshold,
    )  # fmt: skip
    served = Embedder(spec, tmp_path, "cpu").transform_queries(q)
    np.testing.assert_allclose(served, transform(q, FittedTier(weight, memory, 0.0, 0), tc), atol=1e-6)


def test_fold_of_is_stable_and_spreads():
    keys = [f"query {i}" for i in range(200)]
    folds = [fold_of(k, 5, 42) for k in keys]
    assert folds == [fold_of(k, 5, 42) for k in keys]
    assert set(folds) == set(range(5)) and max(np.bincount(folds)) < 60
    assert [fold_of(k, 5, 7) for k in keys] != folds  # the seed salts the split


def test_pairs_of_unjudged_queries_train_every_fold():
    keys = ["a", "b", "c", "a"]
    folds = pair_folds(keys, ["a", "b"], 5, 42)
    assert folds[0] == folds[3] == fold_of("a", 5, 42) and folds[1] == fold_of("b", 5, 42) and folds[2] == -1


def test_a_query_is_never_judged_by_a_model_that_saw_it():
    """Each query's only near neighbour in the memory is itself: out of fold, the memory leaves it as it was."""
    rng = np.random.default_rng(1)
    d, n = 32, 40
    q = _unit(rng.normal(size=(n, d)))  # random 32-d directions: pairwise cosines far below the 0.5 threshold
    docs = _unit(rng.normal(size=(n, d)))
    keys = [f"q{i}" for i in range(n)]
    pairs = QueryPairs(q, np.arange(n), np.ones(n), keys)
    tc = TrainConfig(query_interpolation=0.0, memory_weight=1.0)  # the identity map: the memory alone
    oof = crossfit_query_tier(pairs, keys, q, docs, tc, folds=5)
    assert oof.shape == q.shape
    np.testing.assert_allclose(oof, q, atol=1e-6)
    # in sample, the same memory would have moved every query toward its own clicked doc
    fitted = fit_query_tier(pairs, np.arange(n), docs, tc)
    in_sample = transform(q, fitted, tc)
    assert np.all(np.sum(in_sample * docs, axis=1) > np.sum(q * docs, axis=1) + 0.1)


def test_crossfit_rows_come_from_their_own_fold_model():
    """A pattern shared across folds is learned out of fold; each row equals the fold model's transform."""
    rng = np.random.default_rng(2)
    d, n = 16, 30
    docs = _unit(rng.normal(size=(8, d)))
    q = _unit(docs[0] + 0.3 * rng.normal(size=(n, d)))  # every query near doc 0 ...
    keys = [f"q{i}" for i in range(n)]
    pairs = QueryPairs(q, np.full(n, 5), np.ones(n), keys)  # ... and every user clicked doc 5
    tc = TrainConfig(query_interpolation=0.35, memory_weight=0.5)
    oof = crossfit_query_tier(pairs, keys, q, docs, tc, folds=5)
    assert np.all(oof @ docs[5] > q @ docs[5])  # out of fold, every query still moves toward doc 5
    fold = np.array([fold_of(k, 5, tc.seed) for k in keys])
    f = int(fold[0])
    model = fit_query_tier(pairs, np.flatnonzero(fold != f), docs, tc)
    np.testing.assert_allclose(oof[fold == f], transform(q[fold == f], model, tc), atol=1e-5)
    with pytest.raises(AssertionError):  # the in-sample model gives other vectors: rows really are out of fold
        np.testing.assert_allclose(oof[fold == f], transform(q[fold == f], fit_query_tier(pairs, np.arange(n), docs, tc), tc), atol=1e-5)
