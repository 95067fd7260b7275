"""The whole ragtune loop on the bundled scifact-mini corpus (offline, CPU, a few minutes).

index → search → (simulated users click → mine → refresh) x 2 → before/after nDCG@10 on test
queries → versions → rollback. It refreshes the query-side tier by default (`--mode query`: under a
minute, no re-embedding; on the last run its first refresh was refused and its second promoted `query@0.35`, 0.8901 -> 0.8931 test nDCG@10).
``--mode auto`` also trains a LoRA adapter and lets the gate pick (a few minutes more); the bundled
corpus is small and the default model already ranks it well (test nDCG@10 0.89), so that gate
usually refuses. When every refresh is refused, the demo makes a second version by indexing one
more document, to show rollback.

Run: ``make demo`` (or ``python examples/demo.py [--workspace DIR] [--mode query|auto|lora|full] [--model PATH]``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from ragtune import Ragtune, RagtuneConfig
from ragtune.evaluate import load_beir_qrels, load_beir_queries
from ragtune.simulate import ClickModel, simulate_users

DATA = Path(__file__).parent / "data" / "scifact-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path(__file__).parent / ".demo-workspace")
    parser.add_argument("--mode", default="query", choices=["auto", "lora", "query", "full"])
    parser.add_argument("--model", default="default", help="'default' (the bundled all-MiniLM-L6-v2) or a sentence-transformers model path")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of simulated users (each on its share of the train queries) and refreshes.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=JSON", help="Config override, e.g. --set gate.folds=5 (repeatable).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    shutil.rmtree(args.workspace, ignore_errors=True)
    overrides: dict[str, object] = {"model.name": args.model, "train.epochs": 2, "refresh.min_new_events": 20}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    config = RagtuneConfig().with_overrides(overrides)
    rt = Ragtune.init(args.workspace, config)

    print(f"1. index {DATA.name}")
    report = rt.index([DATA])
    print(f"   {report['n_docs']} docs embedded in {report['seconds']:.1f}s -> version {report['version']}")

    query = "Vitamin D deficiency is linked to disease"
    hits = rt.search(query, k=3)
    print(f"\n2. search {query!r} (query id {hits.query_id})")
    for h in hits:
        print(f"   {h.rank}. {h.score:.3f} {h.doc_id} {h.title[:70]}")

    before = rt.evaluate_beir(DATA, "test")
    print(f"\n3. before: test nDCG@10 {before['ndcg@10']:.4f}  MRR@10 {before['mrr@10']:.4f}  ({before['n_queries']} queries)")

    queries, qrels = load_beir_queries(DATA), load_beir_qrels(DATA, "train")
    qids = sorted(qrels)
    for r in range(args.rounds):
        share = qids[r :: args.rounds]
        sim = simulate_users(rt, queries, qrels, share, ClickModel(seed=r))
        print(f"\n4.{r + 1} simulated users on {len(share)} train queries: {sim['clicks']} clicks ({sim['noise_clicks']} on non-relevant docs)")
        mined = rt.mine().report()
        print(f"    mined: {mined['pairs']} pairs, {mined['negatives_per_pair']} negatives/pair, {mined['dropped_false_negatives']} likely false negatives dropped, {mined['heldout_queries']} held-out queries")
        print(f"    click noise: {mined['click_noise']} ({mined['click_noise_source']}); {mined['untrusted_clicks']} clicks judged noise")
        result = rt.refresh(mode=args.mode)
        print(f"5.{r + 1} refresh --mode {args.mode}: {result['status']}: {result['reason']}")
        if result["status"] != "skipped":
            for name, figs in result["gate"]["candidates"].items():
                print(f"    candidate {name:<10} held-out {result['gate']['metric']} {figs['heldout']:.4f} (serving model {result['gate']['current']['heldout']:.4f})")

    after = rt.evaluate_beir(DATA, "test")
    print(f"\n6. after:  test nDCG@10 {after['ndcg@10']:.4f}  MRR@10 {after['mrr@10']:.4f}  (model {after['model']})")
    print(f"   change:  {after['ndcg@10'] - before['ndcg@10']:+.4f} nDCG@10 on test queries no simulated user asked")

    print("\n7. versions")
    for v in rt.versions():
        print(f"   {'*' if v['current'] else ' '} {v['name']} {v['kind']:<5} {v['note']}")
    if len(rt.versions()) == 1:
        # nothing was promoted, so make a second version the cheap way to show versions and rollback
        extra = args.workspace / "new-doc.jsonl"
        extra.write_text(json.dumps({"_id": "demo-1", "title": "Vitamin D and disease", "text": "A demo document added after the first index."}) + "\n")
        added = rt.index([DATA, extra])
        print(f"\n8. the gate refused every candidate (reasons above), so to show versions and rollback: index one more document -> {added['version']} ({added['embedded']} embedded, the other {added['n_docs'] - added['embedded']} vectors reused)")
    back = rt.rollback()
    again = rt.evaluate_beir(DATA, "test")
    print(f"\n9. rollback -> {back} (instant, no re-embedding): test nDCG@10 {again['ndcg@10']:.4f}")
    for v in rt.versions():
        print(f"   {'*' if v['current'] else ' '} {v['name']} {v['kind']:<5} {v['note']}")


if __name__ == "__main__":
    main()
