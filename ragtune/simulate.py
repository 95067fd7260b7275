"""A click simulator: plays users over BEIR qrels through the public search API.

Three kinds of simulated users (:attr:`ClickModel.users`), all seeded:

* ``"pbm"`` (position-based, the default): a user looks at rank ``r`` of the top ``top_k`` with
  probability ``(1 / r) ** eta``, clicks a looked-at relevant doc with ``p_relevant`` and a looked-at
  non-relevant one with the (trust-biased) noise probability.
* ``"cascade"``: a user scans down from rank 1 and looks at every result until stopping; clicks a
  relevant one with ``p_relevant``, a non-relevant one with the (trust-biased) noise probability;
  after each click stops with ``p_stop`` (a satisfying click), and stops after ``top_k`` anyway.
* ``"uninformative"``: every search gets exactly one click, on a shown result picked uniformly at
  random whatever its relevance: clicks that carry no information.

Trust bias (``trust``, 0 = off) makes users click non-relevant results more near the top: the noise
probability at rank ``r`` is ``min(1, p_noise * (1 + trust / r))``.

:func:`draw_sessions` draws a stream of query ids with Zipf popularity (a few asked often, most
rarely), :func:`click_model` maps preset names to ready models, and :func:`simulate_users` plays them.
The searches go through :meth:`Ragtune.search` (logged) and the clicks through :meth:`Ragtune.click`,
the same calls an app makes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ragtune.errors import ConfigError, InputError
from ragtune.records import SearchResults

__all__ = ["CLICK_MODEL_PRESETS", "USER_KINDS", "ClickModel", "SearchApp", "click_model", "draw_sessions", "simulate_users"]


class SearchApp(Protocol):
    """What the simulator plays against: :class:`ragtune.Ragtune`, or anything with its two calls."""

    def search(self, query: str, k: int = ..., *, log: bool | None = ...) -> SearchResults: ...

    def click(self, query_id: str, doc_id: str) -> object: ...  # Ragtune.click returns whether it recorded


USER_KINDS: tuple[str, ...] = ("pbm", "cascade", "uninformative")
"""The kinds of simulated users :attr:`ClickModel.users` accepts."""

CLICK_MODEL_PRESETS: tuple[str, ...] = ("pbm", "trust-cascade", "uninformative")
"""The preset names :func:`click_model` accepts."""


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class ClickModel:
    """Parameters of the simulated users.

    Attributes:
        top_k: Results asked for and looked at per search (>= 1).
        eta: Position-bias exponent of ``"pbm"`` users: rank ``r`` is looked at with probability
            ``(1 / r) ** eta`` (>= 0; 0 looks at every rank). Unused by the other kinds.
        p_relevant: Probability of clicking a looked-at relevant result, in [0, 1].
        p_noise: Probability of clicking a looked-at non-relevant result before trust bias, in [0, 1].
        seed: Seed of the users' random draws.
        users: The kind of users, one of :data:`USER_KINDS`: ``"pbm"``, ``"cascade"`` or
            ``"uninformative"`` (see the module docstring).
        trust: Trust bias (>= 0, 0 = off) of ``"pbm"`` and ``"cascade"`` users: a non-relevant
            result at rank ``r`` is clicked with ``min(1, p_noise * (1 + trust / r))``.
        p_stop: Probability that a ``"cascade"`` user stops scanning after a click, in [0, 1].
            Unused by the other kinds.

    Raises:
        ConfigError: A parameter is out of range or ``users`` is unknown.
    """

    top_k: int = 10
    eta: float = 1.0
    p_relevant: float = 0.9
    p_noise: float = 0.05
    seed: int = 0
    users: str = "pbm"
    trust: float = 0.0
    p_stop: float = 0.7

    def __post_init__(self) -> None:
        if not _is_int(self.top_k) or self.top_k < 1:
            raise ConfigError(f"ClickModel.top_k must be an integer >= 1, got {self.top_k!r}")
        if not _is_real(self.eta) or not math.isfinite(self.eta) or self.eta < 0:
            raise ConfigError(f"ClickModel.eta must be a finite number >= 0, got {self.eta!r}")
        for name in ("p_relevant", "p_noise", "p_stop"):
            v = getattr(self, name)
            if not _is_real(v) or not 0 <= v <= 1:
                raise ConfigError(f"ClickModel.{name} must be a probability in [0, 1], got {v!r}")
        if not _is_real(self.trust) or not math.isfinite(self.trust) or self.trust < 0:
            raise ConfigError(f"ClickModel.trust must be a finite number >= 0 (0 = no trust bias), got {self.trust!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"ClickModel.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.users, str) or self.users not in USER_KINDS:
            raise ConfigError(f"ClickModel.users must be one of {', '.join(map(repr, USER_KINDS))}, got {self.users!r}")

    def examine(self, rank: int) -> float:
        """Probability that a ``"pbm"`` user looks at 1-based ``rank``: ``(1 / rank) ** eta``."""
        return float((1.0 / rank) ** self.eta)

    def noise(self, rank: int) -> float:
        """Probability of clicking a looked-at non-relevant result at 1-based ``rank``.

        ``min(1, p_noise * (1 + trust / rank))``; exactly ``p_noise`` when ``trust`` is 0.
        """
        if self.trust == 0:
            return self.p_noise
        return min(1.0, self.p_noise * (1.0 + self.trust / rank))


def click_model(users: str, seed: int) -> ClickModel:
    """A ready :class:`ClickModel` for a preset name.

    Presets:
        * ``"pbm"``: today's defaults, ``ClickModel(seed=seed)`` (position-based, ``eta`` 1,
          ``p_relevant`` 0.9, ``p_noise`` 0.05, no trust bias, ``top_k`` 10).
        * ``"trust-cascade"``: cascade users with trust bias, ``users="cascade"``, ``trust`` 1.0,
          ``p_noise`` 0.1, ``p_relevant`` 0.9, ``p_stop`` 0.7, ``top_k`` 10.
        * ``"uninformative"``: one uniformly random click per search, ``top_k`` 10.

    Args:
        users: One of :data:`CLICK_MODEL_PRESETS`.
        seed: Seed of the users' random draws.

    Returns:
        The click model.

    Raises:
        ConfigError: ``users`` is not a preset name.
    """
    if users == "pbm":
        return ClickModel(seed=seed)
    if users == "trust-cascade":
        return ClickModel(seed=seed, users="cascade", trust=1.0, p_noise=0.1, p_relevant=0.9, p_stop=0.7)
    if users == "uninformative":
        return ClickModel(seed=seed, users="uninformative")
    raise ConfigError(f"unknown click model preset {users!r}: use one of {', '.join(map(repr, CLICK_MODEL_PRESETS))}")


def draw_sessions(qids: Sequence[str], n_sessions: int, *, zipf_s: float = 1.0, seed: int) -> list[str]:
    """Draw a stream of query ids with Zipf popularity: a few are asked many times, most rarely.

    The distinct ``qids`` are sorted, shuffled with ``seed``, and the one at 1-based place ``i`` of
    the shuffle gets weight ``1 / i ** zipf_s``; ``n_sessions`` ids are drawn with replacement. The
    result depends only on the set of ``qids``, ``n_sessions``, ``zipf_s`` and ``seed``.

    Args:
        qids: The query ids to draw from (duplicates count once).
        n_sessions: How many sessions (ids) to draw, >= 0.
        zipf_s: The Zipf exponent, > 0; larger concentrates the sessions on fewer queries.
        seed: Seed of the shuffle and the draws.

    Returns:
        ``n_sessions`` query ids, in session order, with repeats.

    Raises:
        ConfigError: ``n_sessions`` < 0, ``zipf_s`` <= 0, ``qids`` is a string, or ``qids`` is empty
            while ``n_sessions`` > 0.
    """
    if not _is_int(n_sessions) or n_sessions < 0:
        raise ConfigError(f"draw_sessions: n_sessions must be an integer >= 0, got {n_sessions!r}")
    if not _is_real(zipf_s) or not math.isfinite(zipf_s) or zipf_s <= 0:
        raise ConfigError(f"draw_sessions: zipf_s must be a finite number > 0, got {zipf_s!r}")
    if isinstance(qids, str):
        raise ConfigError(f"draw_sessions: qids must be a sequence of query ids, got the string {qids!r}")
    order = sorted(set(qids))
    if not order:
        if n_sessions == 0:
            return []
        raise ConfigError(f"draw_sessions: qids is empty, cannot draw n_sessions={n_sessions} sessions from it")
    rng = random.Random(seed)
    rng.shuffle(order)
    weights = [1.0 / (i**zipf_s) for i in range(1, len(order) + 1)]
    return rng.choices(order, weights=weights, k=n_sessions)


def _click(rt: SearchApp, out: dict[str, int], query_id: str, doc_id: str, relevant: bool) -> None:
    rt.click(query_id, doc_id)
    out["clicks"] += 1
    out["relevant_clicks" if relevant else "noise_clicks"] += 1


def simulate_users(
    rt: SearchApp,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    qids: Sequence[str],
    model: ClickModel | None = None,
) -> dict[str, int]:
    """Play one session per entry of ``qids``: search (logged), then click per the click model.

    ``qids`` may repeat (see :func:`draw_sessions`); each entry is its own search and session. A
    search may return fewer than ``top_k`` hits; only the first ``top_k`` are ever looked at. A search
    whose results carry no ``query_id`` (not logged) is counted but gets no clicks and uses no random
    draws. A doc counts as relevant when its grade in ``qrels[qid]`` is > 0.

    Args:
        rt: The Ragtune to play against; only ``rt.search(text, k=..., log=True)`` and
            ``rt.click(query_id, doc_id)`` are called.
        queries: ``{query_id: text}``.
        qrels: ``{query_id: {doc_id: grade}}``; a query missing from it has no relevant doc.
        qids: The sessions, as query ids into ``queries``, in order.
        model: The simulated users (default ``ClickModel()``, position-based).

    Returns:
        Counts: ``sessions`` (searches made), ``clicks`` (made through ``rt.click``),
        ``relevant_clicks``, ``noise_clicks`` (on docs not relevant) and ``unlogged_sessions``
        (searches without a ``query_id``, so without clicks).

    Raises:
        InputError: A query id of ``qids`` is not in ``queries``.
    """
    if model is None:
        model = ClickModel()
    rng = random.Random(model.seed)
    out = {"sessions": 0, "clicks": 0, "relevant_clicks": 0, "noise_clicks": 0, "unlogged_sessions": 0}
    for qid in qids:
        if qid not in queries:
            raise InputError(f"simulate_users: query id {qid!r} is not in queries ({len(queries)} queries)")
        hits = rt.search(queries[qid], k=model.top_k, log=True)
        out["sessions"] += 1
        query_id = hits.query_id
        if query_id is None:
            out["unlogged_sessions"] += 1
            continue
        rels = qrels.get(qid, {})
        shown = list(hits)[: model.top_k]

        if model.users == "uninformative":
            if shown:
                doc_id = shown[rng.randrange(len(shown))].doc_id
                _click(rt, out, query_id, doc_id, rels.get(doc_id, 0) > 0)
        elif model.users == "cascade":
            for hit in shown:
                relevant = rels.get(hit.doc_id, 0) > 0
                if rng.random() < (model.p_relevant if relevant else model.noise(hit.rank)):
                    _click(rt, out, query_id, hit.doc_id, relevant)
                    if rng.random() < model.p_stop:
                        break
        else:  # pbm: the draw order (examine, then click) is the original simulator's, kept for reproducibility
            for hit in shown:
                if rng.random() >= model.examine(hit.rank):
                    continue
                relevant = rels.get(hit.doc_id, 0) > 0
                if rng.random() < (model.p_relevant if relevant else model.noise(hit.rank)):
                    _click(rt, out, query_id, hit.doc_id, relevant)
    return out
