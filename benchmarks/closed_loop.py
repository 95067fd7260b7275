"""The closed-loop benchmark: simulated users → trials → refresh, round by round, judged on test queries.

    python benchmarks/closed_loop.py --dataset ../shared/datasets/scifact --mode query \
        --users uninformative --rounds 5 --sessions 600 --seed 0 --out benchmarks/results/trials/query_uninformative_s0.json

Indexes the corpus with the default model (cached under benchmarks/work/), then each round plays
``--sessions`` searches through the public API (``Ragtune.search``, so a live trial interleaves a
share of them): query ids drawn from the *train* queries with Zipf popularity
(``ragtune.simulate.draw_sessions``: popular queries repeat), clicked by the ``--users`` click model
(``pbm``: position-based; ``trust-cascade``: scan down, stop after a satisfying click, non-relevant
results clicked more near the top; ``uninformative``: one random shown result clicked per search).
Every ``--decide-every`` searches the live trial is decided (``Ragtune.decide_trial``, as an app's
cron would), and once it is (promoted or dropped) ``refresh`` runs at once, as ``refresh --watch``
would, to start the next; at the end of each round ``refresh`` runs too (it settles the trial, or
trains one candidate and starts the next trial). nDCG@10 of the serving version is measured on the *test* queries,
which no user asks, after every round and at every promotion. ``cold`` test queries are those none
of whose relevant docs is relevant to any train query. With ``--reference``, a plain
sentence-transformers full fine-tune on the same clicks is run and evaluated the same way.
``--judge dev`` keeps the test split unseen: users ask two thirds of the train queries and the
other third judges, for choosing settings. Writes the JSON after every round (``"complete": false``
until the last, so a run stopped early keeps what it measured) and at the end re-draws
closed_loop_trials.png beside it (test nDCG@10 per round, one line per users × mode, mean over the
seeds found).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

from ragtune import Ragtune, RagtuneConfig
from ragtune.evaluate import evaluate_run, load_beir_qrels, load_beir_queries, ndcg_at_k
from ragtune.serving import ServingVersion
from ragtune.simulate import CLICK_MODEL_PRESETS, ClickModel, click_model, draw_sessions, simulate_users

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


def version_ndcg(rt: Ragtune, version: str, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> float:
    """nDCG@10 of any version of ``rt``'s workspace (a live trial's too) on ``qrels``, by exact search over its vectors."""
    v = ServingVersion(rt.ws, rt.config, version)
    qids = sorted(qrels)
    run = dense_run(v.embedder.encode_queries([queries[q] for q in qids]), v.vectors(), v.docs.ids, qids)
    return float(evaluate_run(run, qrels)["ndcg@10"])


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
    from filelock import FileLock  # a dependency of transformers and torch

    cache = HERE / "work" / f"base-{dataset.name}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):  # runs started together build the cache once, not into each other
        if not (cache / "CURRENT").is_file():
            shutil.rmtree(cache, ignore_errors=True)
            building = cache.with_name(cache.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            rt = Ragtune.init(building, RagtuneConfig())
            t = time.perf_counter()
            rt.index([dataset])
            del rt
            os.replace(building, cache)
            print(f"indexed {dataset.name} in {time.perf_counter() - t:.0f}s", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(cache, path, ignore=shutil.ignore_patterns("feedback.sqlite*", "*.lock"))  # the log keeps its "indexed" entry
    RagtuneConfig().save(path / "config.json")  # today's defaults, not those the cache was made with


def played_log(dataset: Path, name: str, queries: dict[str, str], asked: list[str], asked_qrels: dict[str, dict[str, int]], sessions: int, seed: int, users: ClickModel) -> tuple[Path, dict[str, int]]:
    """A workspace (``work/NAME``) whose log holds ``sessions`` Zipf-drawn searches of ``asked`` by ``users`` under the base model; made once, then reused."""
    log_ws = HERE / "work" / name
    if not (log_ws / "played").is_file():
        base_workspace(dataset, log_ws)
        rt = Ragtune(log_ws, progress=False)
        clicks = simulate_users(rt, queries, asked_qrels, draw_sessions(asked, sessions, seed=seed), users)
        rt.feedback.close()
        (log_ws / "played").write_text(json.dumps(clicks))
    return log_ws, json.loads((log_ws / "played").read_text())


def dev_candidate(log_ws: Path, name: str) -> Ragtune:
    """A fresh copy (``work/NAME``) of a played log's workspace with the offline check off (``gate.confidence`` 0), opened."""
    ws = HERE / "work" / name
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(log_ws, ws)
    RagtuneConfig.load(ws / "config.json").with_overrides({"gate.confidence": 0.0}).save(ws / "config.json")
    return Ragtune(ws, progress=False)


def candidate_figures(report: Any, base: float, after: float) -> dict[str, Any]:
    """What a dev-split comparison records of one ``refresh --mode query --no-trial`` candidate."""
    check = report.check
    return {
        "status": report.status,
        "dev_ndcg": round(after, 4),
        "dev_gain": round(after - base, 4),
        "check_loglik": round(check.score, 4) if check and check.score is not None else None,
        "check_loglik_serving": round(check.current, 4) if check and check.current is not None else None,
        "click_noise": report.mined.get("click_noise"),
    }


def dev_parser(doc: str | None, users: str, sessions: int) -> argparse.ArgumentParser:
    """The arguments every dev-split comparison takes: ``--dataset``, ``--out``, ``--users``, ``--seeds``, ``--sessions``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", default=users)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sessions", type=int, default=sessions)
    return ap


def dev_comparison(
    dataset: Path, users: list[str], seeds: list[int], sessions: int, name: str, make_users: Callable[[str, int], ClickModel],
    variants: dict[str, Callable[[Ragtune], Any]], extra: Callable[[Any], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Query-tier candidates made by each variant from one played log per kind of users and seed, judged on the dev split.

    ``variants`` map a name to a call that refreshes the workspace it is given (a fresh copy of the
    log, offline check off) and returns the report; ``extra`` adds figures of a report to its row.
    """
    queries = load_beir_queries(dataset)
    train = load_beir_qrels(dataset, "train")
    rows: list[dict[str, Any]] = []
    for u in users:
        for seed in seeds:
            asked, asked_qrels, dev = dev_split(train, seed)
            log_ws, clicks = played_log(dataset, f"{name}-{u}-s{seed}-{sessions}", queries, asked, asked_qrels, sessions, seed, make_users(u, seed))
            base_rt = Ragtune(log_ws, progress=False)
            base = version_ndcg(base_rt, str(base_rt.current_version), queries, dev)
            row: dict[str, Any] = {"users": u, "seed": seed, "clicks": clicks, "dev_ndcg_base": round(base, 4), "variants": {}}
            for vname, refresh in variants.items():
                rt = dev_candidate(log_ws, f"{name}-candidate")
                report = refresh(rt)
                after = version_ndcg(rt, str(rt.current_version), queries, dev)
                row["variants"][vname] = {**candidate_figures(report, base, after), **(extra(report) if extra else {})}
                rt.feedback.close()
                print(u, seed, vname, row["variants"][vname], flush=True)
            rows.append(row)
    return rows


def patched_query_refresh(apply: Callable[[], None], restore: Callable[[], None]) -> Callable[[Ragtune], Any]:
    """A :func:`dev_comparison` variant: ``refresh --mode query --no-trial --force`` with a patch applied around it."""

    def refresh(rt: Ragtune) -> Any:
        apply()
        try:
            return rt.refresh(mode="query", trial=False, force=True)
        finally:
            restore()

    return refresh


def write_dev_result(out: Path, rows: list[dict[str, Any]], users: list[str], t0: float) -> None:
    """Write a dev-split comparison's rows with each variant's mean dev gain per kind of users, and the command."""
    import statistics

    names = list(rows[0]["variants"]) if rows else []
    summary = {u: {n: round(statistics.mean(r["variants"][n]["dev_gain"] for r in rows if r["users"] == u), 4) for n in names} for u in users}
    result = {"command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]), "rows": rows, "mean_dev_gain": summary, "total_s": round(time.perf_counter() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


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


def plot_rounds(results_dir: Path, out: Path) -> None:
    """Test nDCG@10 per round, one line per users × mode (the mean over the seeds found)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[tuple[str, str, str], list[list[float]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if "users" not in data or data.get("judge") != "test":
            continue
        ys = [data["base"]["ndcg@10"]] + [r["ndcg@10"] for r in data["rounds"]]
        overrides = " ".join(a for a in data["command"].split() if "=" in a)
        runs.setdefault((data["users"], data["mode"], overrides), []).append(ys)
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(12, 5))
    colors = plt.get_cmap("tab20").colors
    for i, ((users, mode, overrides), series) in enumerate(sorted(runs.items())):
        n = min(len(s) for s in series)
        mean = np.mean([s[:n] for s in series], axis=0)
        extra = f", {overrides}" if overrides else ""
        ax.plot(range(n), mean, marker="o", color=colors[i % len(colors)], label=f"{users} users, {mode}{extra} ({len(series)} seed{'s' if len(series) > 1 else ''})")
    ax.set_xlabel("round")
    ax.set_ylabel("nDCG@10 of the serving version (SciFact test)")
    ax.set_title("Closed loop with interleaved trials: simulated users on train queries, judged on test", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=600, help="Searches per round.")
    ap.add_argument("--users", choices=CLICK_MODEL_PRESETS, default="pbm")
    ap.add_argument("--mode", choices=["lora", "query", "full", "auto"], default="query")
    ap.add_argument("--decide-every", type=int, default=50, help="Searches between decisions of the live trial.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=False, help="Run the plain fine-tune reference on the same clicks.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", choices=["test", "dev"], default="test")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=JSON", help="Config override, e.g. --set train.max_seq_length=128 (repeatable).")
    ap.add_argument("--repeat-level", type=float, default=None, help="Ablation: ragtune.mining.REPEAT_LEVEL for this run (0: repeated clicks on one result get no special trust).")
    args = ap.parse_args()
    t_start = time.perf_counter()
    tagged = [*args.overrides, *([f"repeat_level={args.repeat_level}"] if args.repeat_level is not None else [])]
    tag = "-" + hashlib.sha1(" ".join(tagged).encode()).hexdigest()[:6] if tagged else ""
    if args.repeat_level is not None:
        import ragtune.mining

        ragtune.mining.REPEAT_LEVEL = args.repeat_level
    work = HERE / "work" / f"loop-{args.mode}-{args.users}-s{args.seed}-{args.judge}{tag}"
    base_workspace(args.dataset, work)
    overrides: dict[str, object] = {"refresh.min_new_events": 1}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    cfg = RagtuneConfig.load(work / "config.json").with_overrides(overrides)
    cfg.save(work / "config.json")
    rt = Ragtune(work, progress=False)
    rt.server.rng.seed(args.seed)  # the interleaving coins: reproducible per seed
    base_version = rt.current_version
    assert base_version is not None, "the base workspace has a serving version"
    queries = load_beir_queries(args.dataset)
    qids, train, test = user_split(args.dataset, args.judge, args.seed)
    cold = cold_queries(test, train)

    def judge() -> tuple[dict[str, float], dict[str, float]]:
        run = search_run(rt, queries, test)
        return evaluate(run, test, cold), per_query_ndcg(run, test)

    base, base_per_query = judge()
    print(f"base: {base}", flush=True)
    scores = {base_version: base["ndcg@10"]}
    sessions = draw_sessions(qids, args.sessions * args.rounds, seed=args.seed)
    rounds: list[dict[str, Any]] = []
    promotions: list[dict[str, Any]] = []
    trials: list[dict[str, Any]] = []
    searches_done = 0
    trial_started_at: dict[str, int] = {}
    candidate_test: dict[str, float] = {}

    def note_trial(t: dict[str, Any] | None) -> None:
        """Record a decided trial (promoted or dropped) with its figures and whether a promotion was worse on test."""
        if t is None or t.get("verdict") == "continue":
            return
        row = {k: t.get(k) for k in ("id", "version", "baseline", "tier", "verdict", "reason", "wins", "losses", "ties", "repeats", "searches", "p_value")}
        row["decided_after_searches"] = searches_done - trial_started_at.get(str(t["id"]), 0)
        row["test_candidate"] = candidate_test.get(str(t["id"]))  # the trial version's test nDCG@10, promoted or not
        if t["verdict"] == "promote":
            m, _ = judge()
            scores[str(t["version"])] = m["ndcg@10"]
            before = scores.get(str(t["baseline"]))
            row.update(test_before=before, test_after=m["ndcg@10"], worse_on_test=before is not None and m["ndcg@10"] < before)
            promotions.append(row)
        trials.append(row)
        print(f"  trial {t['id']} {t['verdict']}: {t['reason']}", flush=True)

    def refresh_now() -> Any:
        report = rt.refresh(mode=args.mode, force=True)
        note_trial(report.settled)
        if report.status == "trial_started" and report.trial:
            trial_started_at[str(report.trial["id"])] = searches_done
            trial_id = str(report.trial["id"])
            candidate_test[trial_id] = version_ndcg(rt, str(report.trial["version"]), queries, test)
            print(f"  trial {trial_id} started: its candidate's test nDCG@10 {candidate_test[trial_id]:.4f}", flush=True)
        return report

    def save(reference: dict[str, object] | None, *, complete: bool) -> dict[str, Any]:
        """Write the JSON: after every round (``complete`` false: a stopped run keeps what it measured) and at the end."""
        final = rounds[-1] if rounds else base
        result = {
            "command": "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]),
            "complete": complete,
            "rounds_done": len(rounds),
            "dataset": args.dataset.name,
            "mode": args.mode,
            "users": args.users,
            "judge": args.judge,
            "sessions_per_round": args.sessions,
            "base": base,
            "final": {k: final[k] for k in ("ndcg@10", "ndcg@10_cold", "ndcg@10_warm", "mrr@10", "recall@100")},
            "gain": final["ndcg@10"] - base["ndcg@10"],
            "cold_change": final["ndcg@10_cold"] - base["ndcg@10_cold"],
            "gain_ci95": paired_ci(per_query, base_per_query, sorted(test)),
            "cold_change_ci95": paired_ci(per_query, base_per_query, sorted(cold)),
            "promotions": promotions,
            "n_promotions": len(promotions),
            "n_promotions_worse_on_test": sum(1 for p in promotions if p["worse_on_test"]),
            "trials": trials,
            "rounds": rounds,
            "reference": reference,
            "n_test": len(test),
            "n_cold": len(cold),
            "seed": args.seed,
            "click_model": click_model(args.users, seed=0).__dict__,
            "config": rt.config.to_dict(),
            "total_s": round(time.perf_counter() - t_start, 1),
            "machine": "2 CPU cores, no GPU",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result

    per_query = base_per_query
    for r in range(1, args.rounds + 1):
        chunk = sessions[(r - 1) * args.sessions : r * args.sessions]
        mid: list[Any] = []
        sim = {"sessions": 0, "clicks": 0, "relevant_clicks": 0, "noise_clicks": 0}
        for start in range(0, len(chunk), args.decide_every):
            got = simulate_users(rt, queries, train, chunk[start : start + args.decide_every], click_model(args.users, seed=args.seed * 100000 + r * 1000 + start))
            for key in sim:
                sim[key] += got[key]
            searches_done += got["sessions"]
            if rt.ws.trial_path.exists():
                decided = rt.decide_trial()
                note_trial(decided)
                if decided is not None and decided["verdict"] != "continue":  # as `refresh --watch` would: the next candidate at once
                    mid.append(refresh_now())
        report = refresh_now()
        refreshes = [*mid, report]
        m, per_query = judge()
        live = rt.trial()
        row = {
            "round": r,
            **m,
            "version": rt.current_version,
            "status": report.status,
            "reason": report.reason,
            "check": report.check.to_dict() if report.check else None,
            "trial": {k: live.get(k) for k in ("id", "version", "tier", "wins", "losses", "ties", "repeats", "searches", "p_value", "verdict")} if live else None,
            "refreshes": [{"status": x.status, "reason": x.reason, "train_s": round(x.train_s, 1), "reembed_s": round(x.reembed_s, 1), "refresh_s": round(x.refresh_s, 1)} for x in refreshes],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # this process's peak so far (refreshes run in it)
            **{f"n_{k}": v for k, v in sim.items()},
            "mined": report.mined,
        }
        rounds.append(row)
        print(f"round {r}: serving {rt.current_version} ndcg@10 {m['ndcg@10']:.4f} cold {m['ndcg@10_cold']:.4f}; refresh {report.status}: {report.reason}", flush=True)
        save(None, complete=False)
    result = save(reference_finetune(rt, queries, test, cold, work) if args.reference else None, complete=True)
    if args.judge == "test":
        plot_rounds(args.out.parent, args.out.parent / "closed_loop_trials.png")
    print(json.dumps({k: result[k] for k in ("mode", "users", "base", "final", "gain", "cold_change", "gain_ci95", "n_promotions", "n_promotions_worse_on_test")}, indent=2, default=str))


if __name__ == "__main__":
    main()
