"""Where do a trial's wins and losses come from? Splits each logged trial's searches by what each side had learned of the query.

    python benchmarks/trial_queries.py --workspaces 'loop-query-pbm-s1-test' --out FILE.json

Reads the workspaces that ``closed_loop.py`` runs leave in ``benchmarks/work/`` (their feedback logs
and ``refresh-log.jsonl``). A query-tier candidate is fitted on the feedback logged before its trial
started, and so was the serving version it is tried against (before *its* trial started; the base
version learned nothing). Each interleaved search of a trial falls in one class by its query
(normalised text):

- ``both``: some search of the query had a click before the serving version's trial started (both
  sides had learned from its clicks);
- ``candidate_only``: its first click came after that but before this trial started;
- ``neither``: no click before this trial started (both sides meet the query as a new one).

For each trial and class: interleaved searches, wins, losses, ties and searches without a credited
click, every decided search counted (no per-query cap: this is about where the evidence comes from,
not the test). Writes the JSON with this command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ragtune.feedback import FeedbackLog, normalize_query
from ragtune.interleave import credit

HERE = Path(__file__).resolve().parent
CLASSES = ("both", "candidate_only", "neither")


def split_workspace(ws: Path) -> list[dict[str, Any]]:
    """Each trial of one closed-loop workspace, its searches counted by class (see the module docstring)."""
    events = [json.loads(line) for line in (ws / "refresh-log.jsonl").read_text().splitlines() if line.strip()]
    started = {e["trial"]: e for e in events if e.get("event") == "trial_started"}
    started_at = {e["version"]: float(e["time"]) for e in started.values()}
    log = FeedbackLog(ws / "feedback.sqlite")
    first_click: dict[str, float] = {}
    with contextlib.closing(sqlite3.connect(f"file:{ws / 'feedback.sqlite'}?mode=ro", uri=True)) as conn:  # when each query was first clicked
        for text, ts in conn.execute("SELECT q.text, MIN(c.ts) FROM clicks c JOIN queries q ON q.qid = c.qid GROUP BY q.qid"):
            key = normalize_query(text)
            first_click[key] = min(first_click.get(key, math.inf), float(ts))
    out = []
    for trial, event in started.items():
        t_cand = float(event["time"])
        t_serv = started_at.get(event["baseline"])  # None: the base version, fitted on nothing
        counts: dict[str, Counter[str]] = {c: Counter() for c in CLASSES}
        for search in log.trial_searches(trial):
            seen = first_click.get(normalize_query(search.text), math.inf)
            cls = "both" if t_serv is not None and seen < t_serv else "candidate_only" if seen < t_cand else "neither"
            counts[cls]["searches"] += 1
            counts[cls][credit(search.teams, search.chosen)] += 1
        ended = next((e for e in events if e.get("trial") == trial and e.get("event") in ("trial_promoted", "trial_dropped")), None)
        out.append({
            "trial": trial, "candidate": event["version"], "serving": event["baseline"],
            "ended": ended["event"].removeprefix("trial_") if ended else "live at the end",
            **{c: {k: int(counts[c][k]) for k in ("searches", "win", "loss", "tie", "none")} for c in CLASSES},
        })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspaces", nargs="+", required=True, help="Glob patterns under benchmarks/work/.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="", help="How the workspaces were made (their closed_loop.py commands, the commit), kept in the JSON.")
    args = ap.parse_args()
    found = sorted({p for pat in args.workspaces for p in (HERE / "work").glob(pat) if (p / "refresh-log.jsonl").is_file()})
    if not found:
        sys.exit(f"no closed-loop workspace under {HERE / 'work'} matches {args.workspaces}")
    result = {
        "command": "python benchmarks/trial_queries.py " + shlex.join(sys.argv[1:]),
        "note": args.note,
        "workspaces": {p.name: split_workspace(p) for p in found},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, trials in result["workspaces"].items():
        print(name)
        for t in trials:
            cells = "  ".join(f"{c} {t[c]['win']}/{t[c]['loss']} of {t[c]['searches']}" for c in CLASSES)
            print(f"  {t['candidate']} vs {t['serving']} ({t['ended']}): {cells}")


if __name__ == "__main__":
    main()
