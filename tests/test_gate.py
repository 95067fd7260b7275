"""The offline check: a paired bootstrap over held-out queries, and the scores it is fed."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ragtune.config import GateConfig, RagtuneConfig
from ragtune.gate import check, win_probability

CURRENT = [0.5, 0.6, 0.7, 0.8] * 6


def _noisy() -> list[float]:
    """One query much better, one much worse, the rest equal: a mean gain of ~0.004 that is noise."""
    noisy = list(CURRENT)
    noisy[0] += 0.6
    noisy[1] -= 0.5
    return noisy


def test_win_probability_separates_a_real_gain_from_noise():
    assert win_probability([c + 0.1 for c in CURRENT], CURRENT) == 1.0  # better on every query
    assert win_probability([c - 0.1 for c in CURRENT], CURRENT) == 0.0
    assert 0.3 < win_probability(_noisy(), CURRENT) < 0.8
    assert win_probability([], []) == 0.0
    assert win_probability(_noisy(), CURRENT, seed=3) == win_probability(_noisy(), CURRENT, seed=3)


def test_win_probability_needs_aligned_scores():
    with pytest.raises(ValueError, match="same queries"):
        win_probability([0.1], [0.1, 0.2])


@pytest.mark.parametrize(("confidence", "worth"), [(0.9, False), (0.5, True)])
def test_check_refuses_a_gain_within_the_noise(confidence, worth):
    res = check("lora", "ndcg@10", _noisy(), CURRENT, GateConfig(confidence=confidence))
    assert res.worth_trial is worth
    assert res.n == len(CURRENT) and res.candidate == "lora" and res.metric == "ndcg@10"
    assert res.score > res.current and 0.5 < res.p_win < 0.8  # type: ignore[operator]
    if not worth:
        assert "bootstrap resamples" in res.reason and "gate.confidence 0.9" in res.reason and "within the noise" in res.reason


def test_confidence_zero_turns_the_check_off():
    """Every candidate goes on to a trial: worse ones, and ones judged on too few queries, too."""
    for cand, cur in ((_noisy(), CURRENT), ([c - 0.2 for c in CURRENT], CURRENT), ([0.9], [0.1])):
        res = check("query", "loglik", cand, cur, GateConfig(confidence=0.0))
        assert res.worth_trial and res.p_win is None and "gate.confidence 0" in res.reason


def test_check_passes_a_consistent_gain():
    res = check("query", "loglik", [c + 0.05 for c in CURRENT], CURRENT, GateConfig(), on="feedback queries, cross-fitted")
    assert res.worth_trial and res.p_win == 1.0
    assert res.score == pytest.approx(np.mean(CURRENT) + 0.05) and res.current == pytest.approx(np.mean(CURRENT))
    assert "feedback queries, cross-fitted" in res.reason
    assert res.to_dict()["worth_trial"] is True and res.to_dict()["on"] == "feedback queries, cross-fitted"


def test_check_refuses_no_gain_without_a_bootstrap():
    res = check("query", "loglik", CURRENT, CURRENT, GateConfig(confidence=0.01))
    assert not res.worth_trial and res.reason.endswith("no gain") and res.p_win is None
    res = check("query", "loglik", [c - 0.01 for c in CURRENT], CURRENT, GateConfig(confidence=0.01))
    assert not res.worth_trial and "no gain" in res.reason


def test_not_behind_passes_a_tie_and_refuses_an_obvious_loser():
    """A document-side candidate can at best tie on pools the serving model chose: a tie goes to a trial, a clear loss does not."""
    tie = check("lora", "ndcg@10", CURRENT, CURRENT, GateConfig(), bar="not_behind")
    assert tie.worth_trial and tie.bar == "not_behind" and tie.p_behind == 0.0 and tie.p_win == 0.0
    assert "not an obvious loser" in tie.reason
    assert check("lora", "ndcg@10", _noisy(), CURRENT, GateConfig(), bar="not_behind").worth_trial  # noise either way
    loser = check("full", "ndcg@10", [c - 0.1 for c in CURRENT], CURRENT, GateConfig(), bar="not_behind")
    assert not loser.worth_trial and loser.p_behind == 1.0 and loser.reason.endswith("behind in 100% of bootstrap resamples (gate.confidence 0.75): an obvious loser")
    assert loser.to_dict()["bar"] == "not_behind" and loser.to_dict()["p_behind"] == 1.0
    # the same tie under the "ahead" bar is refused: nothing to show
    assert not check("lora", "ndcg@10", CURRENT, CURRENT, GateConfig()).worth_trial
    # too few queries refuse under either bar; a labelled set that decides always asks for a gain
    assert not check("lora", "ndcg@10", CURRENT[:3], CURRENT[:3], GateConfig(), bar="not_behind").worth_trial
    labelled = check("lora", "ndcg@10", CURRENT, CURRENT, GateConfig(), bar="not_behind", required=True)
    assert not labelled.worth_trial and labelled.bar == "ahead" and labelled.reason.endswith("no gain")
    # the more confident the check must be that a candidate is behind, the more it lets through
    slightly_behind = [c - 0.01 for c in _noisy()]
    assert check("lora", "ndcg@10", slightly_behind, CURRENT, GateConfig(confidence=0.9), bar="not_behind").worth_trial
    assert not check("lora", "ndcg@10", slightly_behind, CURRENT, GateConfig(confidence=0.2), bar="not_behind").worth_trial


def test_check_refuses_on_too_few_queries():
    cur = [0.5, 0.6, 0.7]
    res = check("query", "ndcg@10", [c + 0.3 for c in cur], cur, GateConfig())
    assert not res.worth_trial and res.p_win is None
    assert "on 3 queries" in res.reason and "gate.min_queries 20" in res.reason
    assert check("query", "ndcg@10", [c + 0.3 for c in cur], cur, GateConfig(min_queries=3)).worth_trial


@pytest.mark.parametrize(("key", "bad"), [("gate.confidence", 1.5), ("gate.confidence", 1.0), ("gate.confidence", True), ("gate.min_queries", 0), ("gate.min_queries", 2.5)])
def test_gate_settings_are_validated(key, bad):
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(key) + f" .*got {bad!r}"):
        RagtuneConfig().with_overrides({key: bad})


def test_gate_pools_hold_the_shown_the_serving_top_and_the_relevant(workspace):
    from ragtune.gate import build_gate_set

    serving = workspace.serving()
    ids = serving.docs.ids
    top, _ = serving.ranking(serving.embedder.encode_queries(["how do I reset the router"])[0], 8)
    shown = [[top[5], top[6]]]
    relevant = [{top[6]: 1.0, top[7]: 1.0}]  # a relevant doc that was neither shown nor in the top joins the pool too
    gs = build_gate_set("heldout", serving, ["how do I reset the router"], relevant, shown=shown, pool_size=2)
    assert [ids[p] for p in gs.pools[0]] == [top[5], top[6], top[0], top[1], top[7]]
    assert gs.pool_positions == sorted(gs.pools[0]) and len(gs) == 1
    plain = build_gate_set("heldout", serving, ["how do I reset the router"], relevant, pool_size=2)
    assert [ids[p] for p in plain.pools[0]] == [top[0], top[1], top[6], top[7]]


def test_the_serving_model_judged_as_a_candidate_gets_its_own_figures(workspace):
    """Re-encoding the pool with the serving embedder (a document-side candidate's path) reproduces the stored vectors' figures."""
    from ragtune.gate import build_gate_set, score_candidate, score_current

    serving = workspace.serving()
    ids = serving.docs.ids
    gs = build_gate_set("heldout", serving, ["router reset", "wifi password", "guest network"], [{ids[2]: 1.0}, {ids[5]: 2.0}, {ids[1]: 1.0}], pool_size=3)
    assert len(gs.pool_positions) < len(ids)  # a doc-side candidate re-encodes only the pools' union
    cur = score_current(gs, serving)
    as_doc_side = score_candidate(gs, serving, serving.embedder, shares_documents=False)
    as_query_side = score_candidate(gs, serving, serving.embedder, shares_documents=True)
    assert as_doc_side["per_query"]["ndcg@10"] == pytest.approx(cur["per_query"]["ndcg@10"], abs=1e-6)
    assert as_query_side["per_query"]["ndcg@10"] == pytest.approx(cur["per_query"]["ndcg@10"], abs=1e-9)
    assert cur["n"] == 3 and 0 <= cur["ndcg@10"] <= 1


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
    gs = build_gate_set("heldout", serving, ["q", "q"], [{ids[d]: 1.0}, {ids[d]: 1.0}], pool_size=5)
    qv = np.vstack([near, blend]).astype(np.float32)
    scores = score_query_vectors(gs, serving, qv, loglik=True)
    assert scores["per_query"]["ndcg@10"] == [1.0, 1.0]
    sharp, blunt = scores["per_query"]["loglik"]
    assert sharp > blunt
    s = LOGLIK_SCALE * (vecs @ near)
    assert sharp == pytest.approx(s[d] - np.log(np.exp(s - s.max()).sum()) - s.max(), rel=1e-5)
    # several chosen docs: their relevance-weighted mean; a chosen doc outside the index is ignored
    gs2 = build_gate_set("heldout", serving, ["q"], [{ids[d]: 3.0, ids[order[1]]: 1.0, "not-indexed": 5.0}], pool_size=5)
    (both,) = loglik_per_query(gs2, serving, qv[:1])
    lp = s - np.log(np.exp(s - s.max()).sum()) - s.max()
    assert both == pytest.approx((3 * lp[d] + lp[order[1]]) / 4, rel=1e-5)
    # chunked over query rows (large indexes): the same figures
    assert loglik_per_query(gs, serving, qv, chunk_rows=1) == pytest.approx(scores["per_query"]["loglik"], rel=1e-6)
    # a query none of whose chosen docs is indexed scores 0 (it carries no evidence either way)
    gs3 = build_gate_set("heldout", serving, ["q"], [{"not-indexed": 1.0}], pool_size=5)
    assert loglik_per_query(gs3, serving, qv[:1]) == [0.0]
