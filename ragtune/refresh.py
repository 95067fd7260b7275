"""The refresh: settle the live trial → mine → make one candidate → offline check → stage → trial.

Orchestration only. It takes its collaborators (the workspace, the config, the serving side, the
feedback log) and never the facade. One refresh, under the workspace lock:

1. A live trial is settled first (:func:`ragtune.trial.settle`): promoted, dropped, or, while
   undecided, left running, in which case nothing is trained (one trial at a time).
2. With enough new feedback, the log is mined and *one* candidate made for the tier (``query``:
   the query tier, cross-fitted; ``lora``/``full``: a fine-tune of the base model; ``auto``: the
   query tier, and a LoRA candidate only when the query tier is not worth a trial).
3. The offline check (:func:`ragtune.gate.check`) says whether it is worth a trial: the query tier
   must be ahead of the serving model, a LoRA/full candidate only not behind it (with
   ``trial=False``, where the check itself promotes, it must be ahead too).
4. Worth it: the candidate is written as a staged version (a document-side one re-embedded beside
   the serving index) and becomes the live trial. With ``trial=False`` it is promoted at once; with
   a labelled ``eval_beir`` set, it is promoted only if it beats the serving model there.

Every decision goes into ``refresh-log.jsonl``; the report is a :class:`RefreshReport`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.config import RagtuneConfig
from ragtune.embedder import Embedder, ModelSpec
from ragtune.engines import encode_corpus
from ragtune.errors import WorkspaceError
from ragtune.faults import checkpoint
from ragtune.feedback import FeedbackLog
from ragtune.gate import (
    Bar,
    CheckResult,
    GateSet,
    build_gate_set,
    check,
    loglik_per_query,
    refuse_retrain,
    refuse_untrained,
    score_candidate,
    score_current,
)
from ragtune.mining import MinedSet, TrainExample, mine, normalize_query
from ragtune.recovery import feedback_mark, new_decision, replay_decisions
from ragtune.serving import Server, ServingVersion
from ragtune.trial import TrialDecision, TrialState, settle, start_trial
from ragtune.workspace import OOF_FILE, TRAINED_FILE, Workspace

__all__ = ["FOLDS", "Candidate", "RefreshReport", "last_refused_events", "run_refresh", "trained_queries"]

logger = logging.getLogger(__name__)

#: Folds of the query tier's cross-fitting: every feedback query is judged by a tier fitted without it.
FOLDS = 5
#: Training pairs needed at all.
MIN_PAIRS = 8


@dataclass
class Candidate:
    """One candidate model made by a refresh.

    Attributes:
        tier: ``"query"``, ``"lora"`` or ``"full"``.
        spec: Its model spec (file paths inside ``files``).
        files: The work directory holding its files.
        trained: Normalised feedback query texts it was trained on (with its document side's).
        train: How training went (seconds, epochs, pairs...).
        oof: A query tier's out-of-fold vectors of the feedback queries (keys, vectors), kept with it.
    """

    tier: str
    spec: ModelSpec
    files: Path
    trained: set[str]
    train: dict[str, Any] = field(default_factory=dict)
    oof: tuple[list[str], np.ndarray] | None = None


@dataclass
class RefreshReport:
    """What one refresh did.

    Attributes:
        status: ``"skipped"`` (too little new feedback, or too little to train on), ``"trial_running"``
            (a live trial is undecided: nothing trained), ``"refused"`` (the candidate was not worth a
            trial, or lost on the labelled set), ``"trial_started"`` or ``"promoted"`` (without a
            trial, or on a labelled set).
        reason: One line saying why, with the figures.
        mode: The refresh mode.
        current: The serving version when the refresh started deciding (after a settled trial).
        version: The version made (the trial version, or the promoted one).
        new_events: Clicks and ratings since the last refresh that read the feedback (one that trained a
            candidate, or found too little to train on: the same feedback is not read twice for nothing).
        mined: Mining counts.
        check: The offline check of the candidate (``auto``: of the tier tried last).
        checks: Every tier's offline check (``auto`` has two when the query tier was not worth a trial).
        labelled: The check on the labelled ``eval_beir`` set, when one decided.
        settled: The live trial this refresh settled first (its state and decision), if any.
        trial: The trial now live (started or still running), if any.
        train_s: Seconds of training.
        reembed_s: Seconds of re-embedding the corpus.
        refresh_s: Seconds in all.
    """

    status: str
    reason: str
    mode: str
    current: str | None = None
    version: str | None = None
    new_events: int = 0
    mined: dict[str, Any] = field(default_factory=dict)
    check: CheckResult | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)
    labelled: CheckResult | None = None
    settled: dict[str, Any] | None = None
    trial: dict[str, Any] | None = None
    train_s: float = 0.0
    reembed_s: float = 0.0
    refresh_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able dicts (``--json``)."""
        out = dict(self.__dict__)
        out["check"] = self.check.to_dict() if self.check else None
        out["checks"] = {k: c.to_dict() for k, c in self.checks.items()}
        out["labelled"] = self.labelled.to_dict() if self.labelled else None
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)


def trained_queries(ws: Workspace, version: str) -> set[str]:
    """The feedback queries (normalised text) a version's model was trained on (none for a plain index)."""
    path = ws.version_dir(version) / TRAINED_FILE
    return set(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else set()


def last_refused_events(ws: Workspace, tier: str, serving: str, bar: Bar) -> int | None:
    """Clicks and ratings the log held when the offline check last refused a trained ``tier`` candidate against ``serving`` under ``bar``, or under
    ``"not_behind"`` (one behind is not ahead either), from ``refresh-log.jsonl``; ``None`` if it never did."""
    for entry in reversed(ws.read_log()):
        checked = (entry.get("checks") or {}).get(tier) if entry.get("event") == "refresh_refused" and entry.get("current") == serving else None
        # a candidate refused as behind would not be ahead either: a refusal under the lenient bar counts for both
        if isinstance(checked, dict) and checked.get("current") is not None and checked.get("bar") in (bar, "not_behind"):
            return _feedback_events(entry.get("mined") or {})
    return None


def _feedback_events(mined: dict[str, Any]) -> int | None:
    """Clicks and ratings in the log, from mining's counts (``None`` when they hold neither)."""
    counts = [c for c in (mined.get("clicks"), mined.get("ratings")) if isinstance(c, int)]
    return sum(counts) if counts else None


def _trial_summary(state: TrialState, decision: TrialDecision) -> dict[str, Any]:
    return {"id": state.id, "version": state.version, "baseline": state.baseline, "tier": state.tier, "share": state.share, "started": state.started, **decision.to_dict()}


def run_refresh(
    ws: Workspace,
    config: RagtuneConfig,
    server: Server,
    log: FeedbackLog,
    *,
    mode: str | None = None,
    force: bool = False,
    trial: bool = True,
    eval_beir: str | Path | None = None,
    eval_split: str = "test",
    min_new_events: int | None = None,
    progress: bool = False,
) -> RefreshReport:
    """Run one refresh; see :meth:`ragtune.Ragtune.refresh` and the module docstring."""
    t0 = time.perf_counter()
    mode = mode or config.train.mode
    threshold = config.refresh.min_new_events if min_new_events is None else min_new_events
    with ws.lock("refresh"):
        replay_decisions(ws, log, config.trial)  # first: an interrupted index or trial start is completed before anything is decided
        settled = settle(ws, log, config.trial)  # finishes an interrupted promotion or drop too
        settled_summary = _trial_summary(*settled) if settled else None
        if settled is not None and settled[1].verdict != "continue":
            ws.prune_versions(config)
        if settled is not None and settled[1].verdict == "continue":
            return RefreshReport("trial_running", f"trial {settled[0].id} ({settled[0].version}) is live: {settled[1].reason}", mode, ws.current_version(), trial=settled_summary, refresh_s=time.perf_counter() - t0)
        report = _refresh_locked(ws, config, server, log, mode, force=force, trial=trial, eval_beir=eval_beir, eval_split=eval_split, threshold=threshold, progress=progress)
        report.settled = settled_summary
        report.refresh_s = time.perf_counter() - t0
        return report


def _refresh_locked(
    ws: Workspace,
    config: RagtuneConfig,
    server: Server,
    log: FeedbackLog,
    mode: str,
    *,
    force: bool,
    trial: bool,
    eval_beir: str | Path | None,
    eval_split: str,
    threshold: int,
    progress: bool,
) -> RefreshReport:
    try:
        serving = server.current_to_build_on()  # a candidate is built on the serving version: never on a stand-in
    except WorkspaceError as exc:
        raise WorkspaceError(f"{exc}; then refresh again") from None
    new_events = log.events_since(feedback_mark(ws, log))
    report = RefreshReport("skipped", "", mode, serving.name, new_events=new_events)
    if new_events < threshold and not force:
        report.reason = f"only {new_events} new feedback events since the last refresh (need {threshold}); nothing to do (a forced refresh trains anyway)"
        return report
    marked = new_decision("refresh", log)  # the watermark before reading: every outcome logs it (events after it count next time)
    records = log.records()  # every search: the click-noise estimate needs the unclicked ones too
    ws.work_dir.mkdir(exist_ok=True)
    try:
        return _train_and_decide(ws, config, serving, log, records, report, mode, marked, force=force, trial=trial, eval_beir=eval_beir, eval_split=eval_split, progress=progress)
    finally:
        with contextlib.suppress(OSError):
            ws.work_dir.rmdir()  # empty once the refresh's own folder is gone


def _train_and_decide(
    ws: Workspace,
    config: RagtuneConfig,
    serving: ServingVersion,
    log: FeedbackLog,
    records: list[Any],
    report: RefreshReport,
    mode: str,
    marked: dict[str, Any],
    *,
    force: bool,
    trial: bool,
    eval_beir: str | Path | None,
    eval_split: str,
    progress: bool,
) -> RefreshReport:
    mark = marked["mark"]
    with tempfile.TemporaryDirectory(prefix="refresh-", dir=ws.work_dir) as tmp:
        # auto: the cheap tier first; the document side only when the query tier has nothing worth a trial
        tiers = ["query", "lora"] if mode == "auto" else [mode]
        # a trial (or a labelled set) decides after a "not behind" LoRA/full candidate; with --no-trial the
        # check itself promotes: there the candidate must show a gain
        bar: Bar = "not_behind" if trial or eval_beir is not None else "ahead"
        candidate: Candidate | None = None
        for tier in tiers:
            made = _make_candidate(ws, config, serving, records, tier, Path(tmp) / tier, progress, bar, force)
            if made is None:
                continue
            cand, checked, mined = made
            report.mined, report.check = mined.report(), checked
            report.train_s += float(cand.train.get("train_s", 0.0)) if cand is not None else 0.0
            report.checks[tier] = checked
            if checked.worth_trial and cand is not None:
                candidate = cand
                break
        checkpoint("refresh.trained")
        if report.check is None:
            report.reason = f"too little feedback to train: fewer than {MIN_PAIRS} training pairs, or no query to check a candidate on"
            ws.append_log({"event": "refresh_skipped", "mode": mode, "current": serving.name, "reason": report.reason, "mark": mark})
            return report
        if candidate is None:
            report.status, report.reason = "refused", "not worth a trial: " + "; ".join(c.reason for c in report.checks.values())
            ws.append_log({"event": "refresh_refused", "mode": mode, "current": serving.name, "reason": report.reason, "checks": {k: c.to_dict() for k, c in report.checks.items()}, "mined": report.mined, "mark": mark})
            logger.info("refresh refused: %s", report.reason)  # an outcome the report carries, not a fault
            return report
        t_embed = time.perf_counter()
        if eval_beir is not None:
            labelled = _labelled_check(serving, candidate, config, Path(eval_beir), eval_split)
            report.labelled = labelled
            if not labelled.worth_trial:
                report.status, report.reason = "refused", f"lost on the labelled set: {labelled.reason}"
                ws.append_log({"event": "refresh_refused", "mode": mode, "current": serving.name, "reason": report.reason, "labelled": labelled.to_dict(), "mark": mark})
                return report
        direct = eval_beir is not None or not trial
        if direct:
            why = f"labelled set: {report.labelled.reason}" if report.labelled else "trial skipped by the operator (trial=False / --no-trial)"
            reason = f"{candidate.tier} candidate promoted without a trial ({why}); offline: {report.check.reason}"
            decision = {**marked, "event": "promoted", "mode": mode, "previous": serving.name, "reason": reason, "check": report.check.to_dict()}
        else:
            decision = {**marked, "event": "trial_started", "mode": mode}
        name = _write_candidate(ws, config, serving, candidate, report, make_current=direct, decision=decision, progress=progress)
        report.version = name
        report.reembed_s = time.perf_counter() - t_embed if candidate.tier != "query" else 0.0
        if direct:
            checkpoint("refresh.swapped")
            report.status, report.reason = "promoted", reason
            ws.append_log({**decision, "version": name})
            return report
        state = start_trial(ws, name, serving.name, candidate.tier, config.trial, report.check.to_dict(), decision)
        report.status = "trial_started"
        report.reason = f"{candidate.tier} candidate {name} is live as trial {state.id} ({100 * state.share:.0f}% of searches interleaved); offline: {report.check.reason}"
        report.trial = {"id": state.id, "version": name, "baseline": serving.name, "tier": candidate.tier, "share": state.share, "started": state.started}
        return report


def _make_candidate(
    ws: Workspace, config: RagtuneConfig, serving: ServingVersion, records: list[Any], tier: str, out: Path, progress: bool, bar: Bar, force: bool
) -> tuple[Candidate | None, CheckResult, MinedSet] | None:
    """Mine for ``tier``, train its one candidate and check it offline; ``None`` when there is too little to train on.

    ``bar`` applies to a document-side candidate (:mod:`ragtune.gate`); the query tier is always held to ``"ahead"``.
    A document-side candidate is not trained (the candidate is then ``None``) when the check could
    only refuse it (too few held-out queries), or, unless ``force``, when one was refused against
    the serving version with more than half the clicks and ratings in the log now (:func:`ragtune.gate.refuse_retrain`).
    """
    trained = trained_queries(ws, serving.name)
    if tier == "query":
        oof = _load_oof(ws, serving)
        mined = mine(records, serving, config.mining, config.feedback, heldout_keys={normalize_query(r.text) for r in records}, train_on_heldout=True)
        # judge only queries the serving model never trained on, or has an out-of-fold vector for
        mined.heldout = [h for h in mined.heldout if normalize_query(h.query) not in trained or normalize_query(h.query) in oof]
        if len(mined.train) < MIN_PAIRS or not mined.heldout:
            return None
        cand, cur_per, cand_per = _query_candidate(ws, config, serving, mined, oof, out)
        return cand, check("query", "loglik", cand_per, cur_per, config.gate, on="feedback, cross-fitted"), mined
    mined = mine(records, serving, config.mining, config.feedback)
    held_out = len(mined.heldout)
    mined.heldout = [h for h in mined.heldout if normalize_query(h.query) not in trained]
    # `feedback mine` counts every held-out query; say why the check has fewer
    left_out = held_out - len(mined.heldout)
    on = "held-out feedback" + (f" ({left_out} more held-out {'query' if left_out == 1 else 'queries'} left out: the serving version trained on them)" if left_out else "")
    if len(mined.train) < MIN_PAIRS or not (mined.heldout or left_out):
        return None
    refused = refuse_untrained(tier, "ndcg@10", len(mined.heldout), config.gate, on=on, bar=bar, left_out=left_out)
    if refused is None and not mined.heldout:  # every held-out query left out, and the check is off: nothing to check on
        return None
    if refused is None and not force:
        events = _feedback_events(mined.stats) or 0
        refused = refuse_retrain(tier, "ndcg@10", len(mined.heldout), events, last_refused_events(ws, tier, serving.name, bar), on=on, bar=bar)
    if refused is not None:
        return None, refused, mined
    cand = _doc_candidate(config, serving, mined, tier, out, progress)
    gs = build_gate_set("heldout", serving, [h.query for h in mined.heldout], [dict(h.positive_ids) for h in mined.heldout], shown=[h.shown_ids for h in mined.heldout])
    emb = Embedder(cand.spec, ws.root, config.model.device, config.model.batch_size)
    cur = score_current(gs, serving)["per_query"]["ndcg@10"]
    new = score_candidate(gs, serving, emb, shares_documents=False)["per_query"]["ndcg@10"]
    return cand, check(tier, "ndcg@10", new, cur, config.gate, on=on, bar=bar), mined


def _load_oof(ws: Workspace, serving: ServingVersion) -> dict[str, np.ndarray]:
    """The serving query tier's out-of-fold vectors of the feedback queries it was fitted on (empty if none)."""
    path = ws.version_dir(serving.name) / OOF_FILE
    if not path.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        keys = json.loads((fh.metadata() or {}).get("keys", "[]"))
        vecs = fh.get_tensor("vectors")
    return dict(zip(keys, vecs))


def _query_candidate(
    ws: Workspace, config: RagtuneConfig, serving: ServingVersion, mined: MinedSet, serving_oof: dict[str, np.ndarray], out: Path
) -> tuple[Candidate, list[float], list[float]]:
    """The query tier fitted on all feedback, and the per-query loglik of it (out of fold) and of the serving model."""
    from safetensors.numpy import save_file

    from ragtune.training.crossfit import QueryPairs, crossfit_query_tier, fit_query_tier
    from ragtune.training.query_map import HARD_PER_QUERY, SOFTMAX_DOCS

    tc = config.train
    doc_side = serving.spec.document_side()
    raw = Embedder(doc_side, ws.root, config.model.device, config.model.batch_size)
    pmap = serving.docs.positions(sorted({ex.positive_id for ex in mined.train}))
    train = [ex for ex in mined.train if ex.positive_id in pmap]
    queries = [h.query for h in mined.heldout]
    texts = list(dict.fromkeys([ex.query for ex in train] + queries))
    enc = raw.encode_queries(texts)
    row = {t: i for i, t in enumerate(texts)}
    pairs = QueryPairs(
        enc[[row[ex.query] for ex in train]],
        np.array([pmap[ex.positive_id] for ex in train], dtype=np.int64),
        np.array([ex.weight for ex in train], dtype=np.float64),
        [ex.query_key for ex in train],
    )
    vecs = np.asarray(serving.vectors())
    if len(vecs) > SOFTMAX_DOCS:  # the map's softmax samples the corpus: each query's nearest docs are its hard negatives
        pairs.neighbours = serving.store.search(pairs.queries, HARD_PER_QUERY)[1]
    keys = [normalize_query(q) for q in queries]
    t0 = time.perf_counter()
    oof = crossfit_query_tier(pairs, keys, enc[[row[q] for q in queries]], vecs, tc, FOLDS)
    fitted = fit_query_tier(pairs, np.arange(len(pairs)), vecs, tc)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"weight": fitted.weight}, str(out / "query_map.safetensors"))
    fields: dict[str, Any] = {**doc_side.to_dict(), "query_map": str(out / "query_map.safetensors"), "query_interpolation": float(tc.query_interpolation)}
    if fitted.memory is not None:
        fitted.memory.save(out / "query_memory.safetensors")
        fields.update(query_memory=str(out / "query_memory.safetensors"), memory_weight=float(tc.memory_weight), memory_threshold=float(tc.memory_threshold))
    gs = GateSet("feedback", queries, [dict(h.positive_ids) for h in mined.heldout], [[] for _ in queries])
    cur_vecs = serving.embedder.encode_queries(queries)
    for i, k in enumerate(keys):  # out of fold where the serving tier was fitted on the query
        if (v := serving_oof.get(k)) is not None:
            cur_vecs[i] = v
    doc_trained = trained_queries(ws, serving.info.index_version)
    cand = Candidate(
        "query",
        ModelSpec(**fields),
        out,
        {ex.query_key for ex in train} | doc_trained,
        {"train_s": time.perf_counter() - t0, "pairs": len(pairs), "folds": FOLDS, "memory_size": len(fitted.memory.keys) if fitted.memory is not None else 0},
        (keys, oof),
    )
    return cand, loglik_per_query(gs, serving, cur_vecs), loglik_per_query(gs, serving, oof)


def _doc_candidate(config: RagtuneConfig, serving: ServingVersion, mined: MinedSet, mode: str, out: Path, progress: bool) -> Candidate:
    """A LoRA or full fine-tune of the base model on every training pair (early stopping on the held-out ones)."""
    from ragtune.training.sentence import train_sentence_model

    side = serving.spec.document_side()
    base = ModelSpec(
        base=side.base, query_prefix=side.query_prefix, document_prefix=side.document_prefix, max_seq_length=side.max_seq_length,
        backend=side.backend, quantization=side.quantization,
    )  # fmt: skip
    held_ids = sorted({d for h in mined.heldout for d in h.positive_ids} - set(mined.doc_texts))
    pmap = serving.docs.positions(held_ids)
    mined.doc_texts.update({d.id: d.embed_text for d in serving.docs.get(list(pmap.values()))})
    # each held-out pair weighs what a training pair would (its share of the query's searches), so early
    # stopping watches the loss that training lowers rather than one where a stray click counts as an answer
    eval_examples = [TrainExample(h.query, d, [], w, normalize_query(h.query)) for h in mined.heldout for d, w in h.positive_ids.items() if d in mined.doc_texts]
    filler_pos = np.random.default_rng(config.train.seed).choice(len(serving.docs), size=min(512, len(serving.docs)), replace=False)
    filler = [d.embed_text for d in serving.docs.get([int(p) for p in filler_pos])]
    res = train_sentence_model(base, mined.train, eval_examples, mined.doc_texts, config.train, mode=mode, out_dir=out, device=config.model.device, filler=filler, progress=progress)
    spec = ModelSpec(**{**base.to_dict(), "adapter": str(out), "adapter_kind": mode})
    info = {"train_s": res.seconds, "steps": res.steps, "epochs": res.epochs_run, "best_eval_loss": res.best_eval_loss, "train_loss": res.train_loss}
    return Candidate(mode, spec, out, {ex.query_key for ex in mined.train}, info)


def _labelled_check(serving: ServingVersion, cand: Candidate, config: RagtuneConfig, root: Path, split: str) -> CheckResult:
    """The candidate against the serving model on a labelled BEIR split (pool re-ranking, nDCG@10)."""
    from ragtune.evaluate import load_beir_qrels, load_beir_queries

    qrels = load_beir_qrels(root, split)
    queries = load_beir_queries(root)
    qids = [q for q in qrels if q in queries]
    gs = build_gate_set(f"{root.name}/{split}", serving, [queries[q] for q in qids], [{d: float(g) for d, g in qrels[q].items()} for q in qids])
    emb = Embedder(cand.spec, serving.embedder.root, config.model.device, config.model.batch_size)
    cur = score_current(gs, serving)["per_query"]["ndcg@10"]
    new = score_candidate(gs, serving, emb, shares_documents=cand.tier == "query")["per_query"]["ndcg@10"]
    return check(cand.tier, "ndcg@10", new, cur, config.gate, on=f"the labelled set {root.name}/{split}", required=True)


def _save_oof(path: Path, keys: list[str], vectors: np.ndarray) -> None:
    from safetensors.numpy import save_file

    save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(path), metadata={"keys": json.dumps(keys)})


def _write_candidate(
    ws: Workspace, config: RagtuneConfig, serving: ServingVersion, cand: Candidate, report: RefreshReport, *, make_current: bool, decision: dict[str, Any], progress: bool
) -> str:
    """Write the candidate as a version beside the serving one (re-embedding the corpus for a document-side one)."""
    metrics = {"check": report.check.to_dict() if report.check else None, "labelled": report.labelled.to_dict() if report.labelled else None}
    feedback = {**report.mined, "new_events": report.new_events}

    def write_files(staging: Path, rel: str) -> ModelSpec:
        (staging / TRAINED_FILE).write_text(json.dumps(sorted(cand.trained)), encoding="utf-8")
        if cand.tier != "query":
            shutil.copytree(cand.files, staging / "model")
            return ModelSpec(**{**cand.spec.to_dict(), "adapter": f"{rel}/model"})
        if cand.oof is not None:
            _save_oof(staging / OOF_FILE, *cand.oof)
        fields = cand.spec.to_dict()
        for key in ("query_map", "query_memory"):
            if fields[key]:
                fname = Path(fields[key]).name
                shutil.copy2(cand.files / fname, staging / fname)
                fields[key] = f"{rel}/{fname}"
        return ModelSpec(**fields)

    what = "trial" if not make_current else "promoted"
    staged = None if make_current else {"state": "staged"}  # until start_trial makes it live: never served
    if cand.tier == "query":
        return ws.write_version(
            config, cand.spec, kind="query", parent=serving.name, index_version=serving.info.index_version, metrics=metrics, feedback=feedback,
            note=f"query tier ({what})", write_files=write_files, make_current=make_current, trial=staged, decision=decision, stage="refresh.staged",
        )  # fmt: skip
    docs = serving.docs.all_documents()
    emb = Embedder(cand.spec, ws.root, config.model.device, config.model.batch_size)
    saved = ws.save_vectors(encode_corpus(emb, [d.embed_text for d in docs], config.model, progress=progress))  # the store is built from the file
    return ws.write_version(
        config, cand.spec, kind="index", parent=serving.name, docs=docs, vectors=saved, metrics=metrics, feedback=feedback,
        note=f"{cand.tier} fine-tune ({what}), re-embedded {len(docs)} docs", write_files=write_files, make_current=make_current, trial=staged,
        decision=decision, stage="refresh.staged",
    )  # fmt: skip
