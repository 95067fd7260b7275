"""Dev only: does any LoRA recipe gain from simulated clicks? The truth by re-embedding the corpus.

    python benchmarks/lora_probe.py --out benchmarks/results/dev/lora_probe_s0.json \\
        --variant 'default:{}' \\
        --variant 'neg0_e4:{"negatives":0,"epochs":4,"early_stopping_patience":0}' \\
        --variant 'frozen:{"frozen_queries":true}'

Simulated users (ragtune.simulate) ask two thirds of SciFact's train queries in three chunks, as
``closed_loop.py --judge dev`` plays them, all under the base model (as in a LoRA loop whose gate
refused every round), and ragtune's miner turns the log into pairs. Each ``--variant NAME:JSON``
(``TrainConfig`` overrides on top of ``train.max_seq_length`` from ``--max-seq-length``, 128 by
default; ``"mode": "full"`` for full fine-tuning; ``"plain": true`` for ``closed_loop.py``'s
``reference``, plain sentence-transformers on every click) is trained by the refresh's own training step, taken at each ``--ratios`` WiSE-FT
ratio, and judged on the held-back third by re-embedding the whole corpus (at the same length,
the base model too). ``gate`` records what the gate sees on the held-out feedback queries: pool
nDCG@10 and ``pool_loglik``. ``--eta 0`` turns the click weights off (every propensity 1).
``"feedback.KEY": value`` in a variant re-mines the log with that feedback setting for its
training (e.g. ``"feedback.click_noise": 0`` turns the click-noise correction off; the gate figures
keep the default mining's held-out set). ``"frozen_queries": true`` in a variant trains the adapter on the document side only: each
anchor (query) is encoded with the adapter disabled, so queries keep their base vectors and only
documents move (judged that way too: base-model queries against the candidate's documents; no gate
figures, since the gate has no such model). The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from closed_loop import HERE, base_workspace, dense_run, evaluate, plain_finetune, play_dev_users  # the script's own folder is on sys.path

from ragtune import Ragtune, RagtuneConfig
from ragtune.embedder import Embedder, ModelSpec
from ragtune.gate import build_gate_set, score_candidate
from ragtune.mining import mine
from ragtune.refresh import _train_doc_candidate


class _FrozenQueries:
    """While active, ragtune's training step builds this loss: click-weighted InfoNCE whose anchors
    (queries) are encoded by the base model (the LoRA adapter disabled), so only documents move."""

    def __init__(self) -> None:
        import ragtune.training.sentence as sentence

        self.on = False
        self._sentence = sentence
        self._make_loss = sentence._make_loss
        sentence._make_loss = self._loss

    def _loss(self, name: str, model: Any, base: Any, device: str) -> Any:
        if not self.on:
            return self._make_loss(name, model, base, device)
        import torch

        from ragtune.training.losses import WeightedMultipleNegativesRankingLoss

        class DocumentSide(WeightedMultipleNegativesRankingLoss):
            def forward(self, sentence_features: Any, labels: Any = None) -> Any:
                feats = list(sentence_features)
                auto = self.model[0].auto_model
                with torch.no_grad():
                    auto.disable_adapters()
                    queries = self.model(feats[0])["sentence_embedding"].detach()
                    auto.enable_adapters()
                docs = torch.cat([self.model(f)["sentence_embedding"] for f in feats[1:]], dim=0)
                return self.weighted_loss(queries, docs, labels)

        return DocumentSide(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("../shared/datasets/scifact"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:JSON", help="TrainConfig overrides (repeatable).")
    ap.add_argument("--ratios", default="1.0,0.5", help="WiSE-FT ratios to judge each variant at.")
    ap.add_argument("--eta", type=float, default=None, help="feedback.propensity_eta (0: unweighted clicks).")
    ap.add_argument("--max-seq-length", type=int, default=128, help="Tokens for training and judging (0: the model's own, 256 for the default).")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    frozen = _FrozenQueries()
    work = HERE / "work" / f"lora-probe-s{args.seed}"
    base_workspace(args.dataset, work)
    seq = args.max_seq_length or None
    overrides: dict[str, Any] = {"train.max_seq_length": seq}
    if args.eta is not None:
        overrides["feedback.propensity_eta"] = args.eta
    RagtuneConfig.load(work / "config.json").with_overrides(overrides).save(work / "config.json")
    rt = Ragtune(work, progress=False)
    queries, _, dev, cold, sims = play_dev_users(rt, args.dataset, args.seed)
    dev_ids = sorted(dev)
    serving = rt.serving()
    records = rt.feedback.records()
    mined = mine(records, serving, rt.config.mining, rt.config.feedback)
    all_docs = serving.docs.all_documents()
    texts = [d.embed_text for d in all_docs]
    doc_ids = [d.id for d in all_docs]
    gs = build_gate_set(
        "heldout",
        serving,
        [h.query for h in mined.heldout],
        [dict(h.positive_ids) for h in mined.heldout],
        rt.config.gate.pool_size,
        shown=[h.shown_ids for h in mined.heldout],
    )

    def embedder(spec: ModelSpec) -> Embedder:
        return Embedder(ModelSpec(**{**spec.to_dict(), "max_seq_length": seq}), rt.ws.root, "cpu", 32)

    def judge(spec: ModelSpec, *, frozen_queries: bool = False) -> dict[str, Any]:
        emb = embedder(spec)
        t = time.perf_counter()
        vecs = emb.encode_documents(texts)
        qv = (embedder(base_spec) if frozen_queries else emb).encode_queries([queries[q] for q in dev_ids])
        m = evaluate(dense_run(qv, vecs, doc_ids, dev_ids), dev, cold)
        row = {
            "ndcg@10": m["ndcg@10"],
            "ndcg@10_cold": m["ndcg@10_cold"],
            "ndcg@10_warm": m["ndcg@10_warm"],
            "embed_s": round(time.perf_counter() - t, 1),
        }
        if not frozen_queries:
            gate = score_candidate(gs, serving, emb, shares_documents=False, pool_loglik=True)
            row["gate"] = {"pool_ndcg@10": gate["ndcg@10"], "pool_loglik": gate["pool_loglik"], "per_query": gate["per_query"]}
        return row

    base_spec = serving.spec.document_side()
    results: dict[str, Any] = {
        "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]),
        "clicks": sims,
        "mined": mined.report(),
        "n_dev": len(dev),
        "n_cold": len(cold),
        "gate_pool_union": len(gs.pool_positions),
        "base": judge(base_spec),
    }
    print("mined", results["mined"], flush=True)
    print("base", {k: v for k, v in results["base"].items() if k != "gate"}, flush=True)
    base_cfg = rt.config
    for item in args.variant:
        name, _, js = item.partition(":")
        ov = json.loads(js or "{}")
        feedback = {k: ov.pop(k) for k in list(ov) if k.startswith("feedback.")}
        mode = ov.pop("mode", "lora")
        frozen.on = bool(ov.pop("frozen_queries", False))
        plain = bool(ov.pop("plain", False))
        rt.config = base_cfg.with_overrides({**feedback, **{f"train.{k}": v for k, v in ov.items()}})
        variant_mined = mine(records, serving, rt.config.mining, rt.config.feedback) if feedback else mined
        out = work / f"candidate-{name}"
        shutil.rmtree(out, ignore_errors=True)
        if plain:  # closed_loop.py's reference recipe, on this log's clicks
            model, n_pairs, train_s = plain_finetune(rt, work, seq)
            model.save(str(out))
            spec = ModelSpec(**{**base_spec.to_dict(), "adapter": out.name, "adapter_kind": "full"})
            info = {"pairs": n_pairs, "train_s": round(train_s, 1)}
        else:
            spec, info = _train_doc_candidate(rt, serving, variant_mined, mode, out)
        row: dict[str, Any] = {"variant": item, "mode": "plain" if plain else mode, "train": info}
        if feedback:
            row["mined"] = variant_mined.report()
        for ratio in [float(x) for x in args.ratios.split(",")]:
            row[f"{ratio:g}"] = judge(ModelSpec(**{**spec.to_dict(), "interpolation": ratio}), frozen_queries=frozen.on)
            print(name, ratio, {k: v for k, v in row[f"{ratio:g}"].items() if k != "gate"}, flush=True)
        results[name] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
