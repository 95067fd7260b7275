"""Indexing throughput vs bare sentence-transformers encode, on the same texts and settings.

    python benchmarks/embed_throughput.py --dataset ../shared/datasets/scifact [--out benchmarks/results/embed_throughput.json]

Runs, in one process, one after the other, (b) then (a): (a) ``ragtune index`` of the BEIR corpus into a fresh
workspace (loading, hashing, embedding, SQLite doc store, faiss index, version swap) and (b) bare
``SentenceTransformer.encode`` of the same ``title + " " + text`` strings with the same batch size
and normalisation. Reports docs/s for both and their ratio (target >= 0.95: the forward pass is the
limit on a CPU, ragtune must add next to nothing). Both wall-clock and process CPU time are
reported: CPU time is the fair figure when other work shares the machine (run it with
OMP_NUM_THREADS=1 then, so idle OpenMP threads do not spin on the other core).

With ``--backend torch,onnx`` it compares inference backends instead, in one process, on the same texts:

    python benchmarks/embed_throughput.py --dataset ../shared/datasets/scifact --backend torch,onnx [--sample 500] [--ndcg-docs 0]

For each backend (``model.backend`` of the default model; onnx = int8 ONNX Runtime with the preset this
CPU gets): the time to make the model (for onnx: export and quantize), docs/s on a fixed random sample of
``--sample`` corpus docs (wall and CPU time), and nDCG@10 on the test split with both documents and queries
through that backend (exact search; ``--ndcg-docs N`` > 0 uses the docs relevant to a test query plus a
fixed random sample of the others, N in all; 0 = the whole corpus). Also the cosine between the two
backends' vectors of the same docs. Writes benchmarks/results/embed_backends.json by default.
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
    ap.add_argument("--out", type=Path, default=None, help="default: results/embed_throughput.json, or results/embed_backends.json with --backend")
    ap.add_argument("--backend", default=None, help="comma-separated model.backend values to compare, e.g. torch,onnx")
    ap.add_argument("--sample", type=int, default=500, help="docs in the throughput sample (--backend)")
    ap.add_argument("--ndcg-docs", type=int, default=0, help="docs searched for nDCG@10 (--backend): 0 = the whole corpus")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.backend:
        compare_backends(args)
        return
    args.out = args.out or Path(__file__).parent / "results" / "embed_throughput.json"

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


def compare_backends(args: argparse.Namespace) -> None:
    """Docs/s and nDCG@10 of each ``model.backend`` on the same texts, in one process."""
    import logging

    import numpy as np
    import torch

    from ragtune import RagtuneConfig
    from ragtune.backends import quantization_preset
    from ragtune.corpus import load_beir_corpus
    from ragtune.embedder import Embedder, ModelSpec
    from ragtune.evaluate import evaluate_run, load_beir_qrels, load_beir_queries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("embed_backends")
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    docs = list(load_beir_corpus(args.dataset))
    rng = np.random.default_rng(args.seed)
    sample = [docs[i].embed_text for i in sorted(rng.choice(len(docs), size=min(args.sample, len(docs)), replace=False))]
    qrels = load_beir_qrels(args.dataset, "test")
    queries = load_beir_queries(args.dataset)
    qids = [q for q in qrels if q in queries]
    if args.ndcg_docs and args.ndcg_docs < len(docs):
        relevant = {d for q in qids for d in qrels[q]}
        others = [i for i, d in enumerate(docs) if d.id not in relevant]
        extra = rng.choice(len(others), size=max(0, args.ndcg_docs - len(relevant)), replace=False)
        keep = {i for i, d in enumerate(docs) if d.id in relevant} | {others[j] for j in extra}
        search_docs = [d for i, d in enumerate(docs) if i in keep]
    else:
        search_docs = docs
    preset = quantization_preset()
    batch = RagtuneConfig().model.batch_size
    rows: dict[str, dict] = {}
    sample_vecs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:  # a fresh workspace root: the onnx export is made (and timed) here
        for backend in backends:
            spec = ModelSpec(backend=backend, quantization=preset if backend == "onnx" else None)
            emb = Embedder(spec, Path(tmp), "cpu", batch)
            t = time.perf_counter()
            emb.encode_documents(sample[:8])
            make_s = time.perf_counter() - t
            emb.encode_documents(sample[:64])  # warm-up
            load0 = os.getloadavg()[0]
            t, c = time.perf_counter(), time.process_time()
            vecs = emb.encode_documents(sample)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            sample_vecs[backend] = vecs
            log.info("%s: %.1f docs/s on %d docs", backend, len(sample) / wall, len(sample))
            t = time.perf_counter()
            dvecs = emb.encode_documents([d.embed_text for d in search_docs])
            qvecs = emb.encode_queries([queries[q] for q in qids])
            ndcg_embed_s = time.perf_counter() - t
            top = np.argsort(-(qvecs @ dvecs.T), axis=1)[:, :100]
            run = {q: [search_docs[j].id for j in top[i]] for i, q in enumerate(qids)}
            metrics = evaluate_run(run, qrels)
            log.info("%s: nDCG@10 %.4f", backend, metrics["ndcg@10"])
            rows[backend] = {
                "label": spec.label(),
                "make_model_s": round(make_s, 1),
                "sample_encode_s": round(wall, 1),
                "docs_per_s": round(len(sample) / wall, 2),
                "sample_encode_cpu_s": round(cpu, 1),
                "docs_per_cpu_s": round(len(sample) / cpu, 2),
                "load_avg_1min_before": round(load0, 2),
                "ndcg_embed_s": round(ndcg_embed_s, 1),
                "ndcg@10": round(metrics["ndcg@10"], 4),
                "recall@100": round(metrics["recall@100"], 4),
            }
    result: dict = {
        "command": "python benchmarks/embed_throughput.py " + " ".join(sys.argv[1:]),
        "dataset": args.dataset.name,
        "model": "default (all-MiniLM-L6-v2)",
        "throughput_sample_docs": len(sample),
        "ndcg_split": "test",
        "ndcg_queries": len(qids),
        "ndcg_docs": len(search_docs),
        "ndcg_docs_note": "the whole corpus" if len(search_docs) == len(docs) else f"the {len(search_docs)} docs: every doc relevant to a test query plus a fixed random sample (seed {args.seed}) of the others",
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "onnx_int8_preset": preset,
        "backends": rows,
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "note": "the cores were shared with other jobs while this ran (see load_avg_1min_before): absolute docs/s are low, the ratio measured in the same run is the figure; onnxruntime gets as many threads as torch",
    }
    if "torch" in rows:
        for backend in rows:
            if backend != "torch":
                result[f"speedup_{backend}_vs_torch"] = round(rows[backend]["docs_per_s"] / rows["torch"]["docs_per_s"], 2)
                result[f"speedup_{backend}_vs_torch_cpu_time"] = round(rows[backend]["docs_per_cpu_s"] / rows["torch"]["docs_per_cpu_s"], 2)
                result[f"ndcg_cost_{backend}"] = round(rows["torch"]["ndcg@10"] - rows[backend]["ndcg@10"], 4)
                cos = (sample_vecs["torch"] * sample_vecs[backend]).sum(1)
                result[f"cosine_{backend}_vs_torch"] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
    out = args.out or Path(__file__).parent / "results" / "embed_backends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
