"""The offline check: is a candidate worth a trial?

It is a cheap pre-filter, not the promotion decision (that is the trial's, :mod:`ragtune.trial`):
it keeps obvious losers from costing a re-embedding or users' time. Held-out feedback was logged
under the serving ranker, so it favours that ranker whatever the clicks mean. :func:`check` compares
per-query scores by paired bootstrap resamples of the queries, on at least ``gate.min_queries``
queries, against one of two bars (:data:`Bar`):

- ``"ahead"``: the candidate beats the serving model in at least ``gate.confidence`` of the
  resamples. The query tier is held to it (its cross-fitted whole-index score can show a gain),
  and so is a LoRA/full candidate promoted without a trial.
- ``"not_behind"``: the candidate is refused only when the serving model beats it in at least
  ``gate.confidence`` of the resamples. A LoRA/full candidate with a trial (or a labelled set) to
  decide after it, is held to it: its pools hold only documents the serving model
  already showed, so it can at best tie there, and asking it to be ahead kept out candidates users
  preferred in a trial (``benchmarks/RESULTS.md``). Promoted without a trial, it must be ahead.

Either way ``gate.confidence`` is how sure the check must be of what it concludes: that a
candidate is ahead, or that it is behind.

- A document-side candidate (LoRA/full) and the serving model re-rank, per held-out query, a
  *pool*: what users were shown, the serving top 20 and the chosen documents, each chosen
  document's gain its click weight (:func:`score_candidate`, nDCG@10). It costs one encode of the
  pool, never the corpus.
- A query-tier candidate shares the serving document vectors, so each feedback query is scored by
  its log-probability of its chosen documents under a softmax over the *whole* index
  (:func:`loglik_per_query`); pool nDCG is nearly blind to a query tier, whose gains are documents
  nobody was shown for that query.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ragtune.config import GateConfig
from ragtune.embedder import Embedder
from ragtune.evaluate import mrr_at_k, ndcg_at_k

if TYPE_CHECKING:
    from ragtune.serving import ServingVersion

__all__ = [
    "LOGLIK_SCALE",
    "POOL_SIZE",
    "RETRAIN_GROWTH",
    "Bar",
    "CheckResult",
    "GateSet",
    "build_gate_set",
    "check",
    "loglik_per_query",
    "refuse_retrain",
    "refuse_untrained",
    "score_candidate",
    "score_current",
    "score_query_vectors",
    "win_probability",
]

logger = logging.getLogger(__name__)

#: Softmax scale of the ``loglik`` metric: MultipleNegativesRankingLoss's default, the query map's training scale.
LOGLIK_SCALE = 20.0
#: How a candidate must compare with the serving model to be worth a trial (module docstring).
Bar = Literal["ahead", "not_behind"]
#: A LoRA/full candidate the check refused is trained again, against the same serving version, only
#: once the log holds this many times the clicks and ratings it had then (:func:`refuse_retrain`).
RETRAIN_GROWTH = 2
#: The serving model's top documents added to each held-out query's pool, beside what users were shown.
POOL_SIZE = 20


@dataclass
class GateSet:
    """Held-out queries, their relevant docs and their candidate pools (serving positions)."""

    name: str
    queries: list[str]
    relevant: list[dict[str, float]]
    pools: list[list[int]]
    pool_positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.queries)


@dataclass
class CheckResult:
    """The offline check of one candidate against the serving model.

    Attributes:
        worth_trial: Whether the candidate goes on (to a trial, or is promoted without one).
        reason: One line with the figures.
        candidate: The candidate's name (e.g. ``"query"``, ``"lora"``).
        metric: ``"ndcg@10"`` (pool re-ranking) or ``"loglik"`` (whole-index softmax).
        current: The serving model's mean on the checked queries (``None`` when the candidate was
            refused before it was trained, :func:`refuse_untrained`).
        score: The candidate's mean (``None`` likewise).
        n: Queries checked.
        p_win: Share of paired bootstrap resamples the candidate won (``None`` when not computed).
        on: What the queries were (held-out feedback, a labelled set).
        bar: ``"ahead"`` or ``"not_behind"`` (:data:`Bar`).
        p_behind: Share of resamples the serving model won (``"not_behind"`` only, else ``None``).
    """

    worth_trial: bool
    reason: str
    candidate: str
    metric: str
    current: float | None
    score: float | None
    n: int
    p_win: float | None = None
    on: str = "held-out feedback"
    bar: Bar = "ahead"
    p_behind: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check(
    candidate: str,
    metric: str,
    cand: Sequence[float],
    cur: Sequence[float],
    config: GateConfig,
    *,
    on: str = "held-out feedback",
    required: bool = False,
    bar: Bar = "ahead",
) -> CheckResult:
    """Is ``candidate`` (per-query scores ``cand``) worth a trial against the serving model (``cur``)?

    Args:
        candidate: The candidate's name, for the reason line.
        metric: The score's name, for the reason line.
        cand: The candidate's score on each checked query.
        cur: The serving model's score on the same queries.
        config: ``gate.confidence`` (0 turns the check off, unless ``required``) and ``gate.min_queries``.
        on: What the queries are, for the reason line.
        required: A labelled set that decides a promotion: the candidate must then at least be
            ahead on average, whatever ``gate.confidence``.
        bar: ``"ahead"``: the candidate must win at least ``gate.confidence`` of paired bootstrap
            resamples; ``"not_behind"``: it is refused only when the serving model wins that many.

    Returns:
        The verdict, with the figures.
    """
    n = len(cur)
    c_mean, s_mean = (float(np.mean(cur)) if n else 0.0), (float(np.mean(cand)) if n else 0.0)
    figures = f"{metric} {s_mean:.4f} vs the serving model's {c_mean:.4f} on {n} queries of {on}"
    bar = "ahead" if required else bar

    def result(worth: bool, why: str, p_win: float | None = None, p_behind: float | None = None) -> CheckResult:
        return CheckResult(worth, f"{candidate}: {figures}{why}", candidate, metric, c_mean, s_mean, n, p_win, on, bar, p_behind)

    if config.confidence == 0 and not required:
        return result(True, " (gate.confidence 0: every candidate goes on)")
    too_few = _too_few(n, config)
    if too_few:
        return result(False, f": {too_few}")
    if bar == "not_behind":
        p_win, p_behind = win_probability(cand, cur), win_probability(cur, cand)
        if p_behind >= config.confidence:
            return result(False, f", behind in {p_behind:.0%} of bootstrap resamples (gate.confidence {config.confidence:g}): an obvious loser", p_win, p_behind)
        return result(True, f", behind in only {p_behind:.0%} of bootstrap resamples (gate.confidence {config.confidence:g}): not an obvious loser", p_win, p_behind)
    if not s_mean > c_mean:
        return result(False, ": no gain")
    p_win = win_probability(cand, cur)
    if p_win < config.confidence:
        return result(False, f", ahead in only {p_win:.0%} of bootstrap resamples (gate.confidence {config.confidence:g}): within the noise", p_win)
    return result(True, f", ahead in {p_win:.0%} of bootstrap resamples", p_win)


def refuse_untrained(
    candidate: str, metric: str, n: int, config: GateConfig, *, on: str = "held-out feedback", bar: Bar = "ahead", left_out: int = 0
) -> CheckResult | None:
    """The refusal that is certain before a candidate is trained: fewer than ``gate.min_queries``
    queries to check it on (with the check on). A document-side candidate costs minutes to train;
    this spares that when :func:`check` could only refuse it.

    Args:
        candidate: The candidate's name, for the reason line.
        metric: The score's name.
        n: Queries the check would have.
        config: ``gate.confidence`` (0: the check is off, nothing is refused) and ``gate.min_queries``.
        on: What the queries are, for the reason line.
        bar: The bar the check would apply (recorded).
        left_out: Held-out queries left out because the serving version trained on them.

    Returns:
        The refusal (``current`` and ``score`` ``None``), or ``None`` when the check could go either way.
    """
    too_few = _too_few(n, config) if config.confidence > 0 else None
    if too_few is None:
        return None
    if candidate not in ("lora", "full"):
        way = ""
    elif n == 0 and left_out:  # lowering the minimum cannot help: every held-out query trained the serving version
        way = (
            "; held-out queries are those the serving version did not train on, so this needs searches of new queries "
            "(or `ragtune rollback` to a version that did not train on them); the query tier learns meanwhile (`ragtune refresh --mode query`)"
        )
    else:
        way = "; the query tier learns from fewer (`ragtune refresh --mode query`), or lower gate.min_queries in config.json"
    return CheckResult(False, f"{candidate}: not trained: {n} queries of {on}, {too_few}{way}", candidate, metric, None, None, n, None, on, bar)


def refuse_retrain(
    candidate: str, metric: str, n: int, events: int, refused_events: int | None, *, on: str = "held-out feedback", bar: Bar = "ahead"
) -> CheckResult | None:
    """The back-off after a refusal: a document-side candidate costs minutes to train (tens on a
    CPU), and one made from little more feedback than a refused one would most likely be refused
    too. So after the check refused a trained candidate of this tier against the serving version,
    the next is trained only once the log holds :data:`RETRAIN_GROWTH` times the feedback events
    (clicks and ratings) it had then: on clicks that never make a candidate worth a trial, a refresh
    every few minutes trains a logarithmic number of candidates, not one each time. Events grow
    with every click, so the wait always ends while users click; a log that holds fewer than then
    (moved aside by ``doctor --repair``) ends it too. A forced refresh does not call this.

    Args:
        candidate: The candidate's name, for the reason line.
        metric: The score's name.
        n: Queries the check would have.
        events: Clicks and ratings in the log now.
        refused_events: Clicks and ratings in the log when the last candidate of this tier was
            refused against the serving version under the same bar, or ``None`` if none was.
        on: What the queries are.
        bar: The bar the check would apply.

    Returns:
        The refusal (``current`` and ``score`` ``None``), or ``None`` when the candidate is to be trained.
    """
    if refused_events is None or events >= RETRAIN_GROWTH * refused_events or events < refused_events:
        return None
    why = (
        f"the last one against this serving version was refused with {refused_events} clicks and ratings in the log; "
        f"the next is trained from {RETRAIN_GROWTH * refused_events} (now {events}) or by a forced refresh"
    )
    return CheckResult(False, f"{candidate}: not trained: {why}", candidate, metric, None, None, n, None, on, bar)


def _too_few(n: int, config: GateConfig) -> str | None:
    """Why ``n`` queries cannot be checked (fewer than ``gate.min_queries``), or ``None``: the one rule :func:`check` and :func:`refuse_untrained` share."""
    return f"too few to tell a gain from noise (gate.min_queries {config.min_queries})" if n < config.min_queries else None


def build_gate_set(
    name: str,
    serving: ServingVersion,
    queries: Sequence[str],
    relevant: Sequence[dict[str, float]],
    shown: Sequence[Sequence[str]] | None = None,
    *,
    pool_size: int = POOL_SIZE,
) -> GateSet:
    """Pools = the docs shown for each query, the serving top ``pool_size`` and the relevant docs (their gains in ``relevant``)."""
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
    return GateSet(name, list(queries), [dict(r) for r in relevant], pools, union)


def _metrics(gs: GateSet, ids: list[str], scores_of: Any) -> dict[str, Any]:
    """Mean nDCG@10 / MRR@10 over the set, and each query's (for the paired bootstrap)."""
    nd: list[float] = []
    mr: list[float] = []
    for i in range(len(gs)):
        pool = gs.pools[i]
        s = scores_of(i, pool)
        ranked = [ids[pool[j]] for j in np.argsort(-s, kind="stable")]
        nd.append(ndcg_at_k(ranked, gs.relevant[i], 10))
        mr.append(mrr_at_k(ranked, gs.relevant[i], 10))
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


def loglik_per_query(gs: GateSet, serving: ServingVersion, qv: np.ndarray, scale: float = LOGLIK_SCALE, *, chunk_rows: int | None = None) -> list[float]:
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


def score_query_vectors(gs: GateSet, serving: ServingVersion, qv: np.ndarray, *, loglik: bool = False) -> dict[str, Any]:
    """Given query vectors (one row per gate query) against the serving doc vectors (``loglik``: that metric too)."""
    vecs = serving.vectors()
    out = _metrics(gs, serving.docs.ids, lambda i, pool: vecs[pool] @ qv[i])
    if loglik:
        per = loglik_per_query(gs, serving, qv)
        out["loglik"] = float(np.mean(per)) if per else 0.0
        out["per_query"]["loglik"] = per
    return out


def score_current(gs: GateSet, serving: ServingVersion, *, loglik: bool = False) -> dict[str, Any]:
    """The serving model on the gate set (its stored doc vectors, its query encoder)."""
    return score_query_vectors(gs, serving, serving.embedder.encode_queries(gs.queries), loglik=loglik)


def score_candidate(gs: GateSet, serving: ServingVersion, candidate: Embedder, *, shares_documents: bool) -> dict[str, Any]:
    """A candidate on the gate set: serving doc vectors if it shares them, else the pool re-encoded by it."""
    qv = candidate.encode_queries(gs.queries)
    if shares_documents:
        return score_query_vectors(gs, serving, qv)
    docs = serving.docs.get(gs.pool_positions)
    enc = candidate.encode_documents([d.embed_text for d in docs])
    row = {p: j for j, p in enumerate(gs.pool_positions)}
    return _metrics(gs, serving.docs.ids, lambda i, pool: enc[[row[p] for p in pool]] @ qv[i])
