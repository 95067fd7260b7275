"""A click simulator: plays users over BEIR qrels through the public search API.

The model is position-based (PBM): a user looks at rank ``r`` of the top ``top_k`` with probability
``(1 / r) ** eta``, clicks a looked-at relevant doc with ``p_relevant`` and a looked-at non-relevant
one with ``p_noise``. Everything is seeded; the clicks go through :meth:`Ragtune.click`, the same call
an app makes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragtune.errors import ConfigError

if TYPE_CHECKING:
    from ragtune.api import Ragtune

__all__ = ["ClickModel", "simulate_users"]


@dataclass
class ClickModel:
    """Parameters of the simulated users."""

    top_k: int = 10
    eta: float = 1.0
    p_relevant: float = 0.9
    p_noise: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"ClickModel.top_k must be >= 1, got {self.top_k}")
        for name in ("p_relevant", "p_noise"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"ClickModel.{name} must be in [0, 1], got {v}")

    def examine(self, rank: int) -> float:
        return float((1.0 / rank) ** self.eta)


def simulate_users(rt: Ragtune, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], qids: Sequence[str], model: ClickModel | None = None) -> dict[str, int]:
    """Play one session per query id: search (logged), then click per the click model.

    Returns:
        Counts: ``sessions``, ``clicks``, ``relevant_clicks``, ``noise_clicks``.
    """
    model = model or ClickModel()
    rng = random.Random(model.seed)
    out = {"sessions": 0, "clicks": 0, "relevant_clicks": 0, "noise_clicks": 0}
    for qid in qids:
        hits = rt.search(queries[qid], k=model.top_k, log=True)
        assert hits.query_id is not None
        rels = qrels.get(qid, {})
        out["sessions"] += 1
        for hit in hits:
            if rng.random() >= model.examine(hit.rank):
                continue
            relevant = rels.get(hit.doc_id, 0) > 0
            if rng.random() < (model.p_relevant if relevant else model.p_noise):
                rt.click(hits.query_id, hit.doc_id)
                out["clicks"] += 1
                out["relevant_clicks" if relevant else "noise_clicks"] += 1
    return out
