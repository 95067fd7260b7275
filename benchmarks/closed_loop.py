"""The closed-loop benchmark: simulated users → refresh → nDCG@10 on test queries, round by round.

    python benchmarks/closed_loop.py --dataset ../shared/datasets/scifact --rounds 3 --mode lora \
        --out benchmarks/results/closed_loop_lora.json

Indexes the corpus with the default model (cached under benchmarks/work/), then each round plays
simulated users (ragtune.simulate, through the public API) over the next share of the *train*
queries, runs ``refresh`` and evaluates nDCG@10 on the *test* queries, which no simulated user
asks. ``cold`` test queries are those none of whose relevant docs is relevant to any train query.
With ``--reference``, a plain sentence-transformers full fine-tune (MultipleNegativesRankingLoss,
in-batch negatives, lr 2e-5, one epoch) on the same clicks is run and evaluated the same way.
With ``--counterfactual`` (on by default in query mode, where it costs one more refresh and no
re-embedding), every round the gate refused although its best candidate scored higher is replayed
on a throw-away copy of the workspace with ``gate.confidence``, ``gate.query_confidence`` and
``gate.cold_guard`` 0, and the refused candidate's test figures are recorded as ``if_promoted``:
whether the gate's refusals cost anything.
``gain_ci95`` and ``cold_change_ci95`` are 95% paired bootstrap intervals of the final model's
change over the test (cold test) queries: 104 cold queries cannot resolve a change of 0.005.
Writes the JSON, and re-draws benchmarks/results/closed_loop.png (every mode's JSON found beside
it) and closed_loop_pca_MODE.png (test queries and their relevant docs, base vs final model).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from ragtune import Ragtune, RagtuneConfig
from ragtune.evaluate import evaluate_run, load_beir_qrels, load_beir_queries, ndcg_at_k
from ragtune.simulate import ClickModel, simulate_users

HERE = Path(__file__).resolve().parent


def search_run(rt: Ragtune, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """The serving model's top 100 for each query of ``qrels``."""
    qids = sorted(qrels)
    ranked = rt.search_batch([queries[q] for q in qids], 100)
    return {q: [d for d, _ in r] for q, r in zip(qids, ranked)}


def dense_run(qv: np.ndarray, vecs: np.ndarray, doc_ids: list[str], qids: list[str]) -> dict[str, list[str]]:
    """Exact top 100 of each query vector (rows in ``qids`` order) against document vectors ``vecs``."""
    top = np.argsort(-(qv @ vecs.T), axis=1)[:, :100]
    return {q: [doc_ids[j] for j in top[i]] for i, q in enumerate(qids)}


def evaluate(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], cold: set[str]) -> dict[str, float]:
    allm = evaluate_run(run, qrels)
    coldm = evaluate_run(run, {q: r for q, r in qrels.items() if q in cold})
    warmm = evaluate_run(run, {q: r for q, r in qrels.items() if q not in cold})
    return {"ndcg@10": allm["ndcg@10"], "ndcg@10_cold": coldm["ndcg@10"], "ndcg@10_warm": warmm["ndcg@10"], "mrr@10": allm["mrr@10"], "recall@100": allm["recall@100"]}


def per_query_ndcg(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 of each query (for paired intervals)."""
    return {q: ndcg_at_k(run[q], rels, 10) for q, rels in qrels.items()}


def paired_ci(after: dict[str, float], before: dict[str, float], qids: list[str], *, resamples: int = 10000, seed: int = 0) -> list[float]:
    """95% paired bootstrap interval of the mean change over ``qids``: is a change distinguishable from zero?"""
    diff = np.array([after[q] - before[q] for q in qids])
    if not len(diff):
        return [0.0, 0.0]
    means = diff[np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def if_promoted(rt: Ragtune, mode: str, queries: dict[str, str], qrels: dict[str, dict[str, int]], cold: set[str]) -> dict[str, object]:
    """Replay a refused refresh on a copy of the workspace without the noise check and the cold guard; the refused candidate's figures."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ragtune-counterfactual-") as tmp:
        copy = Path(tmp) / "ws"
        shutil.copytree(rt.ws.root, copy, ignore=shutil.ignore_patterns("refresh.lock"))
        cfg = RagtuneConfig.load(copy / "config.json").with_overrides({"gate.confidence": 0.0, "gate.query_confidence": 0.0, "gate.cold_guard": 0.0})
        cfg.save(copy / "config.json")
        shadow = Ragtune(copy, progress=False)
        report = shadow.refresh(mode=mode, force=True)
        if report["status"] != "promoted":
            return {"status": report["status"], "reason": report.get("reason")}
        return {"status": "promoted", "candidate": (report.get("gate") or {}).get("chosen"), **evaluate(search_run(shadow, queries, qrels), qrels, cold)}


def dev_split(train: dict[str, dict[str, int]], seed: int) -> tuple[list[str], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Users ask two thirds of the train queries (shuffled by ``seed``, in that order); the other third judges."""
    qids = sorted(train)
    random.Random(seed).shuffle(qids)
    cut = 2 * len(qids) // 3
    asked, dev_ids = qids[:cut], sorted(qids[cut:])
    return asked, {q: train[q] for q in asked}, {q: train[q] for q in dev_ids}


def cold_queries(judged: dict[str, dict[str, int]], asked: dict[str, dict[str, int]]) -> set[str]:
    """The judged queries none of whose relevant docs is relevant to an asked query."""
    asked_docs = {d for rels in asked.values() for d in rels}
    return {q for q, rels in judged.items() if not any(d in asked_docs for d in rels)}


def play_dev_users(
    rt: Ragtune, dataset: Path, seed: int
) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, dict[str, int]], set[str], list[dict[str, int]]]:
    """The dev probes' users: they ask the asked two thirds (``dev_split``) in this script's three
    rounds' chunks and click seeds, all under ``rt``'s serving model (no refresh in between).

    Returns the queries, the asked and the judged (dev) qrels, the judged cold queries, and each
    chunk's click counts.
    """
    queries = load_beir_queries(dataset)
    asked, asked_qrels, dev = dev_split(load_beir_qrels(dataset, "train"), seed)
    return queries, asked_qrels, dev, cold_queries(dev, asked_qrels), play_unrefreshed(rt, queries, asked_qrels, asked, seed)


def play_unrefreshed(rt: Ragtune, queries: dict[str, str], qrels: dict[str, dict[str, int]], asked: list[str], seed: int, rounds: int = 3) -> list[dict[str, int]]:
    """This script's rounds of simulated users (chunks of ``asked``, click seeds ``seed * 100 + round``),
    all under ``rt``'s serving model, with no refresh in between. Returns each round's click counts."""
    return [simulate_users(rt, queries, qrels, asked[i::rounds], ClickModel(seed=seed * 100 + i + 1)) for i in range(rounds)]


def user_split(dataset: Path, judge: str, seed: int) -> tuple[list[str], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """The query ids users ask (in asking order), their qrels, and the judged qrels: the train and
    test splits (``judge="test"``, train queries shuffled by ``seed``) or :func:`dev_split`'s."""
    train = load_beir_qrels(dataset, "train")
    if judge == "dev":  # the test split stays unseen: a third of the train queries judges
        return dev_split(train, seed)
    qids = sorted(train)
    random.Random(seed).shuffle(qids)
    return qids, train, load_beir_qrels(dataset, "test")


def base_workspace(dataset: Path, path: Path) -> None:
    """Index the corpus with the default model once and cache the workspace."""
    cache = HERE / "work" / f"base-{dataset.name}"
    if not (cache / "CURRENT").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        rt = Ragtune.init(cache, RagtuneConfig())
        t = time.perf_counter()
        rt.index([dataset])
        print(f"indexed {dataset.name} in {time.perf_counter() - t:.0f}s", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(cache, path, ignore=shutil.ignore_patterns("feedback.sqlite*", "refresh*"))
    RagtuneConfig().save(path / "config.json")  # today's defaults, not those the cache was made with


def plain_finetune(rt: Ragtune, work: Path, max_seq_length: int | None = None) -> tuple[Any, int, float]:
    """Plain sentence-transformers, no ragtune: :func:`plain_finetune_pairs` on every clicked
    (query, doc) pair in the log.

    Returns the model, the number of pairs and the training seconds.
    """
    serving = rt.serving()
    pairs = set()
    for rec in rt.feedback.records(only_with_feedback=True):
        for doc_id, _ in rec.clicks:
            pairs.add((rec.text, doc_id))
    pairs_l = sorted(pairs)
    pos = serving.docs.positions([d for _, d in pairs_l])
    docs = {d.id: d.embed_text for d in serving.docs.get(list(pos.values()))}
    return plain_finetune_pairs([(q, docs[d]) for q, d in pairs_l], work, max_seq_length)


def plain_finetune_pairs(
    pairs: list[tuple[str, str]], work: Path, max_seq_length: int | None = None, *, lora: dict[str, Any] | None = None, epochs: int = 1, lr: float = 2e-5
) -> tuple[Any, int, float]:
    """Plain sentence-transformers, no ragtune: full fine-tune of the default model, MNRL with
    in-batch negatives, lr 2e-5, 1 epoch, batch 32, on (query text, doc text) pairs. With ``lora``
    (``peft.LoraConfig`` keywords, peft's own defaults for the rest), a plain peft LoRA adapter is
    trained instead (give it its own ``lr``, ``epochs``).

    Returns the model, the number of pairs and the training seconds.
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragtune.embedder import load_sentence_transformer

    ds = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    t0 = time.perf_counter()
    model = load_sentence_transformer("default", "cpu")
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    if lora is not None:
        from peft import LoraConfig, TaskType

        model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, **lora))
    args = SentenceTransformerTrainingArguments(output_dir=str(work / "ref-tmp"), num_train_epochs=epochs, per_device_train_batch_size=32, learning_rate=lr, warmup_steps=0.1, save_strategy="no", report_to="none", seed=42, use_cpu=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=MultipleNegativesRankingLoss(model)).train()
    return model, len(pairs), time.perf_counter() - t0


def reference_finetune(rt: Ragtune, queries: dict[str, str], qrels: dict[str, dict[str, int]], cold: set[str], work: Path) -> dict[str, object]:
    """The ``reference``: :func:`plain_finetune` on every click, judged by re-embedding the corpus."""
    model, n_pairs, train_s = plain_finetune(rt, work)
    all_docs = rt.serving().docs.all_documents()
    vecs = model.encode([d.embed_text for d in all_docs], batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=True)
    qids = sorted(qrels)
    qv = model.encode([queries[q] for q in qids], normalize_embeddings=True, convert_to_numpy=True)
    m = evaluate(dense_run(qv, vecs, [d.id for d in all_docs], qids), qrels, cold)
    return {"ndcg@10": m["ndcg@10"], "ndcg@10_cold": m["ndcg@10_cold"], "pairs": n_pairs, "train_s": train_s, "what": "sentence-transformers full fine-tune, MNRL in-batch negatives, lr 2e-5, 1 epoch, batch 32, on all clicked (query, doc) pairs"}


def plot_rounds(results_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for path in sorted(results_dir.glob("closed_loop_*.json")):
        data = json.loads(path.read_text())
        ys = [data["base"]["ndcg@10"]] + [r["ndcg@10"] for r in data["rounds"]]
        ax.plot(range(len(ys)), ys, marker="o", label=f"ragtune {data['mode']}")
        if data.get("reference"):
            ax.axhline(data["reference"]["ndcg@10"], ls=":", color="gray", label="plain ST full fine-tune (reference)")
    ax.set_xticks(range(4))
    ax.set_xlabel("refresh round")
    ax.set_ylabel("nDCG@10 (SciFact test)")
    ax.set_title("Closed loop: simulated clicks on train queries, judged on test queries")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results_dir / "closed_loop.png", dpi=120)


def plot_pca(rt: Ragtune, base_dir: Path, queries: dict[str, str], qrels: dict[str, dict[str, int]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ragtune.docstore import DocStore
    from ragtune.embedder import Embedder, ModelSpec

    qids = sorted(qrels)[:12]
    base_docs = DocStore(base_dir)
    base_vecs = np.load(base_dir / "vectors.npy")
    base_emb = Embedder(ModelSpec(), None, "cpu")
    serving = rt.serving()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (title, emb, docs, vecs) in zip(axes, [("base model", base_emb, base_docs, base_vecs), (f"after refresh ({serving.name})", serving.embedder, serving.docs, np.asarray(serving.vectors()))]):
        qv = emb.encode_queries([queries[q] for q in qids])
        rel = [[docs.positions([d]).get(d) for d in qrels[q]] for q in qids]
        dv = [vecs[[p for p in r if p is not None]] for r in rel]
        allv = np.vstack([qv, *dv])
        mean = allv.mean(0)
        _, _, vt = np.linalg.svd(allv - mean, full_matrices=False)
        axes2 = vt[:2].T
        colors = plt.cm.tab20(np.linspace(0, 1, len(qids)))
        for i in range(len(qids)):
            qp, dp = (qv[i : i + 1] - mean) @ axes2, (dv[i] - mean) @ axes2
            ax.scatter(qp[:, 0], qp[:, 1], marker="*", s=140, color=colors[i])
            ax.scatter(dp[:, 0], dp[:, 1], marker="o", s=40, color=colors[i])
            for d in dp:
                ax.plot([qp[0, 0], d[0]], [qp[0, 1], d[1]], color=colors[i], alpha=0.5, lw=1)
        ax.set_title(f"{title}: test queries (*) and their relevant docs (o)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", choices=["lora", "query", "full", "auto"], default="lora")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=None, help="Run the plain fine-tune reference (default: on for lora).")
    ap.add_argument("--counterfactual", action=argparse.BooleanOptionalAction, default=None, help="Replay refused rounds without the noise check and record the refused candidate's test figures (default: on for query mode).")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", choices=["test", "dev"], default="test", help="test: judge on the test split (the headline). dev: users ask two thirds of the train queries and the other third judges, for choosing settings without looking at test.")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=JSON", help="Config override, e.g. --set train.max_seq_length=128 (repeatable).")
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = HERE / "work" / (f"loop-{args.mode}" if args.judge == "test" else f"loop-{args.mode}-dev")
    base_workspace(args.dataset, work)
    overrides: dict[str, object] = {"refresh.min_new_events": 1}
    if args.epochs:
        overrides["train.epochs"] = args.epochs
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    cfg = RagtuneConfig.load(work / "config.json").with_overrides(overrides)
    cfg.save(work / "config.json")
    rt = Ragtune(work, progress=True)
    base_version = rt.current_version
    assert base_version is not None, "the base workspace has a serving version"
    queries = load_beir_queries(args.dataset)
    qids, train, test = user_split(args.dataset, args.judge, args.seed)
    cold = cold_queries(test, train)
    run = search_run(rt, queries, test)
    base = evaluate(run, test, cold)
    base_per_query = per_query_ndcg(run, test)
    print(f"base: {base}", flush=True)
    chunks = [qids[i :: args.rounds] for i in range(args.rounds)]
    rounds = []
    prev = base
    for r, chunk in enumerate(chunks, 1):
        sim = simulate_users(rt, queries, train, chunk, ClickModel(seed=args.seed * 100 + r))
        report = rt.refresh(mode=args.mode, force=True)
        run = search_run(rt, queries, test)
        m = evaluate(run, test, cold)
        row = {
            "round": r,
            **m,
            "promoted": report["status"] == "promoted",
            "status": report["status"],
            "reason": report.get("reason"),
            "version": rt.current_version,
            "train_s": round(report.get("train_s", 0.0), 1),
            "reembed_s": round(report.get("reembed_s", 0.0), 1),
            "refresh_s": round(report.get("refresh_s", 0.0), 1),
            "n_clicks": sim["clicks"],
            "n_noise_clicks": sim["noise_clicks"],
            "sessions": sim["sessions"],
            "mined": report.get("mined"),
            "gate": report.get("gate"),
            "test_delta_vs_previous": m["ndcg@10"] - prev["ndcg@10"],
        }
        gate = report.get("gate") or {}
        best = max((c.get("heldout", 0.0) for c in gate.get("candidates", {}).values()), default=0.0)
        refused_for_noise = report["status"] == "refused" and best > gate.get("current", {}).get("heldout", 1.0) + rt.config.gate.margin
        if (args.counterfactual if args.counterfactual is not None else args.mode == "query") and refused_for_noise:
            row["if_promoted"] = if_promoted(rt, args.mode, queries, test, cold)
        rounds.append(row)
        prev = m
        print(f"round {r}: {report['status']} ndcg@10 {m['ndcg@10']:.4f} cold {m['ndcg@10_cold']:.4f} ({report.get('reason')})", flush=True)
        if "if_promoted" in row:
            print(f"  if promoted: {row['if_promoted']}", flush=True)
    final = rounds[-1] if rounds else base
    final_per_query = per_query_ndcg(run, test)  # the last round's run (the base's with no rounds)
    run_ref = args.reference if args.reference is not None else args.mode == "lora"
    reference = reference_finetune(rt, queries, test, cold, work) if run_ref else None
    result = {
        "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]),
        "dataset": args.dataset.name,
        "mode": args.mode,
        "judge": args.judge,
        "base": base,
        "final": {k: final[k] for k in ("ndcg@10", "ndcg@10_cold", "ndcg@10_warm", "mrr@10", "recall@100")},
        "gain": final["ndcg@10"] - base["ndcg@10"],
        "cold_change": final["ndcg@10_cold"] - base["ndcg@10_cold"],
        "gain_ci95": paired_ci(final_per_query, base_per_query, sorted(test)),
        "cold_change_ci95": paired_ci(final_per_query, base_per_query, sorted(cold)),
        "rounds": rounds,
        "reference": reference,
        "n_test": len(test),
        "n_cold": len(cold),
        "seed": args.seed,
        "click_model": {**ClickModel().__dict__, "seed": f"{args.seed} * 100 + round"},
        "config": rt.config.to_dict(),
        "total_s": round(time.perf_counter() - t_start, 1),
        "machine": "2 CPU cores, no GPU",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.judge == "test":
        plot_rounds(args.out.parent)
    plot_pca(rt, work / "versions" / base_version, queries, test, args.out.parent / f"closed_loop_pca_{args.mode}.png")
    print(json.dumps({k: result[k] for k in ("mode", "base", "final", "gain", "cold_change", "gain_ci95", "cold_change_ci95", "reference")}, indent=2, default=str))


if __name__ == "__main__":
    main()
