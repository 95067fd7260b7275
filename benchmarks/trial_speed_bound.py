"""How fast could any test decide the trials of ``trial_speed.py``? An upper bound on the share of
trials a test could promote within ``--searches`` interleaved searches.

Reads a ``trial_speed.py`` result and, per candidate and pooled, takes the observed win rate of
decided searches and the decided searches per interleaved search. An oracle that knows in advance
how many decided searches ``--searches`` searches bring (their expected number) and runs one exact
one-sided sign test at ``--alpha`` on them, looking once, promotes with the probability printed as
``oracle_power``. No sequential test can beat a fixed-sample test told the sample size beforehand,
and the observed win rates are biased upwards (each trial stopped when it was ahead), so the bound
is optimistic: the share of such candidates decided within ``--searches`` searches cannot be made
much higher than this with team-draft credit at these click rates; only more decided searches per
search (users who click more, or a more sensitive credit) can.

    python benchmarks/trial_speed_bound.py benchmarks/results/trial_speed_1800.json --searches 300 \
        --out benchmarks/results/trial_speed_bound.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scipy.stats import binom
from trial_power import critical  # benchmarks/ is on the path of a script run from it


def oracle_power(win_rate: float, decided: int, alpha: float) -> float:
    """Power of the exact one-sided sign test at ``alpha`` with ``decided`` decided searches."""
    if decided <= 0:
        return 0.0
    return float(binom.sf(critical(decided, alpha) - 1, decided, win_rate))


def bound(name: str, trials: list[dict[str, Any]], searches: int, alpha: float) -> dict[str, Any]:
    wins = sum(t["wins"] for t in trials)
    losses = sum(t["losses"] for t in trials)
    seen = sum(t["searches"] for t in trials)
    rate = wins / max(wins + losses, 1)
    per_search = (wins + losses) / max(seen, 1)
    decided = round(searches * per_search)
    within = sum(1 for t in trials if t["verdict"] == "promote" and t["searches"] <= searches)
    return {
        "candidate": name, "trials": len(trials), "win_rate": round(rate, 4), "decided_per_search": round(per_search, 4),
        "decided_in_searches": decided, "oracle_power": round(oracle_power(rate, decided, alpha), 4),
        "ragtune_promoted_within": within, "ragtune_share_within": round(within / max(len(trials), 1), 4),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("speed", type=Path, help="A trial_speed.py result JSON.")
    ap.add_argument("--searches", type=int, default=300, help="Interleaved searches the trial may take.")
    ap.add_argument("--alpha", type=float, default=0.05, help="The oracle test's false-promotion rate (ragtune's trial.alpha).")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    speed = json.loads(args.speed.read_text(encoding="utf-8"))
    rows = [bound(f"seed {c['candidate_seed']} (test {c['test_gain']:+.4f})", c["traffic"], args.searches, args.alpha) for c in speed["candidates"]]
    rows.append(bound("pooled", [t for c in speed["candidates"] for t in c["traffic"]], args.searches, args.alpha))
    for row in rows:
        print(json.dumps(row), flush=True)
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "source": speed["command"], "searches": args.searches, "alpha": args.alpha, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
