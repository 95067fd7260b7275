"""Exact power of the trial's test: the probability that a trial is promoted, and how many decided
searches it takes, for a given win rate of decided searches, under ragtune's rule, under the
sequential test alone (the rule before the budget's sign test was added), and under a
group-sequential sign test that ragtune does not use (yet): one-sided exact sign tests at fixed
checkpoints (every 10 decided searches from ``min_decided`` to 200, at one nominal level chosen so
that they spend at most 80% of alpha, Pocock's design), and at the budget a last one whose critical
value spends the rest exactly. Its checkpoints are counts of decided searches, not looks, so it is
as valid however often a trial is looked at; it would need the outcomes in the order they were
counted, not only their totals.

No model, no data: each decided search is won with probability ``p``, independently; the verdict is
read after every decided search (the most often a trial can be looked at); the budget is reached
after ``--decided`` decided searches. Dynamic programming over (wins, losses), so the figures are
exact, not sampled. ``p = 0.5`` gives the false-promotion rate; ``promoted_within_early`` is the
probability of a promotion within ``--early`` decided searches (43: what position-biased users
give in 300 interleaved searches, ``benchmarks/trial_speed_bound.py``).

    python benchmarks/trial_power.py --decided 180,420 --early 43 --out benchmarks/results/trial_power.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom

from ragtune.config import TrialConfig
from ragtune.trial import TrialCounts, decide, evidence

WIN_RATES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
CHECKPOINTS = tuple(range(20, 201, 10))  # the group-sequential test's interim looks, in decided searches
INTERIM_SHARE = 0.8  # of alpha, at most, spent by the interim looks


def critical(n: int, level: float) -> int:
    """The fewest wins in ``n`` decided searches whose one-sided sign-test p-value is at most ``level`` (``n + 1``: none)."""
    k = int(binom.isf(level, n, 0.5)) + 1
    while k > 0 and binom.sf(k - 2, n, 0.5) <= level:
        k -= 1
    return k


def crossing(looks: list[int], crits: list[int], p: float = 0.5) -> float:
    """Probability that wins reach ``crits[i]`` at some ``looks[i]`` decided searches (win rate ``p``)."""
    wins = np.zeros(looks[-1] + 2)
    wins[0] = 1.0
    n, total = 0, 0.0
    for look, c in zip(looks, crits, strict=True):
        while n < look:
            wins = np.concatenate(([wins[0] * (1 - p)], wins[1:] * (1 - p) + wins[:-1] * p))
            n += 1
        total += float(wins[c:].sum())
        wins[c:] = 0.0
    return total


def group_sequential(horizon: int, alpha: float, min_decided: int) -> tuple[list[int], list[int]]:
    """Checkpoints and critical wins: Pocock's constant nominal level on the interim looks, the rest of alpha at ``horizon``."""
    interim = [n for n in CHECKPOINTS if min_decided <= n < horizon]
    lo, hi = 0.0, alpha
    for _ in range(40):  # the largest nominal level whose interim looks spend at most INTERIM_SHARE of alpha
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if crossing(interim, [critical(n, mid) for n in interim]) <= INTERIM_SHARE * alpha else (lo, mid)
    crits = [critical(n, lo) for n in interim] if interim else []
    last = horizon + 1
    while last > 0 and crossing([*interim, horizon], [*crits, last - 1]) <= alpha:
        last -= 1
    return [*interim, horizon], [*crits, last]


def run(verdict_of: Callable[[int, int], str], horizon: int, p: float, early: int = 0) -> dict[str, Any]:
    """Promotion probability, within ``early`` decided searches too, and the median decided searches to a promotion (among promoted trials)."""
    alive = {(0, 0): 1.0}
    promoted_at: list[tuple[int, float]] = []
    for n in range(1, horizon + 1):
        nxt: dict[tuple[int, int], float] = {}
        for (w, lost), q in alive.items():
            nxt[(w + 1, lost)] = nxt.get((w + 1, lost), 0.0) + q * p
            nxt[(w, lost + 1)] = nxt.get((w, lost + 1), 0.0) + q * (1 - p)
        alive = {}
        got = 0.0
        for (w, lost), q in nxt.items():
            v = verdict_of(w, lost)
            if v == "promote":
                got += q
            elif v == "continue":
                alive[(w, lost)] = q
        if got:
            promoted_at.append((n, got))
    total = sum(q for _, q in promoted_at)
    within = sum(q for n, q in promoted_at if n <= early)
    median, acc = None, 0.0
    for n, q in promoted_at:
        acc += q
        if total and acc >= total / 2:
            median = n
            break
    return {"p": p, "promoted": round(total, 4), "promoted_within_early": round(within, 4), "median_decided_to_promotion": median}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decided", default="180,420", help="Decided searches in the budget, comma-separated.")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--early", type=int, default=43, help="Report promotions within this many decided searches too.")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    ev = functools.lru_cache(maxsize=None)(evidence)

    rows = []
    for horizon in (int(x) for x in args.decided.split(",")):
        cfg = TrialConfig(alpha=args.alpha, max_searches=horizon)

        def ragtune_rule(w: int, lost: int, cfg: TrialConfig = cfg) -> str:
            return decide(TrialCounts(searches=w + lost, wins=w, losses=lost), cfg).verdict

        def sequential_only(w: int, lost: int, horizon: int = horizon, cfg: TrialConfig = cfg) -> str:
            better, worse = ev(w, lost)
            if better >= 1 / args.alpha and w + lost >= cfg.min_decided:
                return "promote"
            if worse >= 1 / args.alpha or w + lost >= horizon:
                return "drop"
            return "continue"

        looks, crits = group_sequential(horizon, args.alpha, cfg.min_decided)
        at = dict(zip(looks, crits, strict=True))

        def checkpoints(w: int, lost: int, horizon: int = horizon, at: dict[int, int] = at) -> str:
            n = w + lost
            if n in at and w >= at[n]:
                return "promote"
            if (n in at and lost >= at[n]) or n >= horizon:  # mirrored: users prefer the serving version
                return "drop"
            return "continue"

        rules = (
            ("ragtune (alpha/2 sequential + alpha/2 sign test at the budget)", ragtune_rule),
            ("sequential test alone at alpha", sequential_only),
            ("group-sequential sign test (not used)", checkpoints),
        )
        for name, rule in rules:
            for p in WIN_RATES:
                row = {"decided_in_budget": horizon, "rule": name, **run(rule, horizon, p, args.early)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "alpha": args.alpha, "rows": rows, "total_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    assert all(r["promoted"] <= args.alpha + 1e-9 for r in rows if r["p"] == 0.5), "false-promotion rate above alpha"


if __name__ == "__main__":
    main()
