"""Training data from the feedback log.

* **Positives**: clicked or thumbs-up documents, one pair per (query text, doc), weighted by how
  often the query's users chose it: the sum of its choices' weights (position bias and click noise,
  below; a thumbs-up weighs 1; a document once per search) over the query's searches with a click or
  a thumbs-up (a click that is noise by its posterior still counts its search, a thumbs-down alone
  does not; an imported triplet file's rows for one query count as one search). A query asked once
  weighs its choices as they are; for a query asked 40 times, the document chosen in 38 of them
  outweighs the one clicked once by 38 to 1, where a mean per document would have weighed them
  alike (and a popular query's stray clicks would have piled up as equals of its answer).
* **Negatives**: shown-above-but-skipped documents, thumbs-down documents, and ANN hard negatives
  from the current index in a rank window ``[range_min, range_max)``, dropping any candidate that
  scores within ``relative_margin`` of the positive (NV-Retriever's TopK-PercPos false-negative
  filter, the same rule as sentence-transformers' ``mine_hard_negatives(relative_margin=...)``; we
  search the existing index instead of re-embedding the corpus as that function would). A document
  that any user clicked or liked for the same query text is never a negative.
* **Position bias**: a click at rank ``r`` is weighted by ``1 / propensity(r)`` (clipped), with
  propensities estimated from RandPair-randomised traffic in the log when there is enough of it.
  Without it no curve is assumed (every propensity 1): how far down users look depends on the users
  (position-based, cascade), and a guessed curve cost more than it gave (benchmarks/RESULTS.md,
  "Position bias"). Weights are normalised to mean 1 and reach the loss.
* **Click noise (trust bias)**: users also click results that are not relevant, and more so, relative
  to relevant clicks, the lower they sit; inverse-propensity weights (with RandPair traffic) up-weight exactly those clicks.
  Each click is also weighted by its posterior of relevance at its rank, from the clicks per
  examination there and a noise rate (``feedback.click_noise``, estimated from the deepest shown
  ranks by default). A click that is more likely noise than not does not mark the results above it
  as skipped; a click with posterior 0 trains nothing (but its document is still never a negative).
  The posterior is per rank, so it would read every deep click as noise; but noise does not return
  to the same document each time a query is asked: a (query, document) pair clicked in more of its
  query's searches than the noise rate explains keeps its clicks whole (:func:`repeat_trusted`).
* **Held-out split**: feedback queries are split by a salted hash of their normalised text,
  deterministically, and kept aside for the promotion gate.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.config import FeedbackConfig, MiningConfig
from ragtune.feedback import QueryRecord, normalize_query

if TYPE_CHECKING:
    from ragtune.serving import ServingVersion

__all__ = ["REPEAT_LEVEL", "HeldoutQuery", "MinedSet", "TrainExample", "click_trust", "estimate_propensities", "mine", "normalize_query", "repeat_trusted"]

logger = logging.getLogger(__name__)

#: Fixed parts of mining: the held-out split's salt (stable across releases) and its floor; the
#: lowest propensity a click is weighted by (a weight is at most 10); ANN hard negatives are taken
#: from the serving top 50 below its top 3.
SPLIT_SALT = 13
MIN_HELDOUT = 5
PROPENSITY_CLIP = 0.1
ANN_RANGE = (3, 50)

#: Randomised impressions needed at a rank before its propensity is estimated from the log.
MIN_RANDOMIZED_PER_RANK = 30
#: The ranks the click-noise correction reads are those at least this share of the searches showed.
COMMON_RANK_SHARE = 0.1
#: Clicks needed at the deepest shown ranks before the click-noise rate is estimated from the log.
MIN_NOISE_CLICKS = 10
#: The estimate is trusted only if the deepest ranks draw at most this share of rank 1's clicks per
#: look; more means users seek out results down there (relevance the ranking misses), not noise.
MAX_NOISE_TO_TOP = 0.25
#: Noise does not pick the same document for the same query again and again: a (query, document)
#: pair clicked in more of its query's searches than the noise rate explains (a one-sided Poisson
#: test at this level) keeps its clicks whole, wherever it was shown. 0 turns this off.
REPEAT_LEVEL = 0.01


@dataclass
class TrainExample:
    """One training pair with its negatives and click weight."""

    query: str
    positive_id: str
    negative_ids: list[str]
    weight: float
    query_key: str = ""


@dataclass
class HeldoutQuery:
    """A held-out feedback query with the docs users chose for it."""

    query: str
    positive_ids: dict[str, float]
    shown_ids: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)


@dataclass
class MinedSet:
    """What a refresh trains and gates on."""

    train: list[TrainExample]
    heldout: list[HeldoutQuery]
    stats: dict[str, Any]
    doc_texts: dict[str, str] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The dry-run summary (counts only)."""
        return dict(self.stats)

    def triplets(self) -> Iterator[dict[str, Any]]:
        """Training rows as the common triplet JSONL (one row per negative; pairs without one get none)."""
        for ex in self.train:
            base = {
                "query": ex.query,
                "positive": self.doc_texts.get(ex.positive_id, ""),
                "positive_id": ex.positive_id,
                "weight": round(ex.weight, 4),
            }
            if not ex.negative_ids:
                yield base
            for neg in ex.negative_ids:
                yield {**base, "negative": self.doc_texts.get(neg, ""), "negative_id": neg}


def _hash01(key: str, seed: int) -> float:
    h = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_heldout(keys: list[str], config: MiningConfig) -> set[str]:
    """The held-out query keys: hash below ``heldout_fraction``, topped up to ``min_heldout``."""
    if config.heldout_fraction <= 0 or len(keys) < 2:
        return set()
    scored = sorted(keys, key=lambda k: _hash01(k, SPLIT_SALT))
    held = {k for k in keys if _hash01(k, SPLIT_SALT) < config.heldout_fraction}
    want = min(MIN_HELDOUT, len(keys) // 2)
    for k in scored:
        if len(held) >= want:
            break
        held.add(k)
    return held


def estimate_propensities(records: list[QueryRecord], max_rank: int = 100) -> tuple[np.ndarray, str]:
    """Examination propensity per rank (index 0 = rank 1), clipped; and where it came from.

    With RandPair traffic (rank 1 swapped with rank j), ``p(j) / p(1)`` is the click rate of the
    originally-first doc when shown at ``j`` over its click rate when shown first. A rank with fewer
    than ``MIN_RANDOMIZED_PER_RANK`` randomised impressions takes the estimate of the nearest
    estimated rank above it; with no estimate at all every propensity is 1 (no correction).
    """
    shown = np.zeros(max_rank + 1)
    clicked = np.zeros(max_rank + 1)
    for rec in records:
        top = next((im for im in rec.impressions if im.orig_rank == 1), None)
        if top is None or top.rank > max_rank:
            continue
        clicked_ids = {d for d, _ in rec.clicks}
        if rec.randomized or top.rank == 1:
            shown[top.rank] += 1
            clicked[top.rank] += top.doc_id in clicked_ids
    source = "none assumed (no randomised traffic: feedback.randomize_prob)"
    prop = np.ones(max_rank)
    if shown[1] >= MIN_RANDOMIZED_PER_RANK and clicked[1] > 0:
        ctr1 = clicked[1] / shown[1]
        used = 0
        for r in range(2, max_rank + 1):
            if shown[r] >= MIN_RANDOMIZED_PER_RANK:
                prop[r - 1] = min(1.0, (clicked[r] / shown[r]) / ctr1)
                used += 1
            else:  # carried down from the rank above (1 above every estimate)
                prop[r - 1] = prop[r - 2]
        if used:
            source = f"estimated from randomised traffic at {used} ranks (carried down to the ranks below)"
    return np.clip(prop, PROPENSITY_CLIP, 1.0), source


def click_trust(records: list[QueryRecord], propensity: np.ndarray, config: FeedbackConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Posterior that a click at rank ``r`` is on a relevant result (index 0 = rank 1); and how it was made.

    Under a position-based model with click noise, a result at rank ``r`` is clicked with probability
    ``theta_r * (rho_r + eps * (1 - rho_r))`` (``theta_r`` the examination propensity, ``rho_r`` the
    share of relevant results there, ``eps`` the noise rate, relevant results clicked when seen). So
    ``c_r``, clicks per examination, is ``rho_r + eps * (1 - rho_r)`` and a click there is relevant with
    probability ``rho_r / c_r = (c_r - eps) / ((1 - eps) * c_r)``. ``c_r`` is smoothed to be
    non-increasing in rank (isotonic regression). Needs every logged search, with or without clicks.
    The estimated rate is used only when the deepest ranks draw at most ``MAX_NOISE_TO_TOP`` of rank
    1's clicks per look: when users click deep results about as readily as the top one, those clicks
    are a signal the ranking misses, and the correction stays off.
    """
    max_rank = len(propensity)
    ones = np.ones(max_rank)
    if config.click_noise == 0:
        return ones, {"click_noise": 0.0, "click_noise_source": "off (feedback.click_noise = 0)"}
    shown = np.zeros(max_rank + 1)
    clicks = np.zeros(max_rank + 1)
    searches = 0
    for rec in records:
        clicked = {d for d, _ in rec.clicks}
        searches += bool(rec.impressions)
        for im in rec.impressions:
            if 1 <= im.rank <= max_rank:
                shown[im.rank] += 1
                clicks[im.rank] += im.doc_id in clicked
    # the result lists' usual depth: the deepest rank at least a tenth of the searches showed (a few
    # long lists must not move the "deep ranks" the noise rate is read from)
    common = np.nonzero(shown >= max(searches, 1) * COMMON_RANK_SHARE)[0]
    depth = int(common.max()) if len(common) else 0
    if depth < 2 or not clicks.any():
        if not clicks.any():
            why = "off: no clicks in the log"
        elif not shown[2:].any():
            why = "off: no impressions below rank 1 in the log"
        else:
            why = f"off: fewer than {COMMON_RANK_SHARE:.0%} of the {searches} searches showed rank 2"
        return ones, {"click_noise": None, "click_noise_source": why}
    ranks = np.arange(1, depth + 1)
    exposure = shown[1 : depth + 1] * propensity[:depth]  # expected examinations per rank
    if config.click_noise is None:
        deep = ranks > depth // 2
        n_deep = int(clicks[1 : depth + 1][deep].sum())
        if n_deep < MIN_NOISE_CLICKS:
            why = f"off: {n_deep} click{'' if n_deep == 1 else 's'} at ranks {depth // 2 + 1}-{depth}, need {MIN_NOISE_CLICKS} to estimate click noise"
            return ones, {"click_noise": None, "click_noise_source": why}
        eps = float(n_deep / exposure[deep].sum())
        top = float(clicks[1] / exposure[0]) if exposure[0] > 0 else 0.0
        if eps > MAX_NOISE_TO_TOP * top:
            why = (
                f"off: ranks {depth // 2 + 1}-{depth} draw {eps:.3g} clicks per look against rank 1's {top:.3g}, "
                f"more than {MAX_NOISE_TO_TOP:g} of it: users seek results out down there, so they are not noise"
            )
            return ones, {"click_noise": None, "click_noise_source": why}
        source = f"estimated from {n_deep} clicks at ranks {depth // 2 + 1}-{depth}"
    else:
        eps = float(config.click_noise)
        source = "feedback.click_noise"
    from sklearn.isotonic import IsotonicRegression

    used = exposure > 0
    rate = np.divide(clicks[1 : depth + 1], exposure, out=np.zeros(depth), where=used)
    smooth = IsotonicRegression(increasing=False, y_min=0.0, out_of_bounds="clip").fit(ranks[used], rate[used], sample_weight=exposure[used]).predict(ranks)
    smooth = np.maximum(smooth, 1e-12)
    trust = ones.copy()
    trust[:depth] = np.clip((smooth - eps) / ((1.0 - eps) * smooth), 0.0, 1.0)
    trust[depth:] = trust[depth - 1]
    return trust, {"click_noise": round(eps, 4), "click_noise_source": source}


def repeat_trusted(records: list[QueryRecord], propensity: np.ndarray, noise: float | None, *, level: float | None = None) -> set[tuple[str, str]]:
    """The ``(normalised query, doc id)`` pairs clicked more often than click noise explains.

    Click noise lands on a shown result now and then, at random; it does not return to the same
    document every time a query is asked. For each pair shown in ``n`` of its query's searches and
    clicked in ``k >= 2`` of them, the noise-only count of clicks is Poisson with mean ``noise`` times
    the looks it got (the propensities of the ranks it was shown at); the pair is returned when
    ``P(X >= k)`` is below ``level``. Its clicks then count whole, however deep they were: a result
    users keep digging out from rank 9 is the relevance the ranking misses, which the per-rank
    posterior alone would read as noise.

    Args:
        records: Logged searches (impressions and clicks).
        propensity: Examination propensity per rank (index 0 = rank 1).
        noise: The click-noise rate per look (``None`` or 0: nothing to test against, no pair).
        level: The test's level (default :data:`REPEAT_LEVEL`).
    """
    level = REPEAT_LEVEL if level is None else level
    if not noise or noise <= 0 or level <= 0:
        return set()
    from scipy.stats import poisson

    looks: dict[tuple[str, str], float] = defaultdict(float)
    clicks: dict[tuple[str, str], int] = defaultdict(int)
    for rec in records:
        key = normalize_query(rec.text)
        clicked = {d for d, _ in rec.clicks}
        for im in rec.impressions:
            r = min(max(im.rank, 1), len(propensity))
            looks[(key, im.doc_id)] += float(propensity[r - 1])
            clicks[(key, im.doc_id)] += im.doc_id in clicked
    return {pair for pair, k in clicks.items() if k >= 2 and float(poisson.sf(k - 1, noise * looks[pair])) < level}


def mine(
    records: list[QueryRecord],
    serving: ServingVersion,
    mining: MiningConfig,
    feedback: FeedbackConfig,
    *,
    heldout_keys: set[str] | None = None,
    train_on_heldout: bool = False,
) -> MinedSet:
    """Mine a :class:`MinedSet` from ``records`` against the serving version's index.

    Args:
        records: Logged queries. Only those with clicks/ratings make pairs; the others give the click
            rates per rank that the click-noise correction needs.
        serving: The current version (its embedder and index give the ANN hard negatives).
        mining: Mining settings.
        feedback: Propensity settings.
        heldout_keys: Hold out exactly these normalised query texts instead of the hash split.
        train_on_heldout: Also make training pairs of the held-out queries (for cross-fitting,
            where the caller keeps each fold out of the model that judges it).
    """
    propensity, prop_source = estimate_propensities(records)
    trust, trust_info = click_trust(records, propensity, feedback)
    repeated = repeat_trusted(records, propensity, trust_info.get("click_noise")) if bool((trust < 1).any()) else set()
    # aggregate per normalised query text
    texts: dict[str, str] = {}
    pos_weights: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    chosen: dict[str, set[str]] = defaultdict(set)  # every clicked or liked doc, trusted or not: never a negative
    neg_skip: dict[str, set[str]] = defaultdict(set)
    neg_rated: dict[str, set[str]] = defaultdict(set)
    shown: dict[str, list[str]] = defaultdict(list)
    logged_by: dict[str, set[str]] = defaultdict(set)
    n_searches: dict[str, int] = defaultdict(int)  # searches of each query text with a click or a thumbs-up
    labels: dict[str, dict[str, float]] = defaultdict(dict)  # imported triplets' positives per query text
    n_clicks = n_ratings = n_untrusted = 0
    for rec in records:
        if not rec.clicks and not rec.ratings:
            continue
        key = normalize_query(rec.text)
        texts.setdefault(key, rec.text)
        rank_of = {im.doc_id: im.rank for im in rec.impressions}
        logged_by[key].add(rec.version or "")
        for im in rec.impressions:
            if im.doc_id not in shown[key]:
                shown[key].append(im.doc_id)
        clicked = [d for d, _ in rec.clicks]
        chosen[key].update(clicked)
        trusted: list[str] = []
        this_search: dict[str, float] = {}  # each document once per search: a double click is one choice
        for doc_id in clicked:
            n_clicks += 1
            r = rank_of.get(doc_id)
            p = propensity[min(r, len(propensity)) - 1] if r else 1.0
            t = float(trust[min(r, len(trust)) - 1]) if r else 1.0
            if (key, doc_id) in repeated:
                t = 1.0
            if t <= 0:
                n_untrusted += 1
                continue
            this_search[doc_id] = max(this_search.get(doc_id, 0.0), t / max(float(p), PROPENSITY_CLIP))
            if t >= 0.5:
                trusted.append(doc_id)
        for doc_id, value in rec.ratings:
            n_ratings += 1
            if value > 0:
                this_search[doc_id] = max(this_search.get(doc_id, 0.0), 1.0)
                chosen[key].add(doc_id)
            else:
                neg_rated[key].add(doc_id)
        if rec.is_label:  # a labelled set's rows: together one search of the query, however many rows name a document
            for doc_id, w in this_search.items():
                labels[key][doc_id] = max(labels[key].get(doc_id, 0.0), w)
        elif clicked or any(v > 0 for _, v in rec.ratings):  # a search that chose something (a thumbs-down alone chose nothing)
            n_searches[key] += 1
            for doc_id, w in this_search.items():
                pos_weights[key][doc_id].append(w)
        if trusted:
            lowest = max(rank_of.get(d, 0) for d in trusted)
            for im in rec.impressions:
                if im.rank < lowest and im.doc_id not in clicked:
                    neg_skip[key].add(im.doc_id)
    for key, docs in labels.items():
        n_searches[key] += 1
        for doc_id, w in docs.items():
            pos_weights[key][doc_id].append(w)
    keys = [k for k in texts if pos_weights.get(k)]
    # each positive's weight: its choices' weights over the query's searches that chose something
    share = {k: {d: float(np.sum(ws)) / n_searches[k] for d, ws in pos_weights[k].items()} for k in keys}
    held = split_heldout(keys, mining) if heldout_keys is None else set(keys) & heldout_keys
    dropped_positive_as_negative = 0
    for k in keys:  # a doc any user chose for this query text is never a negative
        for store in (neg_skip, neg_rated):
            before = len(store[k])
            store[k] -= chosen[k]
            dropped_positive_as_negative += before - len(store[k])

    train_keys = list(keys) if train_on_heldout else [k for k in keys if k not in held]
    hard: dict[tuple[str, str], list[str]] = {}
    dropped_fn = 0
    if mining.hard_negatives > 0 and train_keys:
        ids = serving.docs.ids
        vecs = serving.vectors()
        qv = serving.embedder.encode_queries([texts[k] for k in train_keys])
        scores, pos = serving.store.search(qv, ANN_RANGE[1])
        pos_index = serving.docs.positions([d for k in train_keys for d in pos_weights[k]])
        for qi, k in enumerate(train_keys):
            cands = [(ids[p], float(s)) for rank, (p, s) in enumerate(zip(pos[qi], scores[qi])) if p >= 0 and rank >= ANN_RANGE[0]]
            cands = [(d, s) for d, s in cands if d not in chosen[k]]
            for d_pos in pos_weights[k]:
                if d_pos not in pos_index:
                    continue
                pos_score = float(np.dot(qv[qi], vecs[pos_index[d_pos]]))
                limit = pos_score - mining.relative_margin * abs(pos_score)
                kept = [d for d, s in cands if s <= limit]
                dropped_fn += len(cands) - len(kept)
                hard[(k, d_pos)] = kept[: mining.hard_negatives]

    train: list[TrainExample] = []
    counts = {"skip_above": 0, "rated": 0, "ann": 0}
    for k in train_keys:
        for d_pos, weight in share[k].items():
            negs: list[str] = []
            for source, pool in (
                ("rated", sorted(neg_rated[k])),
                ("skip_above", [d for d in shown[k] if d in neg_skip[k]]),
                ("ann", hard.get((k, d_pos), [])),
            ):
                for d in pool:
                    if d not in negs:
                        negs.append(d)
                        counts[source] += 1
            train.append(TrainExample(texts[k], d_pos, negs, weight, k))
    heldout = [
        HeldoutQuery(texts[k], dict(share[k]), shown[k], sorted(logged_by[k]))
        for k in keys
        if k in held
    ]

    needed = {ex.positive_id for ex in train} | {n for ex in train for n in ex.negative_ids}
    pmap = serving.docs.positions(sorted(needed))
    doc_texts = {d.id: d.embed_text for d in serving.docs.get(list(pmap.values()))}
    missing = needed - set(doc_texts)
    if missing:  # documents removed from the index since they were clicked
        train = [
            TrainExample(ex.query, ex.positive_id, [n for n in ex.negative_ids if n in doc_texts], ex.weight, ex.query_key)
            for ex in train
            if ex.positive_id in doc_texts
        ]
    raw = np.array([ex.weight for ex in train]) if train else np.ones(0)
    if len(raw):  # mean 1 over the pairs that train (after dropping those whose document left)
        for ex in train:
            ex.weight = float(ex.weight / raw.mean())
    stats: dict[str, Any] = {
        "feedback_queries": len(keys),
        "searches_with_choice": sum(n_searches[k] for k in keys),
        "clicks": n_clicks,
        "untrusted_clicks": n_untrusted,
        "repeat_trusted_pairs": len(repeated),
        "ratings": n_ratings,
        "train_queries": len(train_keys),
        "heldout_queries": len(heldout),
        "pairs": len(train),
        "negatives_per_pair": round(sum(len(ex.negative_ids) for ex in train) / len(train), 3) if train else 0.0,
        "negatives_skip_above": counts["skip_above"],
        "negatives_rated": counts["rated"],
        "negatives_ann": counts["ann"],
        "dropped_false_negatives": dropped_fn,
        "dropped_clicked_as_negative": dropped_positive_as_negative,
        "weight_min": round(float(raw.min() / raw.mean()), 4) if len(raw) else None,
        "weight_max": round(float(raw.max() / raw.mean()), 4) if len(raw) else None,
        "propensity": prop_source,
        "propensity_top5": [round(float(p), 4) for p in propensity[:5]],
        **trust_info,
        "click_trust_top5": [round(float(t), 4) for t in trust[:5]],
    }
    if math.isnan(stats["negatives_per_pair"]):  # pragma: no cover
        stats["negatives_per_pair"] = 0.0
    return MinedSet(train, heldout, stats, doc_texts)
