"""The query map's sampled softmax against the exact one, on SciFact's dev split (never test).

    python benchmarks/query_map_sampling.py --dataset ../shared/datasets/scifact [--out benchmarks/results/query_map_sampling.json]

Past ``SOFTMAX_DOCS`` documents the query map trains against a sample of the corpus (positives, the
queries' nearest documents, random documents with the ``log(rest / sampled)`` correction) instead of
every document. SciFact (5,183 docs) is below that size, so here the sample size is lowered to make
the sampled path run on a corpus whose exact softmax is still affordable: the map is fitted on the
train split's qrels minus a dev split (20% of train queries, by a fixed seed), once exactly and once
per sample size, and each map is judged by nDCG@10 of the dev queries over the whole corpus with the
serving (default) model's document vectors.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "query_map_sampling.json")
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np

    from ragtune import Ragtune
    from ragtune.config import TrainConfig
    from ragtune.corpus import load_beir_corpus
    from ragtune.embedder import load_sentence_transformer
    from ragtune.evaluate import evaluate_run, load_beir_qrels, load_beir_queries
    from ragtune.query_tier import apply_query_map, interpolate_map
    from ragtune.training.query_map import HARD_PER_QUERY, train_query_map

    model = load_sentence_transformer("default", "cpu")
    base = Path(__file__).parent / "work" / "base-scifact"  # closed_loop.py's cached index of the corpus, if made
    if (base / "CURRENT").is_file():
        serving = Ragtune(base, progress=False).serving()
        ids, dv = list(serving.docs.ids), np.asarray(serving.vectors(), dtype=np.float32)
    else:
        docs = list(load_beir_corpus(args.dataset))
        ids = [d.id for d in docs]
        dv = model.encode([d.embed_text for d in docs], batch_size=32, normalize_embeddings=True, show_progress_bar=True).astype(np.float32)
    row = {d: i for i, d in enumerate(ids)}
    queries = load_beir_queries(args.dataset)
    qrels = load_beir_qrels(args.dataset, "train")
    qids = sorted(q for q in qrels if q in queries)
    random.Random(args.seed).shuffle(qids)
    dev = qids[: len(qids) // 5]
    fit = qids[len(qids) // 5 :]
    pairs = [(q, row[d]) for q in fit for d, g in qrels[q].items() if g > 0 and d in row]
    qtexts = sorted({q for q, _ in pairs} | set(dev))
    qv = dict(zip(qtexts, model.encode([queries[q] for q in qtexts], normalize_embeddings=True)))
    pq = np.stack([qv[q] for q, _ in pairs]).astype(np.float32)
    pos = np.array([p for _, p in pairs], dtype=np.int64)
    groups = {q: g for g, q in enumerate(dict.fromkeys(q for q, _ in pairs))}
    neighbours = np.argsort(-(pq @ dv.T), axis=1)[:, :HARD_PER_QUERY]
    config = TrainConfig()
    devq = np.stack([qv[q] for q in dev]).astype(np.float32)

    def judge(weight: np.ndarray | None) -> float:
        v = devq if weight is None else apply_query_map(devq, interpolate_map(weight, config.query_interpolation))
        top = np.argsort(-(v @ dv.T), axis=1)[:, :10]
        run = {q: [ids[j] for j in top[i]] for i, q in enumerate(dev)}
        return evaluate_run(run, {q: qrels[q] for q in dev})["ndcg@10"]

    result = {
        "command": "python benchmarks/query_map_sampling.py " + " ".join(sys.argv[1:]),
        "corpus": len(ids), "fit_queries": len(fit), "pairs": len(pairs), "dev_queries": len(dev),
        "interpolation": config.query_interpolation, "base_dev_ndcg10": round(judge(None), 4), "runs": [],
    }  # fmt: skip
    for size in [len(ids)] + [int(s) for s in args.sizes.split(",")]:
        t0 = time.perf_counter()
        w = train_query_map(pq, pos, np.ones(len(pos)), dv, config, query_groups=[groups[q] for q, _ in pairs], neighbours=neighbours, softmax_docs=size).weight
        run = {"softmax_docs": size, "exact": size >= len(ids), "dev_ndcg10": round(judge(w), 4), "seconds": round(time.perf_counter() - t0, 2)}
        result["runs"].append(run)
        print(run, flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
