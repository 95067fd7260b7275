"""The query-side tier: a linear map applied to query embeddings, documents untouched.

``q' = normalize(W q)`` with ``W`` initialised to the identity and trained with a click-weighted
softmax over the *whole* corpus's existing document vectors (no re-embedding, no in-batch
approximation), plus an L2 pull of ``W`` toward the identity (the tier's forgetting guard).
With held-out queries given (the held-out-split gate, ``gate.folds`` 0), early stopping keeps the
checkpoint (every 10 epochs) with the best held-out nDCG@10; cross-fitted, it runs ``query_epochs``. Defaults
(lr 2e-3, 60 full-batch epochs, L2 0.3, scale 20, WiSE-FT ratios 0.35/0.5/0.7 for the gate to pick
from) were picked on SciFact *train* queries only: simulated clicks on two thirds of them, nDCG@10
on the other third (0.672 → 0.711 at ratio 0.5; its cold part 0.681 → 0.689). The full map (ratio
1) and weaker L2 gain less overall and lose on cold queries; scales 10-15 and 40-60 did worse.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ragtune.config import TrainConfig

__all__ = ["QueryMapResult", "heldout_ndcg", "interpolate_map", "train_query_map"]

logger = logging.getLogger(__name__)


@dataclass
class QueryMapResult:
    """The trained map and how training went."""

    weight: np.ndarray
    seconds: float
    epochs_run: int
    best_epoch: int
    heldout_ndcg: float | None


def interpolate_map(weight: np.ndarray, ratio: float) -> np.ndarray:
    """WiSE-FT for the map: ``I + ratio * (W - I)`` (``ratio`` 1 = as trained, 0 = identity)."""
    if ratio >= 1.0:
        return weight
    eye = np.eye(weight.shape[0], dtype=np.float32)
    return (eye + ratio * (weight - eye)).astype(np.float32)


def heldout_ndcg(q: np.ndarray, docs: np.ndarray, positives: list[set[int]], k: int = 10) -> float:
    """Mean nDCG@k (binary gains) of exact search of ``q`` over ``docs``."""
    if len(q) == 0:
        return 0.0
    scores = q @ docs.T
    top = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
    total = 0.0
    for i, pos in enumerate(positives):
        order = top[i][np.argsort(-scores[i, top[i]])]
        dcg = sum(1.0 / np.log2(r + 2) for r, d in enumerate(order) if int(d) in pos)
        idcg = sum(1.0 / np.log2(r + 2) for r in range(min(len(pos), k)))
        total += dcg / idcg if idcg else 0.0
    return total / len(positives)


def train_query_map(
    queries: np.ndarray,
    positives: np.ndarray,
    weights: np.ndarray,
    docs: np.ndarray,
    config: TrainConfig,
    *,
    query_groups: list[int] | None = None,
    eval_queries: np.ndarray | None = None,
    eval_positives: list[set[int]] | None = None,
    scale: float = 20.0,
) -> QueryMapResult:
    """Train ``W`` on (query vector, positive doc row, weight) triples against all doc vectors.

    Args:
        queries: ``(n, d)`` query embeddings from the document-side model (no map applied).
        positives: ``(n,)`` row of each pair's positive in ``docs``.
        weights: ``(n,)`` click weights.
        docs: ``(N, d)`` the index's document vectors.
        config: ``query_lr``, ``query_epochs``, ``query_l2``, ``seed``, ``early_stopping_patience``.
        query_groups: Group id of each pair (same query text): a query's other positives are
            masked out of its softmax denominator.
        eval_queries: Held-out query embeddings for early stopping.
        eval_positives: Their positive doc rows.
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
    opt = torch.optim.Adam([w_map], lr=config.query_lr)
    eval_ok = eval_queries is not None and eval_positives and len(eval_queries) > 0
    # the identity is not a candidate here: the gate compares whatever this returns with the current model
    best_w, best_score, best_epoch, bad = w_map.detach().clone(), -1.0, 0, 0
    epoch = 0
    patience = max(3, config.early_stopping_patience * 5)
    for epoch in range(1, config.query_epochs + 1):
        opt.zero_grad()
        qm = torch.nn.functional.normalize(q_t @ w_map.T, dim=1)
        logits = (qm @ docs_t.T) * scale
        logits = logits.masked_fill(mask, float("-inf"))
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w).mean()
        loss = loss + config.query_l2 * ((w_map - eye) ** 2).sum() / d
        loss.backward()
        opt.step()
        if eval_ok and (epoch % 10 == 0 or epoch == config.query_epochs):
            with torch.no_grad():
                ev = torch.nn.functional.normalize(torch.from_numpy(eval_queries) @ w_map.T, dim=1).numpy()  # type: ignore[arg-type]
            score = heldout_ndcg(ev, docs, eval_positives)  # type: ignore[arg-type]
            if score > best_score + 1e-6:
                best_w, best_score, best_epoch, bad = w_map.detach().clone(), score, epoch, 0
            else:
                bad += 1
                if config.early_stopping_patience and bad >= patience:
                    break
    if not eval_ok:
        best_w, best_epoch = w_map.detach().clone(), epoch
    return QueryMapResult(best_w.numpy().astype(np.float32), time.perf_counter() - t0, epoch, best_epoch, best_score if eval_ok else None)
