"""How far can ragtune's document-side training go with perfect labels, and with what clicks could show?

    python benchmarks/clean_labels.py --judge test --labels all,top10 \\
        --variant 'lora1:{"epochs":1}' --variant 'lora3:{"epochs":3}' \\
        --out benchmarks/results/ablations/clean_labels_test.json

A diagnostic, not a loop: no simulated users, no gate. It trains ragtune's own training step
(``train_sentence_model``, the one every LoRA/full refresh runs) on SciFact's qrels as if every
relevant document had been clicked, and judges the result by re-embedding the whole corpus.

``--labels`` picks the pairs:

* ``all``: every (query, relevant doc) pair: what the issue's "clean train qrels" figures used.
* ``top10``: only the pairs whose doc the base model already ranks in the query's top 10: the most
  that clicks on the base model's results can ever reveal, however many users click.
* ``clicks``: what the closed loop's simulated users click when every round is served by the base
  model (``closed_loop.py``'s query order, chunks and click seeds; the dev probes' with ``--judge
  dev``), every clicked pair, noise clicks included; ``clicks_clean``: only its relevant ones.

``--judge test`` trains on the train qrels and judges on the test queries (to set ragtune's trainer
beside the issue's own clean-label figures: 0.664 full, 0.666 LoRA r=16 lr 5e-4, 0.678 LoRA 3
epochs; nothing is chosen from it). ``--judge dev`` trains on the asked two thirds of the train
queries (``closed_loop.dev_split``) and judges on the other third, for choosing settings.

Each ``--variant NAME:JSON`` holds ``TrainConfig`` overrides on top of in-batch negatives only
(there are no mined negatives here) and no early stopping; ``"mode": "full"`` for full fine-tuning,
``"plain": true`` for ``closed_loop.py``'s plain sentence-transformers reference recipe (with
``"lora": {LoraConfig keywords}``, ``"epochs"`` and ``"lr"``: plain sentence-transformers + peft
LoRA, peft's defaults for the rest, no ragtune code in the training).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from closed_loop import (  # the script's own folder is on sys.path
    HERE,
    base_workspace,
    cold_queries,
    dense_run,
    evaluate,
    paired_ci,
    per_query_ndcg,
    plain_finetune_pairs,
    play_unrefreshed,
    user_split,
)

from ragtune import Ragtune
from ragtune.embedder import Embedder, ModelSpec
from ragtune.evaluate import load_beir_queries
from ragtune.mining import TrainExample, normalize_query
from ragtune.training.sentence import train_sentence_model


def click_pairs(
    rt: Ragtune, queries: dict[str, str], taught: dict[str, dict[str, int]], asked: list[str], seed: int
) -> dict[str, list[tuple[str, str]]]:
    """The simulated users' clicked (query id, doc id) pairs, all of them and the relevant ones."""
    play_unrefreshed(rt, queries, taught, asked, seed)
    qid_of = {queries[q]: q for q in taught}
    clicked = sorted({(qid_of[rec.text], d) for rec in rt.feedback.records(only_with_feedback=True) for d, _ in rec.clicks})
    return {"clicks": clicked, "clicks_clean": [(q, d) for q, d in clicked if taught[q].get(d, 0) > 0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("../shared/datasets/scifact"))
    ap.add_argument("--judge", choices=["test", "dev"], default="dev")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="The dev split's shuffle (--judge dev) and the simulated users' (clicks labels), as closed_loop.py's --seed.",
    )
    ap.add_argument("--labels", default="all,top10", help="Comma-separated label sets: all, top10, clicks, clicks_clean.")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:JSON", help="TrainConfig overrides (repeatable).")
    ap.add_argument(
        "--stats-only", action="store_true", help="Write the label sets' sizes (and where the clicks sat) without training or judging."
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    work = HERE / "work" / "clean-labels"
    base_workspace(args.dataset, work)
    rt = Ragtune(work, progress=False)
    serving = rt.serving()
    queries = load_beir_queries(args.dataset)
    asked, taught, judged = user_split(args.dataset, args.judge, args.seed)
    cold = cold_queries(judged, taught)

    all_docs = serving.docs.all_documents()
    texts = [d.embed_text for d in all_docs]
    doc_ids = [d.id for d in all_docs]
    doc_text = dict(zip(doc_ids, texts))
    judged_ids = sorted(judged)
    base_spec = serving.spec.document_side()  # the cached base workspace serves the plain default model

    taught_ids = sorted(taught)
    shown = {q: [d for d, _ in r] for q, r in zip(taught_ids, rt.search_batch([queries[q] for q in taught_ids], 10))}
    pairs_all = [(q, d) for q in taught_ids for d, rel in sorted(taught[q].items()) if rel > 0 and d in doc_text]
    label_sets = {"all": pairs_all, "top10": [(q, d) for q, d in pairs_all if d in shown[q]]}
    if any(lab.startswith("clicks") for lab in args.labels.split(",")):
        label_sets.update(click_pairs(rt, queries, taught, asked, args.seed))

    def judge(spec: ModelSpec) -> tuple[dict[str, Any], dict[str, float]]:
        emb = Embedder(spec, rt.ws.root, "cpu", 32)
        t = time.perf_counter()
        vecs = emb.encode_documents(texts)
        run = dense_run(emb.encode_queries([queries[q] for q in judged_ids]), vecs, doc_ids, judged_ids)
        m = evaluate(run, judged, cold)
        return {**m, "embed_s": round(time.perf_counter() - t, 1)}, per_query_ndcg(run, judged)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    results: dict[str, Any] = {
        "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + shlex.join(sys.argv[1:]),
        "judge": args.judge,
        "n_judged": len(judged),
        "n_cold": len(cold),
        "pairs": {k: len(v) for k, v in label_sets.items()},
        "queries": {k: len({q for q, _ in v}) for k, v in label_sets.items()},
    }
    if "clicks" in label_sets:  # where the clicks sat in the base model's top 10, relevant or not
        by_rank: dict[str, dict[int, int]] = {"relevant": {}, "noise": {}}
        for q, d in label_sets["clicks"]:
            kind = by_rank["relevant" if taught[q].get(d, 0) > 0 else "noise"]
            rank = shown[q].index(d) + 1
            kind[rank] = kind.get(rank, 0) + 1
        results["click_ranks"] = {k: dict(sorted(v.items())) for k, v in by_rank.items()}
        print("click ranks", results["click_ranks"], flush=True)
    if args.stats_only:
        save()
        return

    base_m, base_pq = judge(base_spec)
    results["base"] = base_m
    print("base", base_m, results["pairs"], flush=True)
    save()
    cold_ids = sorted(cold)
    for labels in args.labels.split(","):
        pairs = label_sets[labels]
        for item in args.variant:
            name, _, js = item.partition(":")
            ov = json.loads(js or "{}")
            mode = ov.pop("mode", "lora")
            plain = bool(ov.pop("plain", False))
            out = work / f"candidate-{labels}-{name}"
            if plain:
                lora = ov.pop("lora", None)
                model, n_pairs, train_s = plain_finetune_pairs([(queries[q], doc_text[d]) for q, d in pairs], work, lora=lora, **ov)
                if lora is not None:  # the adapter alone, as ragtune saves its own
                    model[0].auto_model.save_pretrained(str(out), safe_serialization=True)
                else:
                    model.save(str(out))
                spec = ModelSpec(**{**base_spec.to_dict(), "adapter": out.name, "adapter_kind": "lora" if lora is not None else "full"})
                info: dict[str, Any] = {"pairs": n_pairs, "train_s": round(train_s, 1)}
            else:
                cfg = rt.config.with_overrides(
                    {"train.negatives": 0, "train.early_stopping_patience": 0, **{f"train.{k}": v for k, v in ov.items()}}
                ).train
                examples = [TrainExample(queries[q], d, [], 1.0, normalize_query(queries[q])) for q, d in pairs]
                res = train_sentence_model(base_spec, examples, [], doc_text, cfg, mode=mode, out_dir=out, device=rt.config.model.device)
                spec = ModelSpec(**{**base_spec.to_dict(), "adapter": str(out), "adapter_kind": mode})
                info = {"pairs": len(examples), "train_s": round(res.seconds, 1), "steps": res.steps, "train_loss": res.train_loss}
            m, pq = judge(spec)
            m["gain_ci95"] = paired_ci(pq, base_pq, judged_ids)
            m["cold_change_ci95"] = paired_ci(pq, base_pq, cold_ids)
            results[f"{labels}/{name}"] = {"variant": item, "labels": labels, "mode": "plain" if plain else mode, "train": info, **m}
            print(labels, name, info, m, flush=True)
            save()


if __name__ == "__main__":
    main()
