"""The query-side click memory moves queries like past clicked ones, and leaves the others alone."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune import InputError
from ragtune.training.query_memory import QueryMemory, apply_query_memory


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_near_query_moves_toward_the_clicked_doc_and_far_query_stays(tmp_path):
    rng = np.random.default_rng(0)
    past, doc = _unit(rng.normal(size=(1, 16))), _unit(rng.normal(size=(1, 16)))
    memory = QueryMemory(past, doc)
    memory.save(tmp_path / "m.safetensors")
    memory = QueryMemory.load(tmp_path / "m.safetensors")
    near = _unit(past + 0.2 * rng.normal(size=(1, 16)))
    far = _unit(rng.normal(size=(1, 16)))
    far = _unit(far - (far @ past.T) * past)  # orthogonal to the past query: cosine 0 < threshold
    out = apply_query_memory(np.vstack([near, far]), memory, weight=1.0, threshold=0.5, temperature=0.05)
    assert float(out[0] @ doc[0]) > float(near[0] @ doc[0]) + 0.1
    np.testing.assert_allclose(out[1], far[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_votes_follow_the_most_similar_past_query():
    q1, q2 = np.eye(4, dtype=np.float32)[:1], np.eye(4, dtype=np.float32)[1:2]
    d1, d2 = np.eye(4, dtype=np.float32)[2:3], np.eye(4, dtype=np.float32)[3:4]
    memory = QueryMemory(np.vstack([q1, q2]), np.vstack([d1, d2]))
    query = _unit(np.array([[0.9, 0.6, 0.0, 0.0]]))  # like q1 (0.83) more than q2 (0.55)
    out = apply_query_memory(query, memory, weight=1.0, threshold=0.5, temperature=0.05)
    assert out[0, 2] > 5 * out[0, 3] > 0


def test_a_popular_querys_answer_outvotes_its_stray_clicks_and_its_neighbours_count_as_one_query_each(tmp_path):
    e = np.eye(6, dtype=np.float32)
    head, other = e[0:1], e[1:2]
    answer, stray, other_doc = e[2:3], e[3:4], e[4:5]
    # the head query's answer chosen in 38 of its 39 searches, a stray click once; a neighbour asked once
    memory = QueryMemory(np.vstack([head, head, other]), np.vstack([answer, stray, other_doc]), np.array([38 / 39, 1 / 39, 1.0], np.float32))
    memory.save(tmp_path / "m.safetensors")
    memory = QueryMemory.load(tmp_path / "m.safetensors")
    out = apply_query_memory(head, memory, weight=1.0, threshold=0.5, temperature=0.05)
    assert out[0, 2] > 30 * out[0, 3] > 0  # alike votes would have pulled it as far toward the stray click
    between = _unit(np.array([[1.0, 1.0, 0, 0, 0, 0]]))  # as near the head query as the neighbour
    out = apply_query_memory(between, memory, weight=1.0, threshold=0.5, temperature=0.05)
    assert abs((out[0, 2] + out[0, 3]) - out[0, 4]) < 1e-5  # two entries of one query do not outvote one of another
    alike = apply_query_memory(head, QueryMemory(memory.keys, memory.values), weight=1.0, threshold=0.5, temperature=0.05)
    np.testing.assert_allclose(alike[0, 2], alike[0, 3], atol=1e-6)  # a memory saved without weights: every entry alike


def test_entries_of_weight_zero_move_nothing_and_bad_weights_are_refused(tmp_path):
    e = np.eye(4, dtype=np.float32)
    zero = QueryMemory(e[0:1], e[2:3], np.array([0.0], np.float32))
    np.testing.assert_allclose(apply_query_memory(e[0:1], zero, weight=1.0, threshold=0.5, temperature=0.05), e[0:1], atol=1e-6)
    # a tiny temperature: the heavier, slightly less similar entry still votes (no underflow to nothing)
    mixed = QueryMemory(np.vstack([e[0], _unit(np.array([1.0, 0.05, 0, 0]))]), e[2:4], np.array([0.0, 1.0], np.float32))
    out = apply_query_memory(e[0:1], mixed, weight=1.0, threshold=0.5, temperature=0.001)
    assert out[0, 3] > 0.5 and out[0, 2] == 0
    QueryMemory(e[0:1], e[2:3]).save(tmp_path / "old.safetensors")  # saved before entries had weights
    assert QueryMemory.load(tmp_path / "old.safetensors").weights is None
    for bad in (np.array([np.nan]), np.array([-1.0]), np.array([1.0, 1.0])):
        with pytest.raises(InputError, match="weights"):
            QueryMemory(e[0:1], e[2:3], bad)


def test_empty_memory_and_zero_weight_are_identity():
    q = _unit(np.ones((2, 4)))
    empty = QueryMemory(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert apply_query_memory(q, empty, weight=1.0, threshold=0.5, temperature=0.05) is q
    full = QueryMemory(q[:1], q[:1])
    assert apply_query_memory(q, full, weight=0.0, threshold=0.5, temperature=0.05) is q


def test_document_side_drops_every_query_side_setting():
    from ragtune.embedder import ModelSpec

    spec = ModelSpec(query_map="m.safetensors", query_interpolation=0.5, query_memory="q.safetensors", memory_weight=1.5, memory_threshold=0.7, memory_temperature=0.1, query_prefix="q: ")
    assert spec.document_side() == ModelSpec(query_prefix="q: ")  # one model-cache key for every query-side variant
