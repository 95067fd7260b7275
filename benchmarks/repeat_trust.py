"""Do repeated clicks on the same result outweigh the per-rank click-noise posterior? (dev split only)

    python benchmarks/repeat_trust.py --dataset ../shared/datasets/scifact --users pbm,trust-cascade,deep \
        --seeds 0,1,2 --out benchmarks/results/dev/repeat_trust.json

The click-noise correction (``ragtune.mining.click_trust``) reads the noise rate from the deepest
ranks, so a click there is mostly read as noise, even when users keep opening the same deep result
for the same query. ``ragtune.mining.repeat_trusted`` keeps the clicks of a (query, document) pair
whole when it was clicked in more of its query's searches than the noise rate explains. This
compares one query-tier candidate made without that rule (``ragtune.mining.REPEAT_LEVEL = 0``) and
one with it, from the same log.

For each kind of simulated users and seed, users ask two thirds of the *train* queries
(``closed_loop.dev_split``; ``--sessions`` searches with Zipf popularity, all under the base model)
and the other third judges: the test split is never consulted. Users: ``pbm`` and
``trust-cascade`` (``ragtune.simulate`` presets) and ``deep``: users who look at every shown result
and open the relevant ones wherever they are (position-based with ``eta`` 0), with the same 5%
click noise as ``pbm``. ``gate.confidence`` is 0 so that every candidate is made and measured.
Writes the JSON with this command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from closed_loop import HERE, base_workspace, dev_split, version_ndcg  # the script's own folder is on sys.path

import ragtune.mining
from ragtune import Ragtune, RagtuneConfig
from ragtune.evaluate import load_beir_qrels, load_beir_queries
from ragtune.simulate import ClickModel, click_model, draw_sessions, simulate_users


def users_model(users: str, seed: int) -> ClickModel:
    if users == "deep":
        return ClickModel(seed=seed, users="pbm", eta=0.0, p_noise=0.05, p_relevant=0.9)
    return click_model(users, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", default="pbm,trust-cascade,deep")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sessions", type=int, default=600)
    args = ap.parse_args()
    t0 = time.perf_counter()
    queries = load_beir_queries(args.dataset)
    train = load_beir_qrels(args.dataset, "train")
    default_level = ragtune.mining.REPEAT_LEVEL
    variants = {"per-rank posterior only": 0.0, f"repeated pairs kept whole (level {default_level:g})": default_level}
    rows: list[dict[str, Any]] = []
    for users in args.users.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            asked, asked_qrels, dev = dev_split(train, seed)
            log_ws = HERE / "work" / f"repeat-trust-{users}-s{seed}-{args.sessions}"
            if not (log_ws / "played").is_file():
                base_workspace(args.dataset, log_ws)
                rt = Ragtune(log_ws, progress=False)
                clicks = simulate_users(rt, queries, asked_qrels, draw_sessions(asked, args.sessions, seed=seed), users_model(users, seed))
                rt.feedback.close()
                (log_ws / "played").write_text(json.dumps(clicks))
            clicks = json.loads((log_ws / "played").read_text())
            base_rt = Ragtune(log_ws, progress=False)
            base = version_ndcg(base_rt, str(base_rt.current_version), queries, dev)
            row: dict[str, Any] = {"users": users, "seed": seed, "clicks": clicks, "dev_ndcg_base": round(base, 4), "variants": {}}
            for name, level in variants.items():
                ws = HERE / "work" / "repeat-trust-candidate"
                shutil.rmtree(ws, ignore_errors=True)
                shutil.copytree(log_ws, ws)
                RagtuneConfig.load(ws / "config.json").with_overrides({"gate.confidence": 0.0}).save(ws / "config.json")
                ragtune.mining.REPEAT_LEVEL = level
                try:
                    rt = Ragtune(ws, progress=False)
                    report = rt.refresh(mode="query", trial=False, force=True)
                finally:
                    ragtune.mining.REPEAT_LEVEL = default_level
                after = version_ndcg(rt, str(rt.current_version), queries, dev)
                check = report.check
                row["variants"][name] = {
                    "status": report.status,
                    "dev_ndcg": round(after, 4),
                    "dev_gain": round(after - base, 4),
                    "check_loglik": round(check.score, 4) if check and check.score is not None else None,
                    "check_loglik_serving": round(check.current, 4) if check and check.current is not None else None,
                    "click_noise": report.mined.get("click_noise"),
                    "untrusted_clicks": report.mined.get("untrusted_clicks"),
                    "repeat_trusted_pairs": report.mined.get("repeat_trusted_pairs"),
                }
                rt.feedback.close()
                print(users, seed, name, row["variants"][name], flush=True)
            rows.append(row)
    summary = {
        users: {name: round(statistics.mean(r["variants"][name]["dev_gain"] for r in rows if r["users"] == users), 4) for name in variants}
        for users in args.users.split(",")
    }
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "rows": rows, "mean_dev_gain": summary, "total_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
