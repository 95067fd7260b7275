"""Does an assumed position-bias curve help when the log has no randomised traffic? (dev split only)

    python benchmarks/position_curve.py --dataset ../shared/datasets/scifact --users pbm,trust-cascade \
        --seeds 0,1,2 --out benchmarks/results/dev/position_curve.json

For each kind of simulated users and seed, users ask two thirds of the *train* queries
(``closed_loop.dev_split``; ``--sessions`` searches with Zipf popularity, all under the base model)
and the other third judges: the test split is never consulted. From that one log, ``refresh --mode
query --no-trial`` makes one query-tier candidate per variant of the propensities that weight each
click (``1 / propensity(rank)``): ``none`` (ragtune's rule without randomised traffic: every
propensity 1) and the curves ``(1 / rank) ** eta`` for each ``--eta`` (the rule ragtune had before,
with eta 1 as its default). The curves are put in place by wrapping the public
``ragtune.mining.estimate_propensities``. ``gate.confidence`` is 0 so that every candidate is made
and measured; the offline check's figures (cross-fitted log-likelihood of the held-out clicks,
candidate against serving) are recorded beside its dev nDCG@10. Writes the JSON with this command.
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

import numpy as np
from closed_loop import HERE, base_workspace, dev_split, version_ndcg  # the script's own folder is on sys.path

import ragtune.mining
from ragtune import Ragtune, RagtuneConfig
from ragtune.evaluate import load_beir_qrels, load_beir_queries
from ragtune.simulate import click_model, draw_sessions, simulate_users

_ESTIMATE = ragtune.mining.estimate_propensities


def use_curve(eta: float | None) -> None:
    """Make mining weight clicks by ``(1 / rank) ** eta`` (``None``: ragtune's own estimate)."""
    if eta is None:
        ragtune.mining.estimate_propensities = _ESTIMATE
        return
    exponent = float(eta)

    def curve(records: Any, max_rank: int = 100) -> tuple[np.ndarray, str]:
        ranks = np.arange(1, max_rank + 1, dtype=np.float64)
        return np.clip((1.0 / ranks) ** exponent, ragtune.mining.PROPENSITY_CLIP, 1.0), f"curve (1/rank)^{exponent:g}"

    ragtune.mining.estimate_propensities = curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", default="pbm,trust-cascade")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sessions", type=int, default=1200)
    ap.add_argument("--eta", default="1,0.5", help="Curves to compare with 'none'.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    queries = load_beir_queries(args.dataset)
    train = load_beir_qrels(args.dataset, "train")
    variants: list[float | None] = [None] + [float(e) for e in args.eta.split(",")]
    rows: list[dict[str, Any]] = []
    for users in args.users.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            asked, asked_qrels, dev = dev_split(train, seed)
            log_ws = HERE / "work" / f"position-curve-{users}-s{seed}-{args.sessions}"
            if not (log_ws / "played").is_file():
                base_workspace(args.dataset, log_ws)
                rt = Ragtune(log_ws, progress=False)
                clicks = simulate_users(rt, queries, asked_qrels, draw_sessions(asked, args.sessions, seed=seed), click_model(users, seed))
                rt.feedback.close()
                (log_ws / "played").write_text(json.dumps(clicks))
            clicks = json.loads((log_ws / "played").read_text())
            base_rt = Ragtune(log_ws, progress=False)
            base = version_ndcg(base_rt, str(base_rt.current_version), queries, dev)
            row: dict[str, Any] = {"users": users, "seed": seed, "clicks": clicks, "dev_ndcg_base": round(base, 4), "variants": {}}
            for eta in variants:
                ws = HERE / "work" / "position-curve-candidate"
                shutil.rmtree(ws, ignore_errors=True)
                shutil.copytree(log_ws, ws)
                RagtuneConfig.load(ws / "config.json").with_overrides({"gate.confidence": 0.0}).save(ws / "config.json")
                use_curve(eta)
                rt = Ragtune(ws, progress=False)
                report = rt.refresh(mode="query", trial=False, force=True)
                use_curve(None)
                check = report.check
                name = "none" if eta is None else f"eta={eta:g}"
                after = version_ndcg(rt, str(rt.current_version), queries, dev)
                row["variants"][name] = {
                    "status": report.status,
                    "dev_ndcg": round(after, 4),
                    "dev_gain": round(after - base, 4),
                    "check_loglik": round(check.score, 4) if check and check.score is not None else None,
                    "check_loglik_serving": round(check.current, 4) if check and check.current is not None else None,
                    "click_noise": report.mined.get("click_noise"),
                    "click_noise_source": report.mined.get("click_noise_source"),
                }
                rt.feedback.close()
                print(users, seed, name, row["variants"][name], flush=True)
            rows.append(row)
    summary = {
        users: {
            name: round(statistics.mean(r["variants"][name]["dev_gain"] for r in rows if r["users"] == users), 4)
            for name in rows[0]["variants"]
        }
        for users in args.users.split(",")
    }
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "rows": rows, "mean_dev_gain": summary, "total_s": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
