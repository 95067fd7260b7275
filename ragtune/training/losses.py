"""Click-weighted MultipleNegativesRankingLoss.

sentence-transformers' ``MultipleNegativesRankingLoss`` averages the InfoNCE term over the batch. The
feedback log gives every pair an inverse-propensity weight; the trainer hands a dataset's ``label``
column to the loss, so this subclass turns that column into per-pair weights of the same loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch import Tensor

__all__ = ["WeightedMultipleNegativesRankingLoss"]


class WeightedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """InfoNCE over in-batch and hard negatives, each anchor weighted by its ``label`` (click weight).

    With no labels (or all ones) it equals the parent loss in its default query-to-doc form.
    """

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        reps = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.weighted_loss(reps[0], torch.cat(reps[1:], dim=0), labels)

    def weighted_loss(self, queries: Tensor, docs: Tensor, labels: Tensor | None = None) -> Tensor:
        """The loss of anchor embeddings ``queries`` against ``docs`` (every anchor's positive, then the negatives, in column blocks)."""
        scores = self.similarity_fct(queries, docs) * self.scale
        target = torch.arange(queries.size(0), device=queries.device)
        per_pair = torch.nn.functional.cross_entropy(scores, target, reduction="none")
        if labels is None or labels.numel() != per_pair.numel():
            return per_pair.mean()
        w = labels.to(per_pair.dtype)
        return (per_pair * w).sum() / w.sum().clamp_min(1e-8)

    @property
    def citation(self) -> str:
        return "van den Oord et al. 2018 (InfoNCE); Joachims et al. 2017 (inverse propensity weighting)"

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "weighted": True}
