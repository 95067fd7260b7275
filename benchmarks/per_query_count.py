"""How many decided searches should one query count in a trial? Replays logged trials under each cap.

    python benchmarks/per_query_count.py --workspaces 'loop-auto-*' 'loop-full-pbm-*' 'loop-lora-pbm-s0-*' \
        --out benchmarks/results/per_query_count.json

Reads the feedback logs that ``closed_loop.py`` runs leave in ``benchmarks/work/loop-*`` (their
trials' interleaved searches of *train* queries: which documents each team showed and what the
simulated users clicked) and counts each trial again with each query (normalised text) counted in
at most its first ``K`` decided searches, ``K`` in 1, 2, 3, 5, 10 and unlimited (every search counted:
the rule before ``trial.MAX_DECIDED_PER_QUERY``). For each ``K`` and trial: the wins and losses
counted over its logged searches (at most ``trial.max_searches``), their z-score ``(wins - losses) /
sqrt(wins + losses)`` (how clearly users preferred one side), and the verdict the test would have
given, looked at every ``--look`` searches as the closed loop does; a trial that would still be
running when its log ends is ``"continue"`` and ``cut_short`` (its log stops where the real trial
was decided, under the count of its time: every search). The
candidate's and the serving version's test nDCG@10, from the run's JSON, are recorded beside each
trial for the reader; the replay does not read them. Writes the JSON with this command.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from ragtune.config import TrialConfig
from ragtune.feedback import FeedbackLog, TrialSearch
from ragtune.trial import decide, tally

HERE = Path(__file__).resolve().parent
CAPS: list[int | None] = [1, 2, 3, 5, 10, None]


def replay(searches: list[TrialSearch], cap: int | None, config: TrialConfig, look: int) -> dict[str, Any]:
    """The verdict and counts of one trial's logged searches with each query counted in at most ``cap`` decided searches."""
    limit = cap if cap is not None else len(searches) + 1
    verdict, at = "continue", len(searches)
    for end in [*range(look, len(searches), look), len(searches)]:
        budget = tally(searches[: config.max_searches], max_per_query=limit) if end > config.max_searches else None
        decision = decide(tally(searches[:end], max_per_query=limit), config, budget)
        if decision.verdict != "continue":
            verdict, at = decision.verdict, end
            break
    counts = tally(searches[: config.max_searches], max_per_query=limit)
    n = counts.wins + counts.losses
    return {
        "verdict": verdict, "at_searches": at, "cut_short": verdict == "continue" and len(searches) < config.max_searches,
        "wins": counts.wins, "losses": counts.losses, "repeats": counts.repeats, "z": round((counts.wins - counts.losses) / math.sqrt(n), 3) if n else 0.0,
    }  # fmt: skip


def run_json(results: Path, workspace: Path) -> dict[str, Any] | None:
    """The closed-loop JSON that made ``workspace`` (``loop-MODE-USERS-sSEED-test-TAG``), if committed."""
    parts = workspace.name.split("-")
    seed = next((p for p in parts if p.startswith("s") and p[1:].isdigit()), None)
    if seed is None:
        return None
    mode, users = parts[1], "-".join(parts[2 : parts.index(seed)])
    path = results / f"{mode}_{users}_{seed}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=HERE / "work", help="Folder holding the closed loop's loop-* workspaces.")
    parser.add_argument("--workspaces", nargs="+", default=["loop-*"], help="Name patterns of the workspaces to read (default: all).")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "trials", help="Folder holding their JSONs.")
    parser.add_argument("--look", type=int, default=50, help="Searches between looks at the test (the closed loop's interval).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config = TrialConfig()
    trials: list[dict[str, Any]] = []
    for ws in sorted({w for pattern in args.workspaces for w in args.work.glob(pattern)}):
        db = ws / "feedback.sqlite"
        if not db.is_file():
            continue
        run = run_json(args.results, ws) or {}
        known = {t["id"]: t for t in run.get("trials", [])}
        served = {r["version"]: r["ndcg@10"] for r in run.get("rounds", [])}
        log = FeedbackLog(db)
        ids = list(dict.fromkeys(r.trial for r in log.records() if r.trial))
        for trial_id in ids:
            searches = log.trial_searches(trial_id)
            meta = known.get(trial_id, {})
            row: dict[str, Any] = {
                "workspace": ws.name, "trial": trial_id, "searches_logged": len(searches), "verdict_logged": meta.get("verdict"),
                "test_candidate": meta.get("test_candidate"), "test_serving": served.get(meta.get("baseline", "")),
                "by_cap": {str(cap): replay(searches, cap, config, args.look) for cap in CAPS},
            }  # fmt: skip
            trials.append(row)
            print(row["workspace"], trial_id, " ".join(f"{c}:{v['verdict'][0]}{v['at_searches']}({v['wins']}/{v['losses']}) z={v['z']}" for c, v in row["by_cap"].items()), file=sys.stderr)
    users_of = {t["workspace"]: ("uninformative" if "uninformative" in t["workspace"] else "trust-cascade" if "trust-cascade" in t["workspace"] else "pbm") for t in trials}
    summary: dict[str, Any] = {}
    for users in sorted(set(users_of.values())):
        rows = [t for t in trials if users_of[t["workspace"]] == users]
        summary[users] = {
            str(cap): {
                "trials": len(rows),
                "mean_z": round(statistics.fmean(t["by_cap"][str(cap)]["z"] for t in rows), 3),
                "promoted": sum(t["by_cap"][str(cap)]["verdict"] == "promote" for t in rows),
                "dropped": sum(t["by_cap"][str(cap)]["verdict"] == "drop" for t in rows),
                "cut_short": sum(t["by_cap"][str(cap)]["cut_short"] for t in rows),
            }
            for cap in CAPS
        }
        tested = [t for t in rows if t["test_candidate"] is not None and t["test_serving"] is not None]
        summary[users]["candidates_better_on_test"] = f"{sum(t['test_candidate'] > t['test_serving'] for t in tested)} of {len(tested)} with test figures"
    out = {
        "command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "logs_counted_under": "every interleaved search (the rule before trial.MAX_DECIDED_PER_QUERY): each log stops where that rule decided its trial, so a replay still undecided there is cut short",
        "z": "(wins - losses) / sqrt(wins + losses) over at most the first trial.max_searches searches; mean_z is its plain mean over a group's trials",
        "caps": [str(c) for c in CAPS], "look": args.look, "trial_config": {"alpha": config.alpha, "min_decided": config.min_decided, "max_searches": config.max_searches},
        "summary": summary, "trials": trials,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
