"""Exact power of the trial's test: the probability that a trial is promoted, and how many decided
searches it takes, for a given win rate of decided searches, under ragtune's rule and under the
sequential test alone (the rule before the budget's sign test was added).

No model, no data: each decided search is won with probability ``p``, independently; the verdict is
read after every decided search (the most often a trial can be looked at); the budget is reached
after ``--decided`` decided searches. Dynamic programming over (wins, losses), so the figures are
exact, not sampled. ``p = 0.5`` gives the false-promotion rate.

    python benchmarks/trial_power.py --decided 180,420 --out benchmarks/results/trial_power.json
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

from ragtune.config import TrialConfig
from ragtune.trial import TrialCounts, decide, evidence

WIN_RATES = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def run(verdict_of: Callable[[int, int], str], horizon: int, p: float) -> dict[str, Any]:
    """Promotion probability and the median decided searches to a promotion (among promoted trials)."""
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
    median, acc = None, 0.0
    for n, q in promoted_at:
        acc += q
        if total and acc >= total / 2:
            median = n
            break
    return {"p": p, "promoted": round(total, 4), "median_decided_to_promotion": median}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decided", default="180,420", help="Decided searches in the budget, comma-separated.")
    ap.add_argument("--alpha", type=float, default=0.05)
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

        for name, rule in (("ragtune (alpha/2 sequential + alpha/2 sign test at the budget)", ragtune_rule), ("sequential test alone at alpha", sequential_only)):
            for p in WIN_RATES:
                row = {"decided_in_budget": horizon, "rule": name, **run(rule, horizon, p)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "alpha": args.alpha, "rows": rows, "total_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    assert all(r["promoted"] <= args.alpha + 1e-9 for r in rows if r["p"] == 0.5), "false-promotion rate above alpha"


if __name__ == "__main__":
    main()
