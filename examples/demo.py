"""The whole ragtune loop on the bundled scifact-mini corpus (offline, CPU, a few minutes).

index → search → simulated users click → refresh (one candidate, checked offline, started as a
trial) → more users, a share of whose searches are interleaved → the trial decided by their clicks
(promoted or dropped) → before/after nDCG@10 on test queries → versions → rollback. It refreshes the
query-side tier by default (``--mode query``: seconds, no re-embedding); ``--mode auto`` trains
a LoRA adapter only when the query tier is not worth a trial. The demo turns the offline check off (``gate.confidence`` 0: every candidate goes
to a trial; on this small corpus, whose train queries rarely resemble each other, the cross-fitted
check finds no gain to try) and caps a trial at 300 interleaved searches (``trial.max_searches``),
so that its users' clicks decide a trial within the demo; an app keeps both defaults.

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
from ragtune.simulate import ClickModel, draw_sessions, simulate_users

DATA = Path(__file__).parent / "data" / "scifact-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path(__file__).parent / ".demo-workspace")
    parser.add_argument("--mode", default="query", choices=["auto", "lora", "query", "full"])
    parser.add_argument("--model", default="default", help="'default' (the bundled all-MiniLM-L6-v2) or a sentence-transformers model path")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of simulated users and refreshes (the first refresh starts a trial, later ones decide it).")
    parser.add_argument("--sessions", type=int, default=300, help="Searches per round (train queries, popular ones repeated).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=JSON", help="Config override, e.g. --set trial.share=0.5 (repeatable).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("ragtune").setLevel(logging.ERROR)  # the demo prints each decision itself

    shutil.rmtree(args.workspace, ignore_errors=True)
    overrides: dict[str, object] = {"model.name": args.model, "train.epochs": 2, "refresh.min_new_events": 20, "gate.confidence": 0.0, "trial.max_searches": 300}
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
    sessions = draw_sessions(sorted(qrels), args.sessions * args.rounds, seed=0)
    decided = 0
    for r in range(args.rounds):
        live = rt.trial()
        sim = simulate_users(rt, queries, qrels, sessions[r * args.sessions : (r + 1) * args.sessions], ClickModel(seed=r))
        print(f"\n4.{r + 1} simulated users: {sim['sessions']} searches of train queries, {sim['clicks']} clicks ({sim['noise_clicks']} on non-relevant docs)")
        if live is not None:
            t = rt.trial()
            assert t is not None
            print(f"    trial {t['id']} ({t['version']} vs {t['baseline']}): {t['wins']} wins, {t['losses']} losses, {t['ties']} ties in {t['searches']} interleaved searches, p = {t['p_value']:.4f}")
        result = rt.refresh(mode=args.mode)
        if result.settled is not None:
            s = result.settled
            decided += 1
            print(f"5.{r + 1} refresh settles trial {s['id']}: {'PROMOTED' if s['verdict'] == 'promote' else 'dropped'}: {s['reason']}")
        for tier, check in result.checks.items():
            print(f"    [{tier}] offline check: {'worth a trial' if check.worth_trial else 'not worth a trial'}: {check.reason}")
        print(f"    refresh --mode {args.mode}: {result.status}: {result.reason}")
    if decided == 0:
        print("\n   no trial was decided in these rounds (more rounds or sessions give users more say)")

    after = rt.evaluate_beir(DATA, "test")
    print(f"\n6. after:  test nDCG@10 {after['ndcg@10']:.4f}  MRR@10 {after['mrr@10']:.4f}  (model {after['model']})")
    print(f"   change:  {after['ndcg@10'] - before['ndcg@10']:+.4f} nDCG@10 on test queries no simulated user asked")

    print("\n7. versions (* serving, ~ live trial)")
    for v in rt.versions():
        t = v["trial"]
        trial = f"  trial {t['state']}" + (f": {t['wins']}W/{t['losses']}L/{t['ties']}T, p = {t['p_value']:.4f}" if "wins" in t else "") if t else ""
        print(f"   {'*' if v['current'] else '~' if v['trial_live'] else ' '} {v['name']} {v['kind']:<5} {v['note']}{trial}")
    if not any(v["trial"].get("state") == "promoted" for v in rt.versions()):
        # nothing was promoted, so make a second version the cheap way to show versions and rollback
        extra = args.workspace / "new-doc.jsonl"
        extra.write_text(json.dumps({"_id": "demo-1", "title": "Vitamin D and disease", "text": "A demo document added after the first index."}) + "\n")
        added = rt.index([DATA, extra])
        print(f"\n8. nothing was promoted (reasons above), so to show versions and rollback: index one more document -> {added['version']} ({added['embedded']} embedded, the other {added['n_docs'] - added['embedded']} vectors reused)")
    back = rt.rollback()
    again = rt.evaluate_beir(DATA, "test")
    print(f"\n9. rollback -> {back} (instant, no re-embedding; a live trial is dropped): test nDCG@10 {again['ndcg@10']:.4f}")
    for v in rt.versions():
        print(f"   {'*' if v['current'] else ' '} {v['name']} {v['kind']:<5} {v['note']}")


if __name__ == "__main__":
    main()
