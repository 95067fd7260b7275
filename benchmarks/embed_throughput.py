"""Indexing throughput vs bare sentence-transformers encode, on the same texts and settings.

    python benchmarks/embed_throughput.py --dataset ../shared/datasets/scifact [--out benchmarks/results/embed_throughput.json]

Runs, in one process, one after the other, (b) then (a): (a) ``ragtune index`` of the BEIR corpus into a fresh
workspace (loading, hashing, embedding, SQLite doc store, faiss index, version swap) and (b) bare
``SentenceTransformer.encode`` of the same ``title + " " + text`` strings with the same batch size
and normalisation. Reports docs/s for both and their ratio (target >= 0.95: the forward pass is the
limit on a CPU, ragtune must add next to nothing). Both wall-clock and process CPU time are
reported: CPU time is the fair figure when other work shares the machine (run it with
OMP_NUM_THREADS=1 then, so idle OpenMP threads do not spin on the other core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embed_throughput.json")
    args = ap.parse_args()

    import torch

    from ragtune import Ragtune, RagtuneConfig
    from ragtune.corpus import load_beir_corpus
    from ragtune.embedder import load_sentence_transformer

    texts = [d.embed_text for d in load_beir_corpus(args.dataset)]
    model = load_sentence_transformer("default", "cpu")  # warm the cache and the file system for both
    model.encode(texts[:64], batch_size=32)
    batch = RagtuneConfig().model.batch_size

    def bare() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return time.perf_counter() - t, time.process_time() - c

    def ragtune_index() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            rt = Ragtune.init(Path(tmp) / "ws", RagtuneConfig(), progress=False)
            t, c = time.perf_counter(), time.process_time()
            rep = rt.index([args.dataset])
            elapsed, cpu = time.perf_counter() - t, time.process_time() - c
            assert rep["n_docs"] == len(texts) and rep["embedded"] == len(texts)
            return elapsed, cpu

    bare_s, bare_cpu = bare()
    rt_s, rt_cpu = ragtune_index()
    n = len(texts)
    result = {
        "command": "python benchmarks/embed_throughput.py " + " ".join(sys.argv[1:]),
        "dataset": args.dataset.name,
        "n_docs": n,
        "batch_size": batch,
        "bare_encode_s": round(bare_s, 1),
        "ragtune_index_s": round(rt_s, 1),
        "bare_docs_per_s": round(n / bare_s, 2),
        "ragtune_docs_per_s": round(n / rt_s, 2),
        "ratio": round(bare_s / rt_s, 4),
        "bare_encode_cpu_s": round(bare_cpu, 1),
        "ragtune_index_cpu_s": round(rt_cpu, 1),
        "ratio_cpu_time": round(bare_cpu / rt_cpu, 4),
        "torch_threads": torch.get_num_threads(),
        "target_ratio": 0.95,
        "machine": "2 CPU cores, no GPU",
        "note": "ragtune's time covers loading and validating the corpus, hashing, embedding, the SQLite doc store, the faiss index and the atomic version swap",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
