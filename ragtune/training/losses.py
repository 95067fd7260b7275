"""Click-weighted MultipleNegativesRankingLoss, plain and with gradient caching.

sentence-transformers' ``MultipleNegativesRankingLoss`` averages the InfoNCE term over the batch. The
feedback log gives every pair an inverse-propensity weight; the trainer hands a dataset's ``label``
column to the loss, so these subclasses turn that column into per-pair weights of the same loss.

:class:`CachedWeightedMultipleNegativesRankingLoss` is the same loss through sentence-transformers'
GradCache (``CachedMultipleNegativesRankingLoss``): the batch is embedded ``mini_batch_size`` texts
at a time, so the activations held for the backward pass are those of one mini-batch, not of the
whole batch times (1 + negatives) texts; the gradients are the same (the dropout masks are replayed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
from torch import Tensor

__all__ = ["CachedWeightedMultipleNegativesRankingLoss", "WeightedMultipleNegativesRankingLoss", "weighted_infonce"]


def weighted_infonce(
    queries: Tensor, docs: Tensor, labels: Tensor | None, similarity_fct: Callable[[Tensor, Tensor], Tensor], scale: float, rows: tuple[int, int] | None = None
) -> Tensor:
    """The click-weighted InfoNCE loss of anchors ``rows`` (all by default) against ``docs``.

    ``docs`` holds every anchor's positive, then the negatives, in column blocks, so anchor ``i``'s
    positive is column ``i``. Over all rows the result is ``sum(w_i * l_i) / sum(w)`` (the mean when
    ``labels`` is missing or does not match the batch); over a slice of rows it is that slice's share
    of it, so the shares of a partition of the rows add up to the whole.
    """
    n = queries.size(0)
    begin, end = rows or (0, n)
    scores = similarity_fct(queries[begin:end], docs) * scale
    target = torch.arange(begin, end, device=queries.device)
    per_pair = torch.nn.functional.cross_entropy(scores, target, reduction="none")
    if labels is None or labels.numel() != n:
        return per_pair.sum() / n
    w = labels.to(per_pair.dtype)
    return (per_pair * w[begin:end]).sum() / w.sum().clamp_min(1e-8)


class WeightedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """InfoNCE over in-batch and hard negatives, each anchor weighted by its ``label`` (click weight).

    With no labels (or all ones) it equals the parent loss in its default query-to-doc form.
    """

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        reps = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.weighted_loss(reps[0], torch.cat(reps[1:], dim=0), labels)

    def weighted_loss(self, queries: Tensor, docs: Tensor, labels: Tensor | None = None) -> Tensor:
        """The loss of anchor embeddings ``queries`` against ``docs`` (every anchor's positive, then the negatives, in column blocks)."""
        return weighted_infonce(queries, docs, labels, self.similarity_fct, self.scale)

    @property
    def citation(self) -> str:
        return "van den Oord et al. 2018 (InfoNCE); Joachims et al. 2017 (inverse propensity weighting)"

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "weighted": True}


class CachedWeightedMultipleNegativesRankingLoss(CachedMultipleNegativesRankingLoss):
    """:class:`WeightedMultipleNegativesRankingLoss` with GradCache: memory of one ``mini_batch_size`` of texts.

    Args:
        model: The SentenceTransformer being trained.
        mini_batch_size: Texts embedded at once (the bound on activation memory).
        scale: Inverse temperature of the similarities.
    """

    def __init__(self, model: Any, mini_batch_size: int = 16, scale: float = 20.0) -> None:
        super().__init__(model, scale=scale, mini_batch_size=mini_batch_size)

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False) -> Tensor:
        """The weighted loss over the whole batch from the mini-batch embeddings, back-propagated chunk by chunk when asked."""
        queries = torch.cat(reps[0])
        docs = torch.cat([torch.cat(r) for r in reps[1:]], dim=0)
        total = torch.zeros((), device=queries.device)
        for begin in range(0, queries.size(0), self.mini_batch_size):
            part = weighted_infonce(queries, docs, labels, self.similarity_fct, self.scale, (begin, min(begin + self.mini_batch_size, queries.size(0))))
            if with_backward:
                part.backward(retain_graph=True)  # docs is shared by the chunks
                part = part.detach()
            total = total + part
        return total

    @property
    def citation(self) -> str:
        return "van den Oord et al. 2018 (InfoNCE); Joachims et al. 2017 (inverse propensity weighting); Gao et al. 2021 (GradCache)"

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "weighted": True, "mini_batch_size": self.mini_batch_size}
