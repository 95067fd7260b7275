"""The query-side tier: a linear map applied to query embeddings, documents untouched.

``q' = normalize(W q)`` with ``W`` initialised to the identity and trained with a click-weighted
softmax over the corpus's existing document vectors (no re-embedding, no in-batch approximation),
plus an L2 pull of ``W`` toward the identity (the tier's forgetting guard), for a fixed number of
full-batch epochs (nothing is held out here: the caller cross-fits). The settings were chosen on
SciFact's dev split; ``benchmarks/RESULTS.md`` has the figures.

Up to :data:`SOFTMAX_DOCS` documents the softmax runs over the whole corpus (exact). Past it, over a
sample drawn once per fit (:func:`sample_docs`): every pair's positive, the queries' nearest
documents (hard negatives, from the vector index), and uniform random documents whose logits carry
the sampled-softmax correction ``log(rest / sampled)`` for the part of the corpus they stand for. A
fit then costs the same at a million documents as at ten thousand: no epoch scans the corpus.
Applying the map at serving time (:func:`~ragtune.query_tier.interpolate_map`,
:func:`~ragtune.query_tier.apply_query_map`) is in :mod:`ragtune.query_tier`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ragtune.config import TrainConfig
from ragtune.query_tier import interpolate_map

__all__ = ["SOFTMAX_DOCS", "DocSample", "QueryMapResult", "interpolate_map", "sample_docs", "train_query_map"]

logger = logging.getLogger(__name__)


@dataclass
class QueryMapResult:
    """The trained map and how training went."""

    weight: np.ndarray
    seconds: float
    epochs_run: int


#: Training settings of the map, picked on SciFact's dev split (benchmarks/RESULTS.md): full-batch Adam.
LR = 2e-3
EPOCHS = 60
L2 = 0.3

#: Corpus size up to which the softmax is over every document; past it, over a sample of this many.
SOFTMAX_DOCS = 8192
#: Nearest documents per query asked of the vector index for the sample (hard negatives).
HARD_PER_QUERY = 32


@dataclass
class DocSample:
    """The documents one fit's softmax runs over, when the corpus is too big for all of them.

    Attributes:
        rows: ``(m,)`` corpus rows: the positives, then hard negatives, then random documents.
        log_weight: ``(m,)`` added to each row's logit: 0 for positives and hard negatives (each
            stands for itself), ``log(rest / random)`` for the random ones (each stands for
            ``rest / random`` documents of the rest of the corpus).
    """

    rows: np.ndarray
    log_weight: np.ndarray


def sample_docs(positives: np.ndarray, n_docs: int, neighbours: np.ndarray | None, *, size: int = SOFTMAX_DOCS, seed: int = 0) -> DocSample:
    """The softmax sample of a fit: positives, up to half of ``size`` hard negatives, random documents for the rest.

    Args:
        positives: Corpus rows of the pairs' positives.
        n_docs: Corpus size.
        neighbours: ``(n, h)`` each query's nearest corpus rows in rank order (``-1`` pads), or ``None``.
        size: Documents in the sample (at least the positives).
        seed: Seed of the random part.
    """
    pos = np.unique(positives.astype(np.int64))
    taken = np.zeros(n_docs, dtype=bool)
    taken[pos] = True
    hard: list[int] = []
    room = max(0, size // 2 - len(pos))
    if neighbours is not None and room:
        for r in np.asarray(neighbours, dtype=np.int64).T.ravel():  # every query's nearest first, then its second, ...
            if r >= 0 and not taken[r]:
                taken[r] = True
                hard.append(int(r))
                if len(hard) >= room:
                    break
    rest = np.flatnonzero(~taken)
    n_random = min(len(rest), max(0, size - len(pos) - len(hard)))
    rand = np.sort(np.random.default_rng(seed).choice(rest, size=n_random, replace=False)) if n_random else np.zeros(0, np.int64)
    rows = np.concatenate([pos, np.array(hard, dtype=np.int64), rand.astype(np.int64)])
    weight = np.zeros(len(rows), dtype=np.float32)
    if n_random:
        weight[len(pos) + len(hard) :] = np.log(len(rest) / n_random)
    return DocSample(rows, weight)


def train_query_map(
    queries: np.ndarray,
    positives: np.ndarray,
    weights: np.ndarray,
    docs: np.ndarray,
    config: TrainConfig,
    *,
    query_groups: list[int] | None = None,
    neighbours: np.ndarray | None = None,
    scale: float = 20.0,
    softmax_docs: int = SOFTMAX_DOCS,
) -> QueryMapResult:
    """Train ``W`` on (query vector, positive doc row, weight) triples against all doc vectors.

    Args:
        queries: ``(n, d)`` query embeddings from the document-side model (no map applied).
        positives: ``(n,)`` row of each pair's positive in ``docs``.
        weights: ``(n,)`` click weights.
        docs: ``(N, d)`` the index's document vectors.
        config: Its ``seed``.
        query_groups: Group id of each pair (same query text): a query's other positives are
            masked out of its softmax denominator.
        neighbours: ``(n, h)`` each pair's query's nearest corpus rows (from the vector index), the
            hard negatives of the softmax sample when the corpus has more than ``softmax_docs``
            documents; ``None``: a random sample only.
        scale: Softmax temperature inverse (as MultipleNegativesRankingLoss's ``scale``).
        softmax_docs: Corpus size up to which the softmax is exact (see :func:`sample_docs`).
    """
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    d = docs.shape[1]
    positives = np.asarray(positives, dtype=np.int64)
    offset = None
    if len(docs) > softmax_docs:
        sample = sample_docs(positives, len(docs), neighbours, size=softmax_docs, seed=config.seed)
        docs_t = torch.from_numpy(np.asarray(docs[sample.rows], dtype=np.float32))  # a copy of the sample only
        where = {int(r): j for j, r in enumerate(sample.rows)}
        positives = np.array([where[int(p)] for p in positives], dtype=np.int64)
        offset = torch.from_numpy(sample.log_weight)
    else:
        docs_t = torch.from_numpy(np.array(docs, dtype=np.float32))
    q_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    y = torch.from_numpy(positives)
    w = torch.from_numpy((weights / weights.mean()).astype(np.float32))
    mask = torch.zeros(len(q_t), len(docs_t), dtype=torch.bool)
    if query_groups is not None:
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(query_groups):
            groups.setdefault(g, []).append(i)
        for members in groups.values():
            rows = positives[members]
            for i in members:
                mask[i, torch.from_numpy(rows)] = True
                mask[i, positives[i]] = False
    w_map = torch.nn.Parameter(torch.eye(d))
    eye = torch.eye(d)
    opt = torch.optim.Adam([w_map], lr=LR)
    for _ in range(EPOCHS):
        opt.zero_grad()
        qm = torch.nn.functional.normalize(q_t @ w_map.T, dim=1)
        logits = (qm @ docs_t.T) * scale
        if offset is not None:
            logits = logits + offset
        logits = logits.masked_fill(mask, float("-inf"))
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w).mean()
        loss = loss + L2 * ((w_map - eye) ** 2).sum() / d
        loss.backward()
        opt.step()
    return QueryMapResult(w_map.detach().numpy().astype(np.float32), time.perf_counter() - t0, EPOCHS)
