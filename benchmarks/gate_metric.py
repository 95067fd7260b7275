"""Does the gate's metric track the truth? Query-tier candidates judged on feedback vs on labelled queries.

    python benchmarks/gate_metric.py --dataset ../shared/datasets/scifact --seed 0 \
        --out benchmarks/results/dev/gate_metric_s0.json

Dev split only (the test split is never read): simulated users (ragtune.simulate) ask two thirds of
the train queries, all under the base model, as ``closed_loop.py --judge dev`` does; the other third
is the truth. Every query-tier candidate of a refresh is then fitted by 5-fold cross-fitting, as
``ragtune refresh --mode query`` does, and scored three ways on the feedback queries, each against
the base model, with the paired bootstrap win probability the gate would use:

- ``ndcg_pool``: nDCG@10 of the chosen docs over each query's pool (shown docs + base top 20);
- ``loglik_pool``: mean log-probability of the chosen docs under a softmax (scale 20) over the pool;
- ``loglik``: the same over the whole index (``gate.query_metric`` "loglik").

``truth`` is the candidate fitted on all feedback, nDCG@10 on the held-back third (and its cold part).
``loglik_fold_cold`` is what ``gate.cold_guard`` looks at: ``loglik`` over the feedback queries none
of whose chosen docs was chosen for a query their fold model was fitted on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from closed_loop import base_workspace, dense_run, evaluate, play_dev_users  # the script's own folder is on sys.path

from ragtune import Ragtune
from ragtune.embedder import Embedder
from ragtune.gate import LOGLIK_SCALE, GateSet, loglik_per_query, score_query_vectors, win_probability
from ragtune.mining import mine, normalize_query
from ragtune.refresh import _crossfit_query_candidates, _gate_sets

HERE = Path(__file__).resolve().parent


def pool_loglik(gs: GateSet, vecs: np.ndarray, ids: list[str], qv: np.ndarray) -> list[float]:
    """``loglik`` with the softmax over each query's pool instead of the whole index."""
    out = []
    for i, pool in enumerate(gs.pools):
        s = LOGLIK_SCALE * (vecs[pool] @ qv[i])
        lp = s - s.max() - np.log(np.exp(s - s.max()).sum())
        row = {ids[p]: j for j, p in enumerate(pool)}
        rel = {row[d]: w for d, w in gs.relevant[i].items() if w > 0 and d in row}
        total = sum(rel.values())
        out.append(float(sum(w * lp[j] for j, w in rel.items()) / total) if total else 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    work = HERE / "work" / f"gate-metric-s{args.seed}"
    base_workspace(args.dataset, work)  # closed_loop.py's cached index of the corpus, without feedback
    rt = Ragtune(work, progress=False)
    queries, _, dev, cold, _ = play_dev_users(rt, args.dataset, args.seed)  # the closed loop's rounds, all under the base model
    dev_ids = sorted(dev)
    serving, cfg = rt.serving(), rt.config
    records = rt.feedback.records()
    mined = mine(records, serving, cfg.mining, cfg.feedback, heldout_keys={normalize_query(r.text) for r in records}, train_on_heldout=True)
    gs = _gate_sets(rt, serving, list(mined.heldout))[0]
    vecs, ids = np.asarray(serving.vectors()), serving.docs.ids
    cur_q = serving.embedder.encode_queries(gs.queries)
    current = {
        "ndcg_pool": score_query_vectors(gs, serving, cur_q)["per_query"]["ndcg@10"],
        "loglik_pool": pool_loglik(gs, vecs, ids, cur_q),
        "loglik": loglik_per_query(gs, serving, cur_q),
    }

    def truth(emb: Embedder) -> tuple[float, float]:
        qv = emb.encode_queries([queries[q] for q in dev_ids])
        m = evaluate(dense_run(qv, vecs, ids, dev_ids), dev, cold)
        return m["ndcg@10"], m["ndcg@10_cold"]

    from ragtune.refresh import _cold_guard

    base_all, base_cold = truth(serving.embedder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        named, _ = _crossfit_query_candidates(rt, serving, mined, [h.query for h in mined.heldout], Path(tmp) / "q")
        for name, spec, oof in named:
            got = {
                "ndcg_pool": score_query_vectors(gs, serving, oof)["per_query"]["ndcg@10"],
                "loglik_pool": pool_loglik(gs, vecs, ids, oof),
                "loglik": loglik_per_query(gs, serving, oof),
            }
            t_all, t_cold = truth(Embedder(spec, rt.ws.root, "cpu", cfg.model.batch_size))
            row: dict[str, object] = {"candidate": name, "truth": round(t_all - base_all, 4), "truth_cold": round(t_cold - base_cold, 4)}
            for metric, per in got.items():
                row[metric] = round(float(np.mean(per)) - float(np.mean(current[metric])), 4)
                row[f"{metric}_p_win"] = round(win_probability(per, current[metric]), 3)
            # the fold-cold check of gate.cold_guard: loglik on feedback queries none of whose chosen docs its fold model saw chosen
            _, note = _cold_guard(gs, mined, cfg, "loglik", {"heldout": {"per_query": {"loglik": current["loglik"]}}}, {name: {"scores": {"heldout": {"per_query": {"loglik": got["loglik"]}}}}})
            if note is not None:
                row["loglik_fold_cold"] = round(note["candidates"][name] - note["current"], 4)
                row["loglik_fold_cold_p_loss"] = note["p_loss"][name]
                row["fold_cold_queries"] = note["n"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    picked = {m: max(rows, key=lambda r, m=m: float(r[m]))["candidate"] for m in ("ndcg_pool", "loglik_pool", "loglik")}  # type: ignore[arg-type]
    result = {
        "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "feedback_queries": len(gs),
        "dev_queries": len(dev_ids),
        "dev_cold_queries": len(cold),
        "base": {"ndcg@10": base_all, "ndcg@10_cold": base_cold},
        "candidates": rows,
        "picked_by": {m: {"candidate": c, "truth": next(r["truth"] for r in rows if r["candidate"] == c)} for m, c in picked.items()},
        "best_truth": max(float(r["truth"]) for r in rows),  # type: ignore[arg-type]
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("picked_by", "best_truth")}, indent=2))


if __name__ == "__main__":
    main()
