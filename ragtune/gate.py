"""The promotion gate: is a candidate model better than the serving one on held-out feedback?

Held-out feedback was collected under the serving ranker, so its clicks sit where that ranker put
them and favour it. Each held-out positive's gain is therefore its inverse-propensity click weight:
a click the user dug down to rank 6 for counts more than a click on rank 1.

Cheap by construction: both models re-rank the same candidate *pool* per query instead of searching
a re-embedded corpus. A candidate must also win in a paired bootstrap over the held-out queries
with probability ``gate.confidence`` (:func:`win_probability`), so noise on a few dozen queries
does not promote a model. The pool is what users were shown for that query, the serving model's top
``pool_size`` and the docs users chose (for a labelled ``--eval-beir`` set: the top ``pool_size`` and
the relevant docs). With ``gate.ips`` on, feedback is scored by a self-normalised inverse-propensity (SNIPS) estimate
(:func:`_metrics`) instead, since per-query nDCG divides each query's click weight away again.
Unclicked docs count as non-relevant, so a candidate that pulls unseen docs
above the chosen ones pays for it: conservative on purpose, since a document-side model that
reshuffles the whole corpus is exactly what could hurt queries nobody logged. A query-side
candidate uses the serving document vectors; a document-side one (LoRA/full) costs one encode of the
pool.

In ``query`` mode the candidates share the serving document vectors, so they are judged instead by
``loglik`` (:func:`loglik_per_query`, ``gate.query_metric``): each feedback query's log-probability
of its chosen docs under a softmax over the *whole* index, one matrix product per candidate. Pool
nDCG is nearly blind to a query tier, whose gains are documents nobody was shown for that query.
``pool_loglik`` (:func:`pool_loglik_per_query`, selectable as ``gate.metric``) is the same measure
with the softmax over the union of the gate queries' pools, so a document-side candidate can be
judged by it after re-embedding only that union.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.embedder import Embedder
from ragtune.evaluate import mrr_at_k, ndcg_at_k

if TYPE_CHECKING:
    from ragtune.api import _Serving

__all__ = [
    "LOGLIK_SCALE",
    "GateDecision",
    "GateSet",
    "build_gate_set",
    "loglik_per_query",
    "pool_loglik_per_query",
    "score_candidate",
    "score_current",
    "score_query_vectors",
    "win_probability",
]

logger = logging.getLogger(__name__)

#: Softmax scale of the ``loglik`` metric: MultipleNegativesRankingLoss's default, the query map's training scale.
LOGLIK_SCALE = 20.0


@dataclass
class GateSet:
    """Held-out queries, their relevant docs and their candidate pools (serving positions)."""

    name: str
    queries: list[str]
    relevant: list[dict[str, float]]
    pools: list[list[int]]
    pool_positions: list[int] = field(default_factory=list)
    ips: bool = False

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class GateDecision:
    """What the gate decided and the figures behind it."""

    promoted: bool
    reason: str
    metric: str
    current: dict[str, float]
    candidates: dict[str, dict[str, float]]
    chosen: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_gate_set(
    name: str,
    serving: _Serving,
    queries: Sequence[str],
    relevant: Sequence[dict[str, float]],
    pool_size: int,
    shown: Sequence[Sequence[str]] | None = None,
    *,
    add_top: bool = True,
    ips: bool = False,
) -> GateSet:
    """Pools = the docs shown for each query, the serving top ``pool_size`` (unless ``add_top`` is off) and the relevant docs.

    ``ips``: the relevance values are inverse-propensity click weights; score the set by the
    self-normalised IPS estimator instead of the mean per-query metric.
    """
    tops: list[list[int]] = [[] for _ in queries]
    if add_top or shown is None:
        qv = serving.embedder.encode_queries(list(queries))
        _, pos = serving.store.search(qv, pool_size)
        tops = [[int(p) for p in row if p >= 0] for row in pos]
    if shown is not None:
        shown_pos = serving.docs.positions(sorted({d for row in shown for d in row}))
        tops = [[shown_pos[d] for d in row if d in shown_pos] + top for row, top in zip(shown, tops)]
    rel_pos = serving.docs.positions(sorted({d for r in relevant for d in r}))
    pools: list[list[int]] = []
    for i, rel in enumerate(relevant):
        pool = list(dict.fromkeys(tops[i]))
        pool += [rel_pos[d] for d in rel if d in rel_pos and rel_pos[d] not in pool]
        pools.append(pool)
    union = sorted({p for pool in pools for p in pool})
    return GateSet(name, list(queries), [dict(r) for r in relevant], pools, union, ips)


def _ips_terms(ranked: list[str], weights: dict[str, float], k: int = 10) -> tuple[float, float]:
    """A query's IPS-weighted discounted gain and reciprocal-rank sums over its clicked docs in the top ``k``."""
    dcg = rr = 0.0
    for i, d in enumerate(ranked[:k]):
        w = weights.get(d, 0.0)
        if w > 0:
            dcg += w / np.log2(i + 2)
            rr += w / (i + 1)
    return dcg, rr


def _metrics(gs: GateSet, ids: list[str], scores_of: Any) -> dict[str, Any]:
    """Mean nDCG@10 / MRR@10 over the set; with ``gs.ips``, their self-normalised IPS estimates.

    SNIPS: ``sum_q sum_clicked w * discount(rank) / sum_q sum_clicked w``, where ``w`` is a clicked
    doc's inverse propensity (its mean over the times it was clicked). Under the position-based
    click model the numerator is an unbiased estimate of the discounted gain of the docs users
    would find relevant; the shared denominator only scales it (1 if each query had one click and
    it sat at rank 1). Under ``ips`` the ``mrr@10`` figure is the same estimate with ``1/rank`` as
    the discount (every click counts, not only the first), and ``gate.margin`` applies on this
    scale. The per-query values returned (for the paired bootstrap) are each query's sum divided
    by the mean weight per query, so their mean is the estimate.
    """
    nd: list[float] = []
    mr: list[float] = []
    for i in range(len(gs)):
        pool = gs.pools[i]
        s = scores_of(i, pool)
        ranked = [ids[pool[j]] for j in np.argsort(-s, kind="stable")]
        if gs.ips:
            dcg, rr = _ips_terms(ranked, gs.relevant[i], 10)
            nd.append(dcg)
            mr.append(rr)
        else:
            nd.append(ndcg_at_k(ranked, gs.relevant[i], 10))
            mr.append(mrr_at_k(ranked, gs.relevant[i], 10))
    if gs.ips and len(gs):
        norm = float(np.mean([sum(w for w in r.values() if w > 0) for r in gs.relevant])) or 1.0
        nd = [x / norm for x in nd]
        mr = [x / norm for x in mr]
    return {
        "ndcg@10": float(np.mean(nd)) if nd else 0.0,
        "mrr@10": float(np.mean(mr)) if mr else 0.0,
        "n": len(gs),
        "per_query": {"ndcg@10": nd, "mrr@10": mr},
    }


def win_probability(
    candidate: Sequence[float], current: Sequence[float], margin: float = 0.0, *, resamples: int = 2000, seed: int = 0
) -> float:
    """Share of paired bootstrap resamples of the queries in which the candidate's mean beats the current's by ``margin``.

    A one-sided paired bootstrap over held-out queries: with a few dozen queries, a mean gain of
    0.005 is well inside the noise, and promoting on it would let a refresh swap in a model that
    is worse on the queries nobody held out.
    """
    cand, cur = np.asarray(candidate, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if cand.shape != cur.shape:
        raise ValueError(f"win_probability needs per-query scores of the same queries, got {cand.shape} and {cur.shape}")
    diff = cand - cur
    if diff.size == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    wins, step = 0, max(1, 2_000_000 // diff.size)  # resamples in chunks: bounded memory on large held-out sets
    for start in range(0, resamples, step):
        idx = rng.integers(0, diff.size, size=(min(step, resamples - start), diff.size))
        wins += int(np.sum(diff[idx].mean(axis=1) > margin))
    return wins / resamples


def _loglik_rows(relevant: Sequence[dict[str, float]], rows: dict[str, int], vecs: np.ndarray, qv: np.ndarray, scale: float, chunk_rows: int | None) -> list[float]:
    """``log softmax(scale * cos(q, d))`` of each query's chosen docs over the rows of ``vecs``, by relevance weight."""
    out: list[float] = []
    step = chunk_rows or max(1, 2**24 // max(1, len(vecs)))  # query rows per chunk: at most 64 MB of scores
    for start in range(0, len(qv), step):
        s = scale * (np.asarray(qv[start : start + step], dtype=np.float32) @ vecs.T)
        top = s.max(axis=1, keepdims=True)
        lse = (top + np.log(np.exp(s - top).sum(axis=1, keepdims=True)))[:, 0]
        for j in range(len(s)):
            rel = {rows[d]: w for d, w in relevant[start + j].items() if w > 0 and d in rows}
            total = sum(rel.values())
            out.append(float(sum(w * (s[j, p] - lse[j]) for p, w in rel.items()) / total) if total else 0.0)
    return out


def loglik_per_query(gs: GateSet, serving: _Serving, qv: np.ndarray, scale: float = LOGLIK_SCALE, *, chunk_rows: int | None = None) -> list[float]:
    """Each gate query's log-probability of its chosen docs under a softmax over the *whole* index.

    ``log softmax(scale * cos(q, d))`` of each chosen doc over every indexed doc, averaged over the
    query's chosen docs by their relevance weights (0 for a query none of whose chosen docs is
    indexed). Unlike nDCG over a pool, it does not saturate: a click already at rank 1 still
    counts for how far ahead of the other documents the model puts it, and a document the model
    lifts from far down counts before it crosses into the top 10. It needs the serving document
    vectors, so only query-side candidates can be scored by it.
    """
    vecs = np.asarray(serving.vectors(), dtype=np.float32)
    rel_pos = serving.docs.positions(sorted({d for r in gs.relevant for d in r}))
    return _loglik_rows(gs.relevant, rel_pos, vecs, qv, scale, chunk_rows)


def pool_loglik_per_query(
    gs: GateSet, ids: Sequence[str], pool_vecs: np.ndarray, qv: np.ndarray, scale: float = LOGLIK_SCALE, *, chunk_rows: int | None = None
) -> list[float]:
    """:func:`loglik_per_query` with the softmax over the union of the gate set's pools instead of the whole index.

    ``pool_vecs`` holds one row per ``gs.pool_positions`` (the union of every gate query's pool:
    what users were shown, the serving top ``pool_size`` and the chosen docs), encoded by the model
    being judged, so a document-side candidate needs only that union re-embedded, never the corpus.
    The serving model and every candidate are scored over the same documents.
    """
    rows = {ids[p]: j for j, p in enumerate(gs.pool_positions)}
    return _loglik_rows(gs.relevant, rows, np.asarray(pool_vecs, dtype=np.float32), qv, scale, chunk_rows)


def score_query_vectors(gs: GateSet, serving: _Serving, qv: np.ndarray, *, loglik: bool = False, pool_loglik: bool = False) -> dict[str, Any]:
    """Given query vectors (one row per gate query) against the serving doc vectors.

    ``loglik`` / ``pool_loglik``: also those metrics (see :func:`loglik_per_query` and
    :func:`pool_loglik_per_query`).
    """
    vecs = serving.vectors()
    out = _metrics(gs, serving.docs.ids, lambda i, pool: vecs[pool] @ qv[i])
    if loglik:
        _add(out, "loglik", loglik_per_query(gs, serving, qv))
    if pool_loglik:
        _add(out, "pool_loglik", pool_loglik_per_query(gs, serving.docs.ids, vecs[gs.pool_positions], qv))
    return out


def _add(out: dict[str, Any], name: str, per: list[float]) -> None:
    out[name] = float(np.mean(per)) if per else 0.0
    out["per_query"][name] = per


def score_current(gs: GateSet, serving: _Serving, *, loglik: bool = False, pool_loglik: bool = False) -> dict[str, Any]:
    """The serving model on the gate set (its stored doc vectors, its query encoder)."""
    return score_query_vectors(gs, serving, serving.embedder.encode_queries(gs.queries), loglik=loglik, pool_loglik=pool_loglik)


def score_candidate(
    gs: GateSet, serving: _Serving, candidate: Embedder, *, shares_documents: bool, loglik: bool = False, pool_loglik: bool = False
) -> dict[str, Any]:
    """A candidate on the gate set: serving doc vectors if it shares them, else the pool re-encoded (no ``loglik`` then)."""
    if loglik and not shares_documents:
        raise ValueError("the loglik metric needs the serving document vectors: only query-side candidates can be scored by it (use pool_loglik)")
    qv = candidate.encode_queries(gs.queries)
    if shares_documents:
        return score_query_vectors(gs, serving, qv, loglik=loglik, pool_loglik=pool_loglik)
    docs = serving.docs.get(gs.pool_positions)
    enc = candidate.encode_documents([d.embed_text for d in docs])
    row = {p: j for j, p in enumerate(gs.pool_positions)}
    out = _metrics(gs, serving.docs.ids, lambda i, pool: enc[[row[p] for p in pool]] @ qv[i])
    if pool_loglik:
        _add(out, "pool_loglik", pool_loglik_per_query(gs, serving.docs.ids, enc, qv))
    return out
