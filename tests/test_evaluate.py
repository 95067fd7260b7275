from __future__ import annotations

import math

import pytest

from ragtune.evaluate import evaluate_run, load_beir_qrels, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_binary_and_graded():
    assert ndcg_at_k(["a", "b"], {"a": 1}) == 1.0
    assert ndcg_at_k(["b", "a"], {"a": 1}) == pytest.approx(1 / math.log2(3))
    # graded, linear gains (trec_eval): ideal is [2, 1]
    got = ndcg_at_k(["y", "x"], {"x": 2, "y": 1})
    ideal = 2 + 1 / math.log2(3)
    assert got == pytest.approx((1 + 2 / math.log2(3)) / ideal)
    assert ndcg_at_k(["z"], {"a": 1}) == 0.0


def test_mrr_recall():
    assert mrr_at_k(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"] * 10 + ["a"], {"a": 1}) == 0.0
    assert recall_at_k(["a", "x"], {"a": 1, "b": 1}, 10) == 0.5


def test_evaluate_run_means_over_qrels_queries():
    m = evaluate_run({"q1": ["a"], "q2": ["x"]}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert m["ndcg@10"] == 0.5 and m["recall@100"] == 0.5


def test_qrels_errors_name_file(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tone\n")
    with pytest.raises(ValueError, match=r"test\.tsv:2"):
        load_beir_qrels(tmp_path, "test")
    with pytest.raises(ValueError, match="available splits: \\['test'\\]"):
        load_beir_qrels(tmp_path, "dev")
