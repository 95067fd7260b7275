"""The gate's noise check: a paired bootstrap over held-out queries."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ragtune.config import RagtuneConfig
from ragtune.gate import win_probability
from ragtune.refresh import _decide


def test_win_probability_separates_a_real_gain_from_noise():
    current = [0.5, 0.6, 0.7, 0.8] * 6
    assert win_probability([c + 0.1 for c in current], current) == 1.0  # better on every query
    assert win_probability([c - 0.1 for c in current], current) == 0.0
    # one query much better, one much worse, the rest equal: a mean gain of ~0.004 that is noise
    noisy = list(current)
    noisy[0] += 0.6
    noisy[1] -= 0.5
    assert 0.3 < win_probability(noisy, current) < 0.8
    assert win_probability([], []) == 0.0
    assert win_probability(noisy, current, seed=3) == win_probability(noisy, current, seed=3)


def _figures(per_query: list[float]) -> dict:
    return {"heldout": {"ndcg@10": sum(per_query) / len(per_query), "mrr@10": 0.0, "n": len(per_query), "per_query": {"ndcg@10": per_query, "mrr@10": per_query}}}


@pytest.mark.parametrize(("confidence", "promoted"), [(0.9, False), (0.0, True)])
def test_decide_refuses_a_gain_within_the_noise(confidence, promoted):
    cfg = RagtuneConfig().with_overrides({"gate.confidence": confidence})
    current = [0.5, 0.6, 0.7, 0.8] * 6
    noisy = list(current)
    noisy[0] += 0.6
    noisy[1] -= 0.5
    best = {"scores": _figures(noisy)}
    decision = _decide(SimpleNamespace(gate=cfg.gate), "ndcg@10", _figures(current), "lora@1", best, {"lora@1": best})
    assert decision.promoted is promoted
    if not promoted:
        assert "paired bootstrap" in decision.reason and "lora@1" in decision.reason
        assert 0 < decision.candidates["lora@1"]["p_win"] < 0.9


def test_decide_promotes_a_consistent_gain():
    cfg = RagtuneConfig()
    current = [0.5, 0.6, 0.7, 0.8] * 6
    best = {"scores": _figures([c + 0.05 for c in current])}
    decision = _decide(cfg, "ndcg@10", _figures(current), "query@0.5", best, {"query@0.5": best})
    assert decision.promoted and decision.chosen == "query@0.5"
    assert decision.candidates["query@0.5"]["p_win"] == 1.0


def test_confidence_is_validated():
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gate\.confidence .* got 1\.5"):
        RagtuneConfig().with_overrides({"gate.confidence": 1.5})


def test_decide_refuses_on_too_few_heldout_queries():
    cfg = RagtuneConfig()
    current = [0.5, 0.6, 0.7]
    best = {"scores": _figures([c + 0.3 for c in current])}
    decision = _decide(cfg, "ndcg@10", _figures(current), "query@0.5", best, {"query@0.5": best})
    assert not decision.promoted and "only 3 held-out queries" in decision.reason and "gate.min_queries 20" in decision.reason


def test_win_probability_needs_aligned_scores():
    with pytest.raises(ValueError, match="same queries"):
        win_probability([0.1], [0.1, 0.2])


def test_gate_pools_with_and_without_the_unshown_top(workspace):
    from ragtune.gate import build_gate_set

    serving = workspace.serving()
    ids = serving.docs.ids
    shown = [[ids[0], ids[1]]]
    relevant = [{ids[1]: 1.0, ids[4]: 1.0}]  # a relevant doc that was not shown joins the pool too
    wide = build_gate_set("heldout", serving, ["how do I reset the router"], relevant, 5, shown=shown)
    narrow = build_gate_set("heldout", serving, ["how do I reset the router"], relevant, 5, shown=shown, add_top=False)
    assert [ids[p] for p in narrow.pools[0]] == [ids[0], ids[1], ids[4]]
    assert set(narrow.pools[0]) < set(wide.pools[0]) and len(wide.pools[0]) >= 5


@pytest.mark.parametrize("ips", [False, True])
def test_ips_estimate_counts_a_deep_click_by_its_weight(ips):
    """Two queries: one click at rank 1 (weight 1), one dug out at rank 5 (weight 5).

    Per-query nDCG cannot tell a ranker that lifts the deep click from one that keeps the easy one on
    top (both score (1 + 1/log2 3) / 2); the self-normalised IPS estimate weighs the deep click 5:1.
    """
    import math

    from ragtune.gate import GateSet, _metrics

    ids = ["a", "b", "x", "y"]
    gs = GateSet("heldout", ["q1", "q2"], [{"a": 1.0}, {"b": 5.0}], [[0, 2], [1, 3]], [0, 1, 2, 3], ips=ips)
    keeps_easy = {0: [1.0, 0.5], 1: [0.5, 1.0]}  # q1: a first; q2: b second
    lifts_deep = {0: [0.5, 1.0], 1: [1.0, 0.5]}  # q1: a second; q2: b first
    x = _metrics(gs, ids, lambda i, pool: np.array(keeps_easy[i]))["ndcg@10"]
    y = _metrics(gs, ids, lambda i, pool: np.array(lifts_deep[i]))["ndcg@10"]
    second = 1 / math.log2(3)
    if ips:
        assert x == pytest.approx((1 + 5 * second) / 6)
        assert y == pytest.approx((second + 5) / 6)
        assert y > x
    else:
        assert x == pytest.approx(y) == pytest.approx((1 + second) / 2)


@pytest.mark.parametrize(("mode", "crossfit", "promoted"), [("query", True, True), ("query", False, False), ("lora", False, False)])
def test_crossfit_query_candidates_have_their_own_bar(mode, crossfit, promoted):
    """A modest gain (won in 70-90% of resamples) passes query_confidence 0.7 only when cross-fitted."""
    cfg = RagtuneConfig().with_overrides({"gate.confidence": 0.9, "gate.query_confidence": 0.7})
    current = [0.5, 0.6, 0.7, 0.8] * 6
    noisy = [c + 0.05 for c in current]
    noisy[0] -= 0.45
    noisy[1] -= 0.25
    best = {"mode": mode, "scores": _figures(noisy)} | ({"oof": ([], None)} if crossfit else {})
    key = f"{mode}@1"
    decision = _decide(SimpleNamespace(gate=cfg.gate), "ndcg@10", _figures(current), key, best, {key: best})
    p_win = decision.candidates[key]["p_win"]
    assert 0.7 <= p_win < 0.9
    assert decision.promoted is promoted
    if not promoted:
        assert "gate.confidence 0.9" in decision.reason


@pytest.mark.parametrize("ips", [False, True])
def test_gate_ips_setting_reaches_the_feedback_gate_set(workspace, ips):
    from ragtune.mining import HeldoutQuery
    from ragtune.refresh import _gate_sets

    workspace.config = workspace.config.with_overrides({"gate.ips": ips})
    serving = workspace.serving()
    ids = serving.docs.ids
    held = [HeldoutQuery("how do I reset the router", {ids[1]: 2.0}, [ids[0], ids[1]])]
    (gs,) = _gate_sets(workspace, serving, held)
    assert gs.ips is ips and gs.relevant == [{ids[1]: 2.0}]


def test_loglik_counts_a_click_already_at_rank_one(workspace):
    """Two query vectors both rank the clicked doc first (same nDCG); loglik prefers the one that puts it further ahead."""
    from ragtune.gate import LOGLIK_SCALE, build_gate_set, loglik_per_query, score_query_vectors

    serving = workspace.serving()
    vecs = np.asarray(serving.vectors())
    ids = serving.docs.ids
    d = 3
    near = vecs[d] / np.linalg.norm(vecs[d])
    order = np.argsort(-(vecs @ near))
    blend = vecs[d] + 0.3 * vecs[order[1]]
    blend /= np.linalg.norm(blend)
    assert int(np.argmax(vecs @ blend)) == d  # still first
    gs = build_gate_set("heldout", serving, ["q", "q"], [{ids[d]: 1.0}, {ids[d]: 1.0}], 5, add_top=True)
    qv = np.vstack([near, blend]).astype(np.float32)
    scores = score_query_vectors(gs, serving, qv, loglik=True)
    assert scores["per_query"]["ndcg@10"] == [1.0, 1.0]
    sharp, blunt = scores["per_query"]["loglik"]
    assert sharp > blunt
    s = LOGLIK_SCALE * (vecs @ near)
    assert sharp == pytest.approx(s[d] - np.log(np.exp(s - s.max()).sum()) - s.max(), rel=1e-5)
    # several chosen docs: their relevance-weighted mean; a chosen doc outside the index is ignored
    gs2 = build_gate_set("heldout", serving, ["q"], [{ids[d]: 3.0, ids[order[1]]: 1.0, "not-indexed": 5.0}], 5)
    (both,) = loglik_per_query(gs2, serving, qv[:1])
    lp = s - np.log(np.exp(s - s.max()).sum()) - s.max()
    assert both == pytest.approx((3 * lp[d] + lp[order[1]]) / 4, rel=1e-5)
    # chunked over query rows (large indexes): the same figures
    assert loglik_per_query(gs, serving, qv, chunk_rows=1) == pytest.approx(scores["per_query"]["loglik"], rel=1e-6)


def test_loglik_needs_shared_document_vectors(workspace):
    from ragtune.gate import build_gate_set, score_candidate

    serving = workspace.serving()
    gs = build_gate_set("heldout", serving, ["q"], [{serving.docs.ids[0]: 1.0}], 5)
    with pytest.raises(ValueError, match="query-side"):
        score_candidate(gs, serving, serving.embedder, shares_documents=False, loglik=True)


def test_pool_loglik_is_a_softmax_over_the_union_of_the_pools(workspace):
    """pool_loglik = loglik restricted to the gate set's pool union; a doc-side candidate re-encodes only that union."""
    from ragtune.gate import LOGLIK_SCALE, build_gate_set, pool_loglik_per_query, score_candidate, score_query_vectors

    serving = workspace.serving()
    vecs = np.asarray(serving.vectors())
    ids = serving.docs.ids
    gs = build_gate_set("heldout", serving, ["router reset", "wifi password"], [{ids[2]: 1.0}, {ids[5]: 1.0}], 3, add_top=True)
    assert len(gs.pool_positions) < len(ids)  # a proper subset of the index
    qv = serving.embedder.encode_queries(gs.queries)
    scores = score_query_vectors(gs, serving, qv, loglik=True, pool_loglik=True)
    for i, d in enumerate([2, 5]):
        s = LOGLIK_SCALE * (vecs[gs.pool_positions] @ qv[i])
        want = LOGLIK_SCALE * float(vecs[d] @ qv[i]) - (s.max() + np.log(np.exp(s - s.max()).sum()))
        assert scores["per_query"]["pool_loglik"][i] == pytest.approx(want, rel=1e-5)
        assert scores["per_query"]["pool_loglik"][i] >= scores["per_query"]["loglik"][i]  # fewer competitors
    # the serving model judged as a document-side candidate (pool re-encoded) gets its own figures back
    as_doc_side = score_candidate(gs, serving, serving.embedder, shares_documents=False, pool_loglik=True)
    assert as_doc_side["per_query"]["pool_loglik"] == pytest.approx(scores["per_query"]["pool_loglik"], abs=1e-4)
    # a pool covering the whole index gives the whole-index loglik
    full = pool_loglik_per_query(gs.__class__("all", gs.queries, gs.relevant, gs.pools, list(range(len(ids)))), ids, vecs, qv)
    assert full == pytest.approx(scores["per_query"]["loglik"], rel=1e-5)


def test_query_metric_is_validated():
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gate.query_metric must be one of .*'recall'"):
        RagtuneConfig().with_overrides({"gate.query_metric": "recall"})


def test_cold_guard_excludes_a_candidate_that_loses_on_fold_cold_queries():
    """A gains only where another fold chose the same doc, B also loses where none did: B is not eligible."""
    from ragtune.gate import GateSet
    from ragtune.mining import HeldoutQuery, MinedSet, TrainExample, normalize_query
    from ragtune.refresh import _cold_guard
    from ragtune.training.crossfit import fold_of

    cfg = RagtuneConfig().with_overrides({"gate.folds": 2, "gate.cold_guard": 0.5})
    texts = [f"router question {i}" for i in range(40)]
    fold = {t: fold_of(normalize_query(t), 2, cfg.train.seed) for t in texts}
    a = next(t for t in texts if fold[t] == 0)
    b = next(t for t in texts if fold[t] == 1)
    c = next(t for t in texts if t not in (a, b))
    chosen = {a: "x", b: "x", c: "z"}  # a and b share doc x across folds; nobody else chose z
    mined = MinedSet(
        [TrainExample(t, d, [], 1.0, normalize_query(t)) for t, d in chosen.items()],
        [HeldoutQuery(t, {d: 1.0}) for t, d in chosen.items()],
        {},
    )
    gs = GateSet("heldout", [a, b, c], [{"x": 1.0}, {"x": 1.0}, {"z": 1.0}], [[0], [0], [1]], [0, 1])

    def scores(per: list[float]) -> dict:
        return {"heldout": {"loglik": sum(per) / 3, "n": 3, "per_query": {"loglik": per}}}

    current = scores([-2.0, -2.0, -2.0])
    candidates = {"keeps": {"scores": scores([-1.0, -1.0, -2.0])}, "forgets": {"scores": scores([-0.5, -0.5, -2.5])}}
    assert candidates["forgets"]["scores"]["heldout"]["loglik"] > candidates["keeps"]["scores"]["heldout"]["loglik"]
    eligible, note = _cold_guard(gs, mined, cfg, "loglik", current, candidates)
    assert eligible == ["keeps"]
    assert note == {"n": 1, "current": -2.0, "candidates": {"keeps": -2.0, "forgets": -2.5}, "p_loss": {"keeps": 0.0, "forgets": 1.0}}
    # with no fold-cold query there is nothing to guard
    warm = GateSet("heldout", [a, b], [{"x": 1.0}, {"x": 1.0}], [[0], [0]], [0])
    mined.heldout = mined.heldout[:2]
    two = {k: {"scores": {"heldout": {"per_query": {"loglik": v["scores"]["heldout"]["per_query"]["loglik"][:2]}}}} for k, v in candidates.items()}
    assert _cold_guard(warm, mined, cfg, "loglik", {"heldout": {"per_query": {"loglik": [-2.0, -2.0]}}}, two) == (["keeps", "forgets"], None)


@pytest.mark.parametrize("bad", [True, -0.1, 1.5, "0.5"])
def test_cold_guard_is_validated(bad):
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"gate.cold_guard must be a number in \[0, 1\]"):
        RagtuneConfig().with_overrides({"gate.cold_guard": bad})
