"""Does looking at a trial often raise its false-promotion rate when clicks arrive late? (simulation)

    python benchmarks/trial_peeking.py --runs 1000 --every 20 --out benchmarks/results/trial_peeking.json

Uninformative users: each interleaved search (two rankings with nothing in common, team-draft
interleaved by ``ragtune.interleave.team_draft``) gets a click on result 1 at once and on result 2
after the next look at the trial (one result of each team: a tie in the end). The trial is looked
at every ``--every`` searches with the library's ``tally`` and ``decide`` at the default settings,
until it is promoted or dropped. Two rules: ``recount`` reads every search's outcome afresh at each
look (the rule before this release: a search counted as won turns into a tie, and the next look
sees a fresh coin flip); ``keep`` keeps the outcome a look counted (``TrialSearch.counted``), as
``ragtune.trial.settle`` now does through ``FeedbackLog.keep_trial_outcomes``. The bound is
``trial.alpha`` (0.05). Writes the JSON with this command.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from ragtune.config import TrialConfig
from ragtune.feedback import TrialSearch
from ragtune.interleave import credit, team_draft
from ragtune.trial import decide, tally


def run(seed: int, every: int, keep: bool, config: TrialConfig) -> str:
    rng = random.Random(seed)
    searches: list[tuple[TrialSearch, str]] = []
    seq = 0
    serving, trial = [f"s{i}" for i in range(10)], [f"t{i}" for i in range(10)]
    while True:
        for _ in range(every):
            merged = team_draft(serving, trial, 10, rng)
            n = len(searches)
            searches.append((TrialSearch(f"q{n}", dict(merged), {merged[0][0]}, float(n), f"id{n}"), merged[1][0]))
        now = [s for s, _ in searches]
        budget = tally(now[: config.max_searches]) if len(now) > config.max_searches else None
        verdict = decide(tally(now), config, budget).verdict
        if verdict != "continue":
            return verdict
        for s, _ in searches:
            if keep and s.counted is None and (o := credit(s.teams, s.chosen)) in ("win", "loss", "tie"):
                s.counted, s.counted_seq, seq = o, seq, seq + 1
        for s, late in searches:  # the second click arrives after the look
            s.chosen.add(late)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    config = TrialConfig()
    rows = {}
    for rule, keep in (("recount", False), ("keep", True)):
        verdicts = [run(seed, args.every, keep, config) for seed in range(args.runs)]
        p = verdicts.count("promote") / args.runs
        rows[rule] = {"promoted": verdicts.count("promote"), "dropped": verdicts.count("drop"), "rate": round(p, 4), "se": round((p * (1 - p) / args.runs) ** 0.5, 4)}
        print(rule, rows[rule], flush=True)
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "runs": args.runs, "every": args.every,
              "alpha": config.alpha, "rules": rows, "total_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
