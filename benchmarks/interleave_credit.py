"""How sensitive is the trial's interleaving? Win rates of a query-tier trial under two credit rules.

    python benchmarks/interleave_credit.py --dataset ../shared/datasets/scifact --out benchmarks/results/interleave_credit.json

Train queries only (the test split is never read). Simulated PBM users ask two thirds of the train
queries under the base model; a ``refresh --mode query`` turns their clicks into a query-tier
candidate, started as a trial. Then, for the other third of the train queries (never asked), the
serving and the trial rankings are team-draft interleaved ``--repeats`` times each and clicked by
the same kind of users; each search is credited twice: counting every click (plain team-draft), and
leaving out clicks on the rankings' common prefix (what ragtune does). Reported per rule: wins,
losses, ties, the trial's win rate among decided searches and decided searches per interleaved
search; with ``--users uninformative`` the same for clicks that carry no information (both rules
should give 50%).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from closed_loop import HERE, base_workspace, dev_split  # the script's own folder is on sys.path

from ragtune import Ragtune, RagtuneConfig
from ragtune.evaluate import load_beir_qrels, load_beir_queries
from ragtune.interleave import credit, team_draft
from ragtune.serving import ServingVersion
from ragtune.simulate import CLICK_MODEL_PRESETS, click_model, simulate_users


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", choices=CLICK_MODEL_PRESETS, default="pbm", help="Who clicks the interleaved lists.")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    work = HERE / "work" / "interleave-credit"
    base_workspace(args.dataset, work)
    RagtuneConfig().with_overrides({"refresh.min_new_events": 1}).save(work / "config.json")
    rt = Ragtune(work, progress=False)
    queries = load_beir_queries(args.dataset)
    asked, asked_qrels, judged = dev_split(load_beir_qrels(args.dataset, "train"), args.seed)
    simulate_users(rt, queries, asked_qrels, asked, click_model("pbm", args.seed))
    report = rt.refresh(mode="query", force=True)
    if report.status != "trial_started":
        raise SystemExit(f"no trial to measure: {report.status}: {report.reason}")
    state = rt.ws.read_trial()
    assert state is not None
    serving, trial = rt.serving(), ServingVersion(rt.ws, rt.config, state["version"])
    qids = sorted(judged)
    raw = serving.embedder.encode_raw_queries([queries[q] for q in qids])
    a_vecs, b_vecs = serving.embedder.transform_queries(raw), trial.embedder.transform_queries(raw)
    users = click_model(args.users, args.seed)
    rng = random.Random(args.seed)
    counts = {rule: {"win": 0, "loss": 0, "tie": 0, "none": 0} for rule in ("every_click", "without_common_prefix")}
    same_top = 0
    for i, q in enumerate(qids):
        a, _ = serving.ranking(a_vecs[i], 10)
        b, _ = trial.ranking(b_vecs[i], 10)
        same_top += bool(a and b and a[0] == b[0])
        for _ in range(args.repeats):
            for rule, prefix in (("every_click", False), ("without_common_prefix", True)):
                merged = team_draft(a, b, 10, rng, common_prefix=prefix)
                shown = [d for d, _ in merged]
                if users.users == "uninformative":
                    clicks = [rng.choice(shown)] if shown else []
                else:
                    clicks = [
                        d
                        for r, d in enumerate(shown, 1)
                        if rng.random() < users.examine(r) and rng.random() < (users.p_relevant if judged[q].get(d, 0) > 0 else users.noise(r))
                    ]
                counts[rule][credit(dict(merged), clicks)] += 1
    n = len(qids) * args.repeats
    rules = {
        rule: {**c, "win_rate": round(c["win"] / max(1, c["win"] + c["loss"]), 4), "decided_per_search": round((c["win"] + c["loss"]) / n, 4)} for rule, c in counts.items()
    }
    result = {
        "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]),
        "users": args.users,
        "judged_train_queries": len(qids),
        "interleaved_searches": n,
        "same_rank_1": round(same_top / len(qids), 4),
        "trial_check": report.check.to_dict() if report.check else None,
        "rules": rules,
        "note": "every_click: plain team-draft (every position drafted); without_common_prefix: ragtune's rule; each rule gets its own interleaved lists and clicks",
        "total_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
