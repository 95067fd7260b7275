"""How many searches does a trial need? Searches to a decision for real query-tier candidates, over seeds of traffic.

    python benchmarks/trial_speed.py --dataset ../shared/datasets/scifact --candidates 3 --traffic 10 \
        --out benchmarks/results/trial_speed.json

Each candidate is the closed loop's first round (``closed_loop.py``): simulated users (``--users``,
seeded by the candidate's seed) ask 600 train queries with Zipf popularity under the base model,
and ``refresh --mode query`` makes a query-tier candidate and starts its trial, with the defaults
(``trial.share`` 1, ``trial.alpha`` 0.05, ``trial.max_searches`` 1000). The candidate's test nDCG@10
is measured against the base model's (the test split is only judged, never asked). Then, for each
of ``--traffic`` seeds, a copy of that workspace gets fresh trial traffic through the public API
(``Ragtune.search`` and ``Ragtune.click``: train queries drawn with Zipf popularity, the same kind
of users), and ``Ragtune.trial()`` is read every ``--look`` searches until the test's verdict is
promote or drop; the searches it took are the figure. Writes the JSON with this command.
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

from closed_loop import HERE, base_workspace, version_ndcg  # the script's own folder is on sys.path

from ragtune import Ragtune
from ragtune.evaluate import load_beir_qrels, load_beir_queries
from ragtune.simulate import CLICK_MODEL_PRESETS, click_model, draw_sessions, simulate_users


def play_until_decided(ws: Path, queries: dict[str, str], qrels: dict[str, dict[str, int]], users: str, seed: int, look: int, budget: int) -> dict[str, Any]:
    """Fresh trial traffic on the workspace copy ``ws`` until the live trial's verdict is promote or drop."""
    rt = Ragtune(ws, progress=False)
    rt.server.rng.seed(seed)  # the interleaving coins: reproducible per traffic seed
    sessions = draw_sessions(sorted(qrels), budget, seed=seed)
    model = click_model(users, seed)
    status: dict[str, Any] | None = None
    for start in range(0, budget, look):
        model.seed = seed * 10_000 + start  # each chunk its own click draws (the sessions are one Zipf stream)
        simulate_users(rt, queries, qrels, sessions[start : start + look], model)
        status = rt.trial()
        if status is None or status["verdict"] != "continue":
            break
    assert status is not None
    return {k: status[k] for k in ("verdict", "wins", "losses", "ties", "searches", "p_value")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", choices=CLICK_MODEL_PRESETS, default="pbm")
    ap.add_argument("--candidates", type=int, default=3, help="Candidates (seeds 0..N-1 of the first round's users).")
    ap.add_argument("--traffic", type=int, default=10, help="Seeds of trial traffic per candidate.")
    ap.add_argument("--sessions", type=int, default=600, help="Searches that make each candidate.")
    ap.add_argument("--look", type=int, default=10, help="Searches between reads of the trial's verdict.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    queries = load_beir_queries(args.dataset)
    train, test = load_beir_qrels(args.dataset, "train"), load_beir_qrels(args.dataset, "test")
    work = HERE / "work" / f"trial-speed-{args.users}-{args.sessions}"  # runs of other settings can go side by side
    rows: list[dict[str, Any]] = []
    for c in range(args.candidates):
        ws = work / f"candidate-{c}"
        base_workspace(args.dataset, ws)
        rt = Ragtune(ws, progress=False)
        base_version = rt.current_version
        assert base_version is not None
        simulate_users(rt, queries, train, draw_sessions(sorted(train), args.sessions, seed=c), click_model(args.users, c))
        report = rt.refresh(mode="query")
        row: dict[str, Any] = {"candidate_seed": c, "status": report.status, "reason": report.reason}
        if report.status != "trial_started" or report.trial is None:
            rows.append(row)
            print(f"candidate {c}: no trial ({report.status}: {report.reason})", flush=True)
            continue
        max_searches = rt.config.trial.max_searches
        base = version_ndcg(rt, base_version, queries, test)
        cand = version_ndcg(rt, str(report.trial["version"]), queries, test)
        row.update(test_ndcg_base=round(base, 4), test_ndcg_candidate=round(cand, 4), test_gain=round(cand - base, 4), traffic=[])
        rt.feedback.close()
        for t in range(args.traffic):
            copy = work / f"candidate-{c}-traffic-{t}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(ws, copy)
            got = play_until_decided(copy, queries, train, args.users, 1000 + 100 * c + t, args.look, max_searches)
            row["traffic"].append({"seed": 1000 + 100 * c + t, **got})
            shutil.rmtree(copy, ignore_errors=True)
            print(f"candidate {c} (test {cand - base:+.4f}), traffic {t}: {got['verdict']} after {got['searches']} searches ({got['wins']} wins, {got['losses']} losses)", flush=True)
        rows.append(row)
    decided = [tr for r in rows for tr in r.get("traffic", [])]
    promoted = [tr["searches"] for tr in decided if tr["verdict"] == "promote"]
    result = {
        "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]),
        "users": args.users,
        "look": args.look,
        "candidates": rows,
        "summary": {
            "trials": len(decided),
            "promoted": len(promoted),
            "dropped": sum(tr["verdict"] == "drop" for tr in decided),
            "searches_to_promotion_median": statistics.median(promoted) if promoted else None,
            "searches_to_promotion": sorted(promoted),
            "promoted_within_300": sum(s <= 300 for s in promoted),
        },
        "total_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
