"""The query map's softmax: exact on small corpora, a corrected sample past SOFTMAX_DOCS."""

from __future__ import annotations

import numpy as np

from ragtune.config import TrainConfig
from ragtune.training.query_map import SOFTMAX_DOCS, sample_docs, train_query_map


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_sample_holds_positives_then_nearest_then_random() -> None:
    positives = np.array([5, 7, 5])
    neighbours = np.array([[5, 11, 12, 13], [14, 11, -1, -1], [15, 16, 17, 18]])
    s = sample_docs(positives, 1000, neighbours, size=12, seed=0)
    assert list(s.rows[:2]) == [5, 7]
    # half the sample at most is positives + hard negatives, taken rank by rank across queries
    assert list(s.rows[2:6]) == [14, 15, 11, 16]
    assert len(s.rows) == 12 and len(set(s.rows.tolist())) == 12
    assert np.all(s.log_weight[:6] == 0)
    rest = 1000 - 6
    assert np.allclose(s.log_weight[6:], np.log(rest / 6))
    again = sample_docs(positives, 1000, neighbours, size=12, seed=0)
    assert np.array_equal(s.rows, again.rows)


def test_sample_without_neighbours_is_positives_and_random() -> None:
    s = sample_docs(np.array([3]), 50, None, size=10, seed=1)
    assert s.rows[0] == 3 and len(s.rows) == 10
    assert np.allclose(s.log_weight[1:], np.log(49 / 9))


def test_sampled_softmax_learns_what_the_exact_one_does() -> None:
    rng = np.random.default_rng(0)
    n_docs, d, n = 6000, 16, 150
    docs = _unit(rng.normal(size=(n_docs, d)))
    # users' queries are a fixed distortion of the docs they click: the map has something to undo
    distort = np.eye(d) + 0.6 * rng.normal(size=(d, d)) / np.sqrt(d)
    positives = rng.choice(n_docs, size=n, replace=False)
    queries = _unit(docs[positives] @ distort.T + 0.15 * rng.normal(size=(n, d)))
    weights = np.ones(n)
    config = TrainConfig()
    neighbours = np.argsort(-(queries @ docs.T), axis=1)[:, :32]

    def mean_rank(w: np.ndarray) -> float:
        qm = _unit(queries @ w.T)
        s = qm @ docs.T
        return float(np.mean((s > s[np.arange(n), positives][:, None]).sum(axis=1)))

    exact = train_query_map(queries, positives, weights, docs, config, softmax_docs=n_docs).weight
    sampled = train_query_map(queries, positives, weights, docs, config, neighbours=neighbours, softmax_docs=1024).weight
    before = mean_rank(np.eye(d, dtype=np.float32))
    gain_exact = before - mean_rank(exact)
    gain_sampled = before - mean_rank(sampled)
    assert gain_exact > 0
    assert gain_sampled >= 0.7 * gain_exact
    a, b = (exact - np.eye(d)).ravel(), (sampled - np.eye(d)).ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.8


def test_small_corpora_stay_exact() -> None:
    rng = np.random.default_rng(1)
    docs = _unit(rng.normal(size=(200, 8)))
    q = _unit(rng.normal(size=(20, 8)))
    pos = rng.choice(200, size=20)
    config = TrainConfig()
    a = train_query_map(q, pos, np.ones(20), docs, config).weight
    b = train_query_map(q, pos, np.ones(20), docs, config, softmax_docs=SOFTMAX_DOCS * 10).weight
    assert np.allclose(a, b)
