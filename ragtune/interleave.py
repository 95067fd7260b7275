"""Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008): pure functions, no I/O.

Two rankings, the serving one (team ``"serving"``) and the trial's (team ``"trial"``), are merged
into one result list as two captains pick players: the team with fewer picks so far picks next (a
coin flip breaks a tie), taking its highest-ranked document not already picked. Each shown document
belongs to the team that picked it; a user's click credits that team. Because the coin decides which
team fills each pair of positions, a click that carries no information about relevance (a bot, a
curious user, a user who always clicks rank 1) credits either team with probability one half: such
traffic cannot make a trial win.

The top results on which both rankings agree, rank for rank (their common prefix), are shown first
as they are and belong to neither team (``"shared"``): a click there says nothing about which
ranking is better and would only add a coin flip to the outcome, so leaving it out lets a trial see
a real difference in fewer searches (``benchmarks/interleave_credit.py``). The drafting starts after
them, so the coin still decides every other position.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

__all__ = ["SERVING", "SHARED", "TRIAL", "Outcome", "credit", "team_draft"]

#: Team names as logged with each impression.
SERVING = "serving"
TRIAL = "trial"
SHARED = "shared"

Outcome = str  # "win" (the trial's team has more credited clicks), "loss", "tie" or "none" (no credited click)


def team_draft(serving: Sequence[str], trial: Sequence[str], k: int, rng: random.Random, *, common_prefix: bool = True) -> list[tuple[str, str]]:
    """Interleave two rankings of document ids into at most ``k`` ``(doc_id, team)`` pairs.

    The rankings' common prefix comes first, as team :data:`SHARED`. After it, as many positions as
    the shorter ranking has left are drafted: the team with fewer picks so far picks next (a coin
    flip breaks a tie), taking its highest-ranked document not already picked, so each team's
    documents appear in the order of its own ranking and at every prefix the two teams' pick counts
    differ by at most one. That many picks are always possible whatever the coins say, so which
    positions are drafted never depends on the coins, and a click that depends only on positions
    (however many per search) credits either team with the same probability. The rest of the list,
    when the rankings hold more documents between them, is filled as :data:`SHARED` (the serving
    ranking's remaining documents first): a longer ranking wins nothing by being longer.

    Args:
        serving: The serving version's ranking (best first), without duplicates.
        trial: The trial version's ranking (best first), without duplicates.
        k: The length of the list to show.
        rng: The source of the coin flips (a fresh draw per search).
        common_prefix: Show the common prefix as :data:`SHARED` (off: plain team-draft, every
            position drafted).
    """
    out: list[tuple[str, str]] = []
    picked: set[str] = set()
    heads = {SERVING: 0, TRIAL: 0}
    lists = {SERVING: serving, TRIAL: trial}
    count = {SERVING: 0, TRIAL: 0}

    def next_of(team: str) -> str | None:
        lst, i = lists[team], heads[team]
        while i < len(lst) and lst[i] in picked:
            i += 1
        heads[team] = i
        return lst[i] if i < len(lst) else None

    while common_prefix and len(out) < min(k, len(serving), len(trial)) and serving[len(out)] == trial[len(out)]:
        out.append((serving[len(out)], SHARED))
        picked.add(out[-1][0])
    # after d drafted picks each ranking has lost at most d of its documents, so each can make pick
    # d + 1 while d < its length past the prefix: the drafted positions are the same for any coins
    drafted = min(len(serving), len(trial)) - len(out)
    while len(out) < k and drafted > 0:
        if count[SERVING] != count[TRIAL]:
            team = SERVING if count[SERVING] < count[TRIAL] else TRIAL
        else:
            team = SERVING if rng.random() < 0.5 else TRIAL
        doc = next_of(team)
        assert doc is not None  # guaranteed by the bound above
        out.append((doc, team))
        picked.add(doc)
        count[team] += 1
        drafted -= 1
    while len(out) < k:  # the rest credits nobody
        doc = next_of(SERVING) or next_of(TRIAL)
        if doc is None:
            break
        out.append((doc, SHARED))
        picked.add(doc)
    return out


def credit(teams: dict[str, str], chosen: Iterable[str]) -> Outcome:
    """The outcome of one interleaved search: which team's documents the user chose more of.

    Args:
        teams: Each shown document's team.
        chosen: The documents the user clicked or rated up (repeats count once; documents that were
            not shown, or shown as :data:`SHARED`, credit nobody).
    """
    got = {SERVING: 0, TRIAL: 0}
    for doc in set(chosen):
        team = teams.get(doc)
        if team in got:
            got[team] += 1
    if got[TRIAL] == got[SERVING]:
        return "tie" if got[TRIAL] else "none"
    return "win" if got[TRIAL] > got[SERVING] else "loss"
