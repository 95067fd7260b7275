"""The query-side tier: a linear map applied to query embeddings, documents untouched.

``q' = normalize(W q)`` with ``W`` initialised to the identity and trained with a click-weighted
softmax over the *whole* corpus's existing document vectors (no re-embedding, no in-batch
approximation), plus an L2 pull of ``W`` toward the identity (the tier's forgetting guard), for a
fixed number of full-batch epochs (nothing is held out here: the caller cross-fits). The settings
were chosen on SciFact's dev split; ``benchmarks/RESULTS.md`` has the figures.
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

__all__ = ["QueryMapResult", "interpolate_map", "train_query_map"]

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


def train_query_map(
    queries: np.ndarray,
    positives: np.ndarray,
    weights: np.ndarray,
    docs: np.ndarray,
    config: TrainConfig,
    *,
    query_groups: list[int] | None = None,
    scale: float = 20.0,
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
        scale: Softmax temperature inverse (as MultipleNegativesRankingLoss's ``scale``).
    """
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    d = docs.shape[1]
    docs_t = torch.from_numpy(np.array(docs, dtype=np.float32))
    q_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    y = torch.from_numpy(positives.astype(np.int64))
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
        logits = logits.masked_fill(mask, float("-inf"))
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w).mean()
        loss = loss + L2 * ((w_map - eye) ** 2).sum() / d
        loss.backward()
        opt.step()
    return QueryMapResult(w_map.detach().numpy().astype(np.float32), time.perf_counter() - t0, EPOCHS)
