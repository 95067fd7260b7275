"""Scale: every stage of the loop at 10^4 to 10^6 documents on one machine.

    python benchmarks/scale.py --docs 10000,100000,1000000 [--out benchmarks/results/scale.json]

A synthetic corpus (sentences of the shared SciFact corpus recombined with a fixed seed into
passages of 2 to 7 sentences, about the length of a RAG chunk) is indexed with a tiny encoder made
in-process (sentence-transformers' ``StaticEmbedding`` over the default model's own tokenizer and
384-dim token embeddings: real vector geometry at thousands of passages per second), so that every
stage but the transformer forward pass runs at full size here.
The default model's forward-pass rate is measured on a sample of real SciFact passages, to project
what the forward pass of a real index or document-side refresh costs at each size.

Each size runs in its own process (peak RSS per stage is read from the kernel, ``VmHWM`` reset with
``/proc/self/clear_refs`` before each stage). Stages, in order, through the public API:

* ``index``: ``Ragtune.index`` of the corpus JSONL (load, hash, embed, doc store, vectors, vector
  store with ``index.kind = "auto"``, swap); its report splits the time into load / embed / write.
* ``build_flat`` / ``build_hnsw`` / ``build_ivf``: each faiss kind built over the version's vectors,
  with single-query search p50/p99 and recall@10 against flat on 1,000 held-aside queries (and, for
  HNSW and IVF, a sweep of the search breadth). The stage's seconds include those searches; ``build_s``
  is the build alone (absent for the kind the ``index`` stage built, which is only searched here).
* ``log_10k``: 10,000 searches logged (``FeedbackLog.log_query`` with 10 impressions each).
* ``simulate``: 2,000 user sessions (``Ragtune.search`` + clicks by position-biased simulated users).
* ``mine``: ``Ragtune.mine`` (click weights, ANN hard negatives from the serving store).
* ``refresh_query``: ``Ragtune.refresh(mode="query")``: mining, the query tier cross-fitted and
  fitted, the offline check, the staged version and the trial start.
* ``trial``: 600 interleaved sessions, then ``Ragtune.decide_trial`` (the decision alone is
  ``trial_decide``).
* ``reindex_1pct``: 1% of the documents edited, ``Ragtune.index`` again (only those re-embedded).
* ``rollback``: ``Ragtune.rollback``.

Writes the JSON (with this command) and a log-log plot of seconds per stage against corpus size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"
DIM = 384


# -- measuring ---------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class Stages:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    @contextmanager
    def stage(self, name: str, **extra: Any):  # type: ignore[no-untyped-def]
        _reset_peak()
        t0 = time.perf_counter()
        c0 = time.process_time()
        row: dict[str, Any] = dict(extra)
        yield row
        row["seconds"] = round(time.perf_counter() - t0, 3)
        row["cpu_seconds"] = round(time.process_time() - c0, 3)
        row["peak_rss_gb"] = round(_status_kb("VmHWM") / 2**20, 3)
        self.rows[name] = row
        print(f"  {name:<16} {row['seconds']:>9.2f}s  peak {row['peak_rss_gb']:.2f} GB  {json.dumps({k: v for k, v in row.items() if k not in ('seconds', 'cpu_seconds', 'peak_rss_gb')})[:160]}", flush=True)


#: Stages that only this benchmark runs (other index kinds built for comparison), not part of the loop.
COMPARISON_STAGES = ("build_flat", "build_hnsw", "build_ivf")


def peak_of(rows: dict[str, dict[str, Any]], *, product_only: bool = False) -> float:
    """The process's peak RSS over the stages (each stage's ``VmHWM`` is read after a reset); ``product_only``:
    over the loop's own stages, leaving out the index kinds built only for comparison."""
    return max((r.get("peak_rss_gb", 0.0) for k, r in rows.items() if not (product_only and k in COMPARISON_STAGES)), default=0.0)


# -- the synthetic corpus ------------------------------------------------------------------------------
def scifact_abstracts() -> list[list[str]]:
    """The sentences of each SciFact abstract (30-400 characters each)."""
    out: list[list[str]] = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if 30 <= len(s.strip()) <= 400]
            if sents:
                out.append(sents)
    return out


#: Share of a passage's sentences drawn from its home abstract (the rest from anywhere): chunks of one
#: source share a topic. With 0.8 the passages' nearest-neighbour similarities come closest to the
#: default model's on SciFact itself (nn1 0.63 / nn10 0.47 against 0.68 / 0.53; 0.51 / 0.44 with 0).
TOPIC_SHARE = 0.8


def write_corpus(path: Path, n: int, abstracts: list[list[str]], seed: int) -> list[tuple[str, str]]:
    """``n`` passages of 2-7 sentences, most from one home abstract; returns (doc_id, one of its sentences) of each."""
    rng = random.Random(seed)
    anywhere = [s for a in abstracts for s in a]
    heads: list[tuple[str, str]] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            home = abstracts[rng.randrange(len(abstracts))]
            body = [rng.choice(home) if rng.random() < TOPIC_SHARE else rng.choice(anywhere) for _ in range(rng.randint(2, 7))]
            doc_id = f"d{i}"
            title = " ".join(body[0].split()[:8])
            fh.write(json.dumps({"id": doc_id, "title": title, "text": " ".join(body)}) + "\n")
            heads.append((doc_id, body[rng.randrange(len(body))]))
    return heads


def edit_corpus(path: Path, out: Path, fraction: float, seed: int) -> int:
    """Copy the corpus JSONL with ``fraction`` of its docs' texts edited; returns how many."""
    rng = random.Random(seed)
    edited = 0
    with open(path, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            if rng.random() < fraction:
                row = json.loads(line)
                row["text"] = row["text"] + " (revised)"
                line = json.dumps(row) + "\n"
                edited += 1
            dst.write(line)
    return edited


def query_of(sentence: str, rng: random.Random) -> str:
    """A user's query about a passage: 4-9 consecutive words of one of its sentences."""
    words = sentence.split()
    n = min(len(words), rng.randint(4, 9))
    start = rng.randrange(0, len(words) - n + 1)
    return " ".join(words[start : start + n])


#: Mean cosine of the default model's SciFact document vectors to their centroid (measured on the shared
#: corpus): the synthetic encoder is calibrated to it, as ANN recall depends on how spread vectors are.
REAL_CENTROID_COS = 0.362


def make_tiny_encoder(path: Path, sample: list[str]) -> Path:
    """A static encoder: the default model's own 384-dim input token embeddings, mean-pooled, re-centred, normalised.

    sentence-transformers' ``StaticEmbedding`` with the default model's tokenizer and word-embedding
    matrix, then a fixed ``Dense`` layer (identity weight, bias ``-a * mean``) that moves the mean
    pooled vector of ``sample`` so that documents sit as spread as the default model's do (mean cosine
    to their centroid :data:`REAL_CENTROID_COS`; raw mean pooling gives 0.92, which no real model
    does). Real 384-dim geometry at thousands of passages per second.
    """
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, StaticEmbedding
    from tokenizers import Tokenizer

    from ragtune.embedder import load_sentence_transformer, resolve_model_path

    base = load_sentence_transformer("default", "cpu")
    weights = base[0].auto_model.embeddings.word_embeddings.weight.detach().numpy().copy()
    tok = Tokenizer.from_file(str(Path(resolve_model_path("default")) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    static = StaticEmbedding(tok, embedding_weights=weights)
    pooled = SentenceTransformer(modules=[static], device="cpu").encode(sample, batch_size=256)
    mu = pooled.mean(0)

    def centroid_cos(a: float) -> float:
        v = pooled - a * mu
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        c = v.mean(0)
        return float((v @ (c / np.linalg.norm(c))).mean())

    lo, hi = 0.0, 1.0
    for _ in range(30):  # centroid_cos falls as a rises
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if centroid_cos(mid) > REAL_CENTROID_COS else (lo, mid)
    dense = Dense(DIM, DIM, bias=True, activation_function=torch.nn.Identity())
    with torch.no_grad():
        dense.linear.weight.copy_(torch.eye(DIM))
        dense.linear.bias.copy_(-lo * torch.from_numpy(mu))
    st = SentenceTransformer(modules=[static, dense, Normalize()], device="cpu")
    out = path / "st"
    st.save(str(out))
    return out


def probe(store: Any, qv: Any, truth: Any | None) -> tuple[Any, dict[str, float]]:
    """One query at a time through ``store``: the top-10 rows, p50/p99 latency and recall@10 against ``truth`` (itself when ``None``)."""
    import numpy as np

    lat, ids = [], []
    for i in range(len(qv)):
        t0 = time.perf_counter()
        _, pos = store.search(qv[i : i + 1], 10)
        lat.append(time.perf_counter() - t0)
        ids.append(pos[0])
    top = np.array(ids)
    ref = top if truth is None else truth
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref)]))
    return top, {"p50_ms": round(1000 * float(np.percentile(lat, 50)), 3), "p99_ms": round(1000 * float(np.percentile(lat, 99)), 3), "recall_at_10": round(recall, 4)}


def sweep(directory: Path, kind: str, qv: Any, truth: Any) -> list[dict[str, float]]:
    """recall@10 and p50 of the store saved in ``directory`` at several search breadths (HNSW ``efSearch``, IVF ``nprobe``)."""
    from ragtune.config import IndexConfig
    from ragtune.index import open_store

    out = []
    for value in ((64, 128, 256, 512) if kind == "hnsw" else (16, 32, 64, 128)):
        store = open_store(directory, IndexConfig(kind=kind, use_gpu=False, hnsw_ef_search=value, ivf_nprobe=value), name="sweep", backend="faiss")
        _, figures = probe(store, qv, truth)
        del store
        out.append({"breadth": value, "recall_at_10": figures["recall_at_10"], "p50_ms": figures["p50_ms"]})
    return out


# -- one size ----------------------------------------------------------------------------------------
def run_size(n: int, work: Path, seed: int, index_only: bool = False) -> dict[str, Any]:

    from ragtune import Ragtune, RagtuneConfig
    from ragtune.config import IndexConfig
    from ragtune.feedback import Impression
    from ragtune.index import create_store
    from ragtune.simulate import ClickModel, simulate_users

    st = Stages()
    rng = random.Random(seed)
    corpus = work / "corpus.jsonl"
    with st.stage("corpus_gen") as row:
        heads = write_corpus(corpus, n, scifact_abstracts(), seed)
        row["mb"] = round(corpus.stat().st_size / 2**20, 1)
    with open(corpus, encoding="utf-8") as fh:
        sample = [json.loads(line)["text"] for _, line in zip(range(2000), fh)]
    model = make_tiny_encoder(work / "model", sample)
    # gate.confidence 0: every candidate goes to a trial, so that the trial's cost is measured at every size
    # (the offline check still runs and is timed; its verdict is recorded)
    cfg = RagtuneConfig().with_overrides({"model.name": str(model), "model.batch_size": 256, "feedback.randomize_prob": 0.0, "gate.confidence": 0.0})
    rt = Ragtune(work / "ws", create=True, config=cfg, progress=False)

    with st.stage("index") as row:
        rep = rt.index(corpus)
        row.update(docs=rep.n_docs, timings=rep.timings)
    if index_only:
        return {"docs": n, "stages": st.rows, "peak_rss_gb": peak_of(st.rows), "index_only": True}
    serving = rt.serving()
    vecs = serving.vectors()

    # queries held aside for search timing: one per random doc
    probe_docs = rng.sample(range(n), 1000)
    probe_q = [query_of(heads[i][1], rng) for i in probe_docs]
    qv = serving.embedder.encode_queries(probe_q)
    truth: Any = None
    built = serving.store.kind
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query at a time on one thread, as a server answering concurrent users does
    for kind in ("flat", "hnsw", "ivf"):
        with tempfile.TemporaryDirectory(dir=work) as tmp, st.stage(f"build_{kind}") as row:
            if kind == built:  # the index stage built this one (its time is in index.timings.write): search it
                store = serving.store
                row["built_by_index"] = True
            else:
                t0 = time.perf_counter()
                store = create_store(Path(tmp), vecs, IndexConfig(kind=kind, use_gpu=False), name=f"scale-{kind}")
                row["build_s"] = round(time.perf_counter() - t0, 3)
            top, figures = probe(store, qv, truth)
            if kind == "flat":
                truth = top
            row.update(search_p50_ms=figures["p50_ms"], search_p99_ms=figures["p99_ms"], recall_at_10=figures["recall_at_10"])
            if kind in ("hnsw", "ivf"):  # the breadth knob: recall against p50
                row["sweep"] = sweep(rt.ws.version_dir(serving.name) if kind == built else Path(tmp), kind, qv, truth)
            del store
    st.rows["index"]["index_kind"] = built
    faiss.omp_set_num_threads(threads)

    log = rt.feedback
    with st.stage("log_10k") as row:
        for i in range(10_000):
            d = rng.randrange(n)
            imps = [Impression(f"d{(d + j) % n}", j + 1, 1.0 - j / 10) for j in range(10)]
            log.log_query(f"logged query {i} {heads[d][1][:40]}", imps, version=serving.name)
        row["searches"] = 10_000

    # simulated users: 400 distinct queries (Zipf-repeated), each about one doc
    qdocs = rng.sample(range(n), 400)
    queries = {f"q{i}": query_of(heads[d][1], rng) for i, d in enumerate(qdocs)}
    qrels = {f"q{i}": {f"d{d}": 1} for i, d in enumerate(qdocs)}
    from ragtune.simulate import draw_sessions

    with st.stage("simulate") as row:
        sessions = draw_sessions(list(queries), 2000, seed=seed)
        row.update(simulate_users(rt, queries, qrels, sessions, ClickModel(seed=seed)))
    with st.stage("mine") as row:
        mined = rt.mine()
        row.update(train_pairs=len(mined.train), heldout=len(mined.heldout))
    with st.stage("refresh_query") as row:
        rr = rt.refresh(mode="query", force=True)
        row.update(status=rr.status, check=rr.check.reason if rr.check else None)
    with st.stage("trial") as row:
        live = rt.trial()
        row["live"] = bool(live)
        if live:
            more = draw_sessions(list(queries), 600, seed=seed + 1)
            row.update(simulate_users(rt, queries, qrels, more, ClickModel(seed=seed + 1)))
            t0 = time.perf_counter()
            dec = rt.decide_trial()
            st.rows["trial_decide"] = {"seconds": round(time.perf_counter() - t0, 3), "part_of": "trial", "verdict": (dec or {}).get("verdict"), "wins": (dec or {}).get("wins"), "losses": (dec or {}).get("losses")}
    edited_path = work / "corpus-edited.jsonl"
    edited = edit_corpus(corpus, edited_path, 0.01, seed)
    edited_path.replace(corpus)  # the same source, 1% of its docs changed
    with st.stage("reindex_1pct") as row:
        rep2 = rt.index(corpus)
        row.update(edited=edited, embedded=rep2.embedded, changed=rep2.changed, timings=rep2.timings)
    with st.stage("rollback") as row:
        row["to"] = rt.rollback()
    return {"docs": n, "stages": st.rows, "peak_rss_gb": peak_of(st.rows), "peak_rss_gb_product": peak_of(st.rows, product_only=True)}


def forward_rate(sample: int = 256) -> dict[str, Any]:
    """The default model's forward pass, docs/s, on real SciFact passages (title + text)."""
    from ragtune.embedder import load_sentence_transformer

    rows = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append((r.get("title", "") + " " + r["text"]).strip())
    texts = random.Random(0).sample(rows, sample)
    model = load_sentence_transformer("default", "cpu")
    model.encode(texts[:32], batch_size=32)
    t0 = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True)
    dt = time.perf_counter() - t0
    return {"model": "all-MiniLM-L6-v2 (torch, fp32, cpu)", "sample": sample, "docs_per_s": round(sample / dt, 2), "threads": os.environ.get("OMP_NUM_THREADS")}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["docs"] for r in result["sizes"]]
    names = [k for k in result["sizes"][0]["stages"] if k not in ("corpus_gen",)]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name in names:
        # a kind the index stage built is only searched in its build_ stage: its build time is in index.timings.write
        ys = [None if r["stages"].get(name, {}).get("built_by_index") else r["stages"].get(name, {}).get("seconds") for r in result["sizes"]]
        pts = [(x, y) for x, y in zip(sizes, ys) if y]
        if len(pts) >= 2:
            ax.plot(*zip(*pts), marker="o", label=name)
    proj = result.get("forward_pass")
    if proj:
        ax.plot(sizes, [s / proj["docs_per_s"] for s in sizes], "k--", label="projected forward pass (default model)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("seconds")
    ax.set_title("ragtune stages against corpus size (static encoder; dashed: default model's forward pass)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def slopes(result: dict[str, Any]) -> dict[str, float]:
    import math

    rows = sorted(result["sizes"], key=lambda r: r["docs"])
    if len(rows) < 2:
        return {}
    a, b = rows[-2], rows[-1]
    out = {}
    for name, ra in a["stages"].items():
        rb = b["stages"].get(name)
        if rb and ra.get("seconds") and rb.get("seconds") and ra["seconds"] > 0.05:
            out[name] = round(math.log(rb["seconds"] / ra["seconds"]) / math.log(b["docs"] / a["docs"]), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="10000,100000,1000000")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from --out")
    ap.add_argument("--index-only", action="store_true", help="run only the corpus and index stages (with another --out)")
    args = ap.parse_args()
    if args.one is not None:
        res = run_size(args.one, args.work, args.seed, args.index_only)
        print("RESULT " + json.dumps(res), flush=True)
        return
    if args.plot_only:  # also re-derives the per-size peaks from the stage rows
        result = json.loads(args.out.read_text())
        for r in result["sizes"]:
            r["peak_rss_gb"] = peak_of(r["stages"])
            if not r.get("index_only"):
                r["peak_rss_gb_product"] = peak_of(r["stages"], product_only=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        plot(result, args.out.with_suffix(".png"))
        return
    sizes = [int(s) for s in args.docs.split(",")]
    result: dict[str, Any] = {
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
        "encoder": f"StaticEmbedding over all-MiniLM-L6-v2 token embeddings ({DIM} dims), mean pooling, normalised",
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "sizes": [],
    }
    prev = args.out if args.out.is_file() else None
    if prev:  # keep rows of sizes not re-run
        old = json.loads(prev.read_text())
        result["sizes"] = [r for r in old.get("sizes", []) if r["docs"] not in sizes]
    for n in sizes:
        print(f"== {n} docs", flush=True)
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            proc = subprocess.Popen([sys.executable, __file__, "--one", str(n), "--work", tmp, "--seed", str(args.seed), *(["--index-only"] if args.index_only else [])], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:  # the child's stage lines as they come
                lines.append(line)
                if not line.startswith("RESULT "):
                    sys.stdout.write(line)
                    sys.stdout.flush()
            if proc.wait() != 0:
                raise SystemExit(f"size {n} failed (rc {proc.returncode})")
            res = json.loads(next(line[7:] for line in lines if line.startswith("RESULT ")))
        result["sizes"] = sorted([r for r in result["sizes"] if r["docs"] != n] + [res], key=lambda r: r["docs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.index_only:
        return
    result["forward_pass"] = forward_rate()
    result["slopes_last_decade"] = slopes(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["slopes_last_decade"], indent=2))


if __name__ == "__main__":
    main()
