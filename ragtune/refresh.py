"""The refresh: mine → fine-tune → gate → re-embed → swap. Orchestration only.

Every decision (promoted or refused, with both figures) is appended to ``refresh-log.jsonl`` in the
workspace and, for promoted ones, kept in the new version's manifest.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.embedder import Embedder, ModelSpec
from ragtune.gate import GateDecision, GateSet, build_gate_set, score_candidate, score_current, score_query_vectors, win_probability
from ragtune.mining import HeldoutQuery, MinedSet, TrainExample, mine, normalize_query

if TYPE_CHECKING:
    from ragtune.api import Ragtune, _Serving

__all__ = ["DECISIONS_FILE", "OOF_FILE", "TRAINED_FILE", "run_refresh", "trained_queries"]

logger = logging.getLogger(__name__)

DECISIONS_FILE = "refresh-log.jsonl"
MARK_KEY = "refresh_mark"
#: Beside each version made by a refresh: the normalised feedback query texts its model was trained on.
TRAINED_FILE = "trained_queries.json"
#: Beside a cross-fitted query tier: each feedback query's vector under the fold model that did not see it.
OOF_FILE = "oof_queries.safetensors"


def _record(rt: Ragtune, entry: dict[str, Any]) -> None:
    with open(rt.ws.root / DECISIONS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")


def _gate_heldout(serving: _Serving, mined: MinedSet, min_queries: int) -> tuple[list[HeldoutQuery], str]:
    """The held-out queries the gate compares on, preferring ones the serving version did not log.

    Clicks logged while a model was serving sit where that model put them and favour it, however
    they are weighted. Held-out queries logged only under *other* versions are off-policy for both
    the candidate and the serving model, so they are used alone when there are ``min_queries`` of
    them; otherwise (e.g. the first refresh) all held-out queries are, which favours the serving model.
    """
    off_policy = [h for h in mined.heldout if serving.name not in h.versions]
    if len(off_policy) >= min_queries:
        return off_policy, f"{len(off_policy)} held-out queries logged under earlier versions"
    return list(mined.heldout), f"all {len(mined.heldout)} held-out queries"


def trained_queries(rt: Ragtune, serving: _Serving) -> set[str] | None:
    """The feedback queries (normalised text) the serving model was trained on; ``None`` if unknown.

    A version made by ``index`` from a plain model trained on none; one made by a refresh lists them
    in :data:`TRAINED_FILE`. Versions from before that file existed are unknown.
    """
    recorded = _read_trained(rt, serving.name)
    if recorded is not None:
        return recorded
    spec = serving.spec
    return None if (spec.adapter or spec.query_map or spec.query_memory) else set()


def _read_trained(rt: Ragtune, version: str) -> set[str] | None:
    path = rt.ws.version_dir(version) / TRAINED_FILE
    return set(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def _doc_side_trained(rt: Ragtune, serving: _Serving) -> set[str] | None:
    """The feedback queries the serving version's document-side model (its index version's) was trained on."""
    if serving.info.index_version != serving.name:
        recorded = _read_trained(rt, serving.info.index_version)
        if recorded is not None:
            return recorded
    elif serving.spec.document_side() == serving.spec:
        return trained_queries(rt, serving)
    return None if serving.spec.adapter else set()


def _load_oof(rt: Ragtune, serving: _Serving) -> dict[str, np.ndarray]:
    """The serving query tier's out-of-fold vectors of the feedback queries it was fitted on (empty if none)."""
    path = rt.ws.version_dir(serving.name) / OOF_FILE
    if not path.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        keys = json.loads((fh.metadata() or {}).get("keys", "[]"))
        vecs = fh.get_tensor("vectors")
    return dict(zip(keys, vecs))


def _save_oof(path: Path, keys: list[str], vectors: np.ndarray) -> None:
    from safetensors.numpy import save_file

    save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(path), metadata={"keys": json.dumps(keys)})


def _gate_sets(rt: Ragtune, serving: _Serving, held: list[HeldoutQuery]) -> list[GateSet]:
    cfg = rt.config.gate
    sets = [
        build_gate_set(
            "heldout",
            serving,
            [h.query for h in held],
            [dict(h.positive_ids) for h in held],
            cfg.pool_size,
            shown=[h.shown_ids for h in held],
            add_top=cfg.pool_unshown,
            ips=cfg.ips,
        )
    ]
    if cfg.eval_beir:
        from ragtune.evaluate import load_beir_qrels, load_beir_queries

        qrels = load_beir_qrels(cfg.eval_beir, cfg.eval_split)
        queries = load_beir_queries(cfg.eval_beir)
        qids = [q for q in qrels if q in queries]
        sets.append(
            build_gate_set(
                f"eval:{Path(cfg.eval_beir).name}/{cfg.eval_split}",
                serving,
                [queries[q] for q in qids],
                [{d: float(g) for d, g in qrels[q].items()} for q in qids],
                cfg.pool_size,
            )
        )
    return sets


def _query_tier_specs(doc_side: ModelSpec, out: Path, tc: Any, *, has_memory: bool, combos: bool) -> list[tuple[str, ModelSpec]]:
    """Every query-tier candidate's spec over the map/memory files saved in ``out``."""
    from ragtune.training.crossfit import query_tier_candidates

    named: list[tuple[str, ModelSpec]] = []
    for name, overrides in query_tier_candidates(tc, combos=combos):
        if "memory_weight" in overrides and not has_memory:
            continue
        fields: dict[str, Any] = {**doc_side.to_dict(), **overrides}
        if "query_interpolation" in overrides:
            fields["query_map"] = str(out / "query_map.safetensors")
        if "memory_weight" in overrides:
            fields.update(query_memory=str(out / "query_memory.safetensors"), memory_threshold=tc.memory_threshold, memory_temperature=tc.memory_temperature)
        named.append((name, ModelSpec(**fields)))
    return named


def _train_query_candidate(rt: Ragtune, serving: _Serving, mined: MinedSet, out: Path) -> tuple[list[tuple[str, ModelSpec]], dict[str, Any]]:
    """The query-side tier's candidates on the held-out split: the trained linear map at each ratio, and the click memory at each weight."""
    from safetensors.numpy import save_file

    from ragtune.training.query_map import train_query_map
    from ragtune.training.query_memory import QueryMemory

    doc_side = serving.spec.document_side()
    raw = Embedder(doc_side, rt.ws.root, rt.config.model.device, rt.config.model.batch_size)
    pmap = serving.docs.positions(sorted({ex.positive_id for ex in mined.train} | {d for h in mined.heldout for d in h.positive_ids}))
    train = [ex for ex in mined.train if ex.positive_id in pmap]
    keys = sorted({ex.query_key for ex in train})
    group = {k: i for i, k in enumerate(keys)}
    qtexts = [ex.query for ex in train]
    qv = raw.encode_queries(qtexts)
    held = [h for h in mined.heldout if any(d in pmap for d in h.positive_ids)]
    hv = raw.encode_queries([h.query for h in held]) if held else None
    vecs = np.asarray(serving.vectors())
    res = train_query_map(
        qv,
        np.array([pmap[ex.positive_id] for ex in train]),
        np.array([ex.weight for ex in train], dtype=np.float64),
        vecs,
        rt.config.train,
        query_groups=[group[ex.query_key] for ex in train],
        eval_queries=hv,
        eval_positives=[{pmap[d] for d in h.positive_ids if d in pmap} for h in held] if held else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file({"weight": res.weight}, str(out / "query_map.safetensors"))
    tc = rt.config.train
    has_memory = bool(tc.memory_weights and train)
    if has_memory:
        QueryMemory(qv, vecs[[pmap[ex.positive_id] for ex in train]]).save(out / "query_memory.safetensors")
    info = {
        "train_s": res.seconds,
        "epochs": res.epochs_run,
        "best_epoch": res.best_epoch,
        "heldout_ndcg_in_training": res.heldout_ndcg,
        "memory_size": len(train) if has_memory else 0,
    }
    return _query_tier_specs(doc_side, out, tc, has_memory=has_memory, combos=False), info


def _crossfit_query_candidates(
    rt: Ragtune, serving: _Serving, mined: MinedSet, queries: list[str], out: Path
) -> tuple[list[tuple[str, ModelSpec, np.ndarray]], dict[str, Any]]:
    """Query-tier candidates with out-of-fold vectors of every feedback query in ``queries``; the saved tier is fitted on all pairs."""
    from safetensors.numpy import save_file

    from ragtune.training.crossfit import QueryPairs, crossfit_query_tier, fit_query_tier

    tc = rt.config.train
    doc_side = serving.spec.document_side()
    raw = Embedder(doc_side, rt.ws.root, rt.config.model.device, rt.config.model.batch_size)
    pmap = serving.docs.positions(sorted({ex.positive_id for ex in mined.train}))
    train = [ex for ex in mined.train if ex.positive_id in pmap]
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
    gate_raw = enc[[row[q] for q in queries]]
    t0 = time.perf_counter()
    oof = crossfit_query_tier(pairs, [normalize_query(q) for q in queries], gate_raw, vecs, tc, rt.config.gate.folds)
    fitted = fit_query_tier(pairs, np.arange(len(pairs)), vecs, tc)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"weight": fitted.weight}, str(out / "query_map.safetensors"))
    if fitted.memory is not None:
        fitted.memory.save(out / "query_memory.safetensors")
    named = [(name, spec, oof[name]) for name, spec in _query_tier_specs(doc_side, out, tc, has_memory=fitted.memory is not None, combos=True)]
    info = {
        "train_s": time.perf_counter() - t0,
        "epochs": fitted.epochs,
        "pairs": len(pairs),
        "folds": rt.config.gate.folds,
        "memory_size": len(fitted.memory.keys) if fitted.memory is not None else 0,
    }
    return named, info


def _train_doc_candidate(rt: Ragtune, serving: _Serving, mined: MinedSet, mode: str, out: Path) -> tuple[ModelSpec, dict[str, Any]]:
    from ragtune.training.sentence import train_sentence_model

    base = serving.spec.document_side()
    base = ModelSpec(
        base=base.base, query_prefix=base.query_prefix, document_prefix=base.document_prefix, max_seq_length=base.max_seq_length
    )
    held_ids = sorted({d for h in mined.heldout for d in h.positive_ids} - set(mined.doc_texts))
    pmap = serving.docs.positions(held_ids)
    mined.doc_texts.update({d.id: d.embed_text for d in serving.docs.get(list(pmap.values()))})
    eval_examples = [
        TrainExample(h.query, d, [], 1.0, normalize_query(h.query)) for h in mined.heldout for d in h.positive_ids if d in mined.doc_texts
    ]
    filler_pos = np.random.default_rng(rt.config.train.seed).choice(len(serving.docs), size=min(512, len(serving.docs)), replace=False)
    filler = [d.embed_text for d in serving.docs.get([int(p) for p in filler_pos])]
    res = train_sentence_model(
        base,
        mined.train,
        eval_examples,
        mined.doc_texts,
        rt.config.train,
        mode=mode,
        out_dir=out,
        device=rt.config.model.device,
        filler=filler,
        progress=rt.progress,
    )
    spec = ModelSpec(**{**base.to_dict(), "adapter": str(out), "adapter_kind": mode})
    return spec, {
        "train_s": res.seconds,
        "steps": res.steps,
        "epochs": res.epochs_run,
        "best_eval_loss": res.best_eval_loss,
        "train_loss": res.train_loss,
    }


def run_refresh(rt: Ragtune, *, mode: str | None = None, force: bool = False, min_new_events: int | None = None) -> dict[str, Any]:
    """Run one refresh of ``rt``'s workspace; see :meth:`ragtune.api.Ragtune.refresh`.

    ``auto`` runs the document-side tier (``lora``) through its gate first, then the query tier
    (``query``, cross-fitted) through its own on top of whatever serves after it: each tier is
    judged by the check that suits it, the corpus is re-embedded only when the LoRA candidate
    wins, and a promoted LoRA model still gets a query tier fitted to its own vectors (it starts
    without one, as every re-embedded version does).
    """
    t0 = time.perf_counter()
    cfg = rt.config
    mode = mode or cfg.train.mode
    threshold = cfg.refresh.min_new_events if min_new_events is None else min_new_events
    with rt.ws.lock("refresh"):
        if mode != "auto":
            return _refresh_locked(rt, mode, force=force, threshold=threshold, t0=t0)
        doc = _refresh_locked(rt, "lora", force=force, threshold=threshold, t0=t0)
        if doc["status"] == "skipped":  # too little new feedback: neither tier trains
            return {**doc, "mode": "auto", "tiers": {"lora": _tier_summary(doc)}}
        query = _refresh_locked(rt, "query", force=True, threshold=threshold, t0=time.perf_counter())
        # the report of the tier that made the new version, else of the last one judged
        last = doc if doc["status"] == "promoted" and query["status"] != "promoted" else query
        return {
            **last,
            "mode": "auto",
            "status": "promoted" if "promoted" in (doc["status"], query["status"]) else query["status"],
            "reason": f"lora {doc['status']} ({doc['reason']}); query {query['status']}: {query.get('reason')}",
            "train_s": doc.get("train_s", 0.0) + query.get("train_s", 0.0),
            "reembed_s": doc.get("reembed_s", 0.0),
            "refresh_s": time.perf_counter() - t0,
            "tiers": {"lora": _tier_summary(doc), "query": _tier_summary(query)},
        }


def _tier_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("status", "reason", "gate", "train_s", "reembed_s", "version") if k in report}


def _refresh_locked(rt: Ragtune, mode: str, *, force: bool, threshold: int, t0: float) -> dict[str, Any]:
    """One refresh in ``mode`` (not ``auto``), with the refresh lock held."""
    cfg = rt.config
    serving = rt.serving()
    log = rt.feedback
    mark = tuple(log.get_meta(MARK_KEY, [0, 0]))
    now_mark = log.event_mark()
    new_events = log.events_since(mark)  # type: ignore[arg-type]
    base = {"mode": mode, "current": serving.name, "new_events": new_events}
    if new_events < threshold and not force:
        msg = f"only {new_events} new feedback events since the last refresh (need {threshold}); nothing to do (use --force to refresh anyway)"
        return {**base, "status": "skipped", "reason": msg, "refresh_s": time.perf_counter() - t0}
    records = log.records()  # every search: the click-noise estimate needs the unclicked ones too
    trained = trained_queries(rt, serving)
    crossfit = mode == "query" and cfg.gate.folds >= 2 and trained is not None
    serving_oof = _load_oof(rt, serving) if trained is not None else {}
    if crossfit:
        mined = mine(records, serving, cfg.mining, cfg.feedback, heldout_keys={normalize_query(r.text) for r in records}, train_on_heldout=True)
    else:
        mined = mine(records, serving, cfg.mining, cfg.feedback)
    if trained:  # judge only on queries the serving model never trained on, or has an out-of-fold vector for
        mined.heldout = [h for h in mined.heldout if normalize_query(h.query) not in trained or normalize_query(h.query) in serving_oof]
        mined.stats["heldout_queries"] = len(mined.heldout)
    base["mined"] = mined.report()
    if len(mined.train) < cfg.refresh.min_pairs or not mined.heldout:
        what = "queries the serving model has not trained on" if crossfit else "held-out queries"
        msg = f"too little feedback to train: {len(mined.train)} training pairs (need {cfg.refresh.min_pairs}) and {len(mined.heldout)} {what} (need >= 1)"
        return {**base, "status": "skipped", "reason": msg, "refresh_s": time.perf_counter() - t0}

    held, gate_note = _gate_heldout(serving, mined, cfg.gate.min_off_policy)
    if crossfit:
        gate_note += f" (every candidate out of fold, {cfg.gate.folds} folds{f'; {serving.name} out of fold where it was fitted on them' if serving_oof else ''})"
    base["gate_queries"] = gate_note
    gate_sets = _gate_sets(rt, serving, held)
    metric = cfg.gate.query_metric if mode == "query" else cfg.gate.metric
    loglik, pool_loglik = metric == "loglik", metric == "pool_loglik"
    cur_vecs = serving.embedder.encode_queries(gate_sets[0].queries)
    for i, q in enumerate(gate_sets[0].queries):  # out of fold where the serving tier was fitted on the query
        if (v := serving_oof.get(normalize_query(q))) is not None:
            cur_vecs[i] = v
    current = {"heldout": score_query_vectors(gate_sets[0], serving, cur_vecs, loglik=loglik, pool_loglik=pool_loglik)} | {gs.name: score_current(gs, serving) for gs in gate_sets[1:]}
    candidates: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ragtune-refresh-", dir=rt.ws.root) as tmp:
        out = Path(tmp) / mode
        t_train = time.perf_counter()
        if crossfit:  # query mode only
            all_queries = [h.query for h in mined.heldout]
            scored, info = _crossfit_query_candidates(rt, serving, mined, all_queries, out)
            train_s = time.perf_counter() - t_train
            gate_rows = {q: i for i, q in enumerate(all_queries)}
            pick = [gate_rows[q] for q in gate_sets[0].queries]
            oof_keys = [normalize_query(q) for q in all_queries]
            for key, cspec, qv in scored:
                scores = {"heldout": score_query_vectors(gate_sets[0], serving, qv[pick], loglik=loglik, pool_loglik=pool_loglik)}
                if len(gate_sets) > 1:
                    emb = Embedder(cspec, rt.ws.root, cfg.model.device, cfg.model.batch_size)
                    scores.update({gs.name: score_candidate(gs, serving, emb, shares_documents=True) for gs in gate_sets[1:]})
                candidates[key] = {"spec": cspec, "scores": scores, "train": info, "oof": (oof_keys, qv)}
        else:
            if mode == "query":
                named, info = _train_query_candidate(rt, serving, mined, out)
            else:
                spec, info = _train_doc_candidate(rt, serving, mined, mode, out)
                named = [(f"{mode}@{r:g}", _interpolated(spec, r)) for r in sorted(set(cfg.train.interpolation), reverse=True)]
            train_s = time.perf_counter() - t_train
            for key, cspec in named:
                emb = Embedder(cspec, rt.ws.root, cfg.model.device, cfg.model.batch_size)
                scores = {
                    gs.name: score_candidate(gs, serving, emb, shares_documents=(mode == "query"), loglik=loglik and j == 0, pool_loglik=pool_loglik and j == 0)
                    for j, gs in enumerate(gate_sets)
                }
                candidates[key] = {"spec": cspec, "scores": scores, "train": info}
        eligible = list(candidates)
        cold_note = None
        if crossfit and cfg.gate.cold_guard > 0:
            eligible, cold_note = _cold_guard(gate_sets[0], mined, cfg, metric, current, candidates)
        best_key = max(eligible or candidates, key=lambda k: (candidates[k]["scores"]["heldout"][metric], -len(k)))
        best = candidates[best_key]
        decision = _decide(cfg, metric, current, best_key, best, candidates)
        if cold_note is not None:
            decision = _with_cold_guard(decision, cold_note, eligible, metric, cfg.gate.cold_guard)
        entry = {
            "time": time.time(),
            "current": serving.name,
            "decision": decision.to_dict(),
            "mined": mined.report(),
            "train_s": train_s,
        }
        result: dict[str, Any] = {**base, "train_s": train_s, "gate": decision.to_dict()}
        if not decision.promoted:
            log.set_meta(MARK_KEY, list(now_mark))
            _record(rt, {**entry, "status": "refused"})
            logger.warning("refresh refused: %s", decision.reason)
            return {**result, "status": "refused", "reason": decision.reason, "reembed_s": 0.0, "refresh_s": time.perf_counter() - t0}
        t_embed = time.perf_counter()
        if "oof" in best:  # only the promoted candidate's out-of-fold vectors are kept
            _save_oof(out / OOF_FILE, *best["oof"])
        own = {ex.query_key for ex in mined.train}
        doc_side = _doc_side_trained(rt, serving)
        now_trained = own if mode != "query" else (own | doc_side if doc_side is not None else None)
        name = _promote(rt, serving, mode, best["spec"], out, decision, mined, new_events, now_trained)
        reembed_s = time.perf_counter() - t_embed if mode != "query" else 0.0
    log.set_meta(MARK_KEY, list(now_mark))
    _record(rt, {**entry, "status": "promoted", "version": name, "reembed_s": reembed_s})
    return {
        **result,
        "status": "promoted",
        "version": name,
        "reason": decision.reason,
        "reembed_s": reembed_s,
        "refresh_s": time.perf_counter() - t0,
    }


def _cold_guard(
    gs: GateSet, mined: MinedSet, cfg: Any, metric: str, current: dict[str, dict[str, Any]], candidates: dict[str, dict[str, Any]]
) -> tuple[list[str], dict[str, Any] | None]:
    """The cross-fitted candidates that do not lose on the gate's *fold-cold* queries, and the figures.

    A feedback query is fold-cold when none of its chosen docs was chosen for any query its fold
    model was fitted on: the candidate cannot have learnt anything about its documents, so a
    loss there is what the tier costs queries on new topics (the forgetting the benchmark's cold
    queries measure), not noise around a gain. A candidate is excluded when its mean ``metric``
    over these queries falls below the current model's in at least ``gate.cold_guard`` of paired
    bootstrap resamples of them.
    """
    from ragtune.training.crossfit import fold_of, pair_folds

    folds, seed = cfg.gate.folds, cfg.train.seed
    judged = [normalize_query(h.query) for h in mined.heldout]  # the keys crossfit_query_tier folds
    by_fold: dict[int, set[str]] = {}
    for ex, f in zip(mined.train, pair_folds([ex.query_key for ex in mined.train], judged, folds, seed).tolist()):
        by_fold.setdefault(f, set()).add(ex.positive_id)
    seen_by = {f: set().union(*(docs for g, docs in by_fold.items() if g != f)) for f in range(folds)}
    rows = [
        i
        for i, q in enumerate(gs.queries)
        if not any(d in seen_by[fold_of(normalize_query(q), folds, seed)] for d, w in gs.relevant[i].items() if w > 0)
    ]
    if not rows:
        return list(candidates), None
    cur_rows = np.asarray(current["heldout"]["per_query"][metric])[rows]
    cand_rows = {k: np.asarray(c["scores"]["heldout"]["per_query"][metric])[rows] for k, c in candidates.items()}
    p_loss = {k: win_probability(cur_rows.tolist(), v.tolist()) for k, v in cand_rows.items()}
    note = {
        "n": len(rows),
        "current": float(cur_rows.mean()),
        "candidates": {k: float(v.mean()) for k, v in cand_rows.items()},
        "p_loss": {k: round(p, 4) for k, p in p_loss.items()},
    }
    return [k for k, p in p_loss.items() if p < cfg.gate.cold_guard], note


def _with_cold_guard(decision: GateDecision, note: dict[str, Any], eligible: list[str], metric: str, bar: float) -> GateDecision:
    """The decision with the cold guard's figures, and a reason that names what the guard excluded."""
    decision.current["heldout_cold"] = note["current"]
    for k, v in note["candidates"].items():
        decision.candidates[k]["heldout_cold"] = v
        decision.candidates[k]["cold_p_loss"] = note["p_loss"][k]
    excluded = [k for k in note["candidates"] if k not in eligible]
    if not excluded or (decision.promoted and eligible):
        return decision
    what = f"on the {note['n']} feedback queries none of whose chosen docs was chosen for a query its fold model was fitted on (gate.cold_guard {bar:g})"
    if decision.promoted:  # nothing was eligible, and the best candidate passed every other check
        top = str(decision.chosen)
        reason = (
            f"every candidate loses {metric} {what}; the best, {top} ({decision.candidates[top]['heldout']:.4f} vs the current "
            f"{decision.current['heldout']:.4f} overall), scores {note['candidates'][top]:.4f} there against the current model's "
            f"{note['current']:.4f}, lower in {note['p_loss'][top]:.0%} of bootstrap resamples: its gains would come with forgetting"
        )
        return GateDecision(False, reason, metric, decision.current, decision.candidates, None)
    return GateDecision(False, f"{decision.reason}; excluded for losing {what}: {', '.join(excluded)}", metric, decision.current, decision.candidates, None)


def _interpolated(spec: ModelSpec, ratio: float) -> ModelSpec:
    """The document-side candidate pulled back toward its base by ``ratio`` (WiSE-FT)."""
    return ModelSpec(**{**spec.to_dict(), "interpolation": float(ratio)})


def _decide(
    cfg: Any, metric: str, current: dict[str, dict[str, Any]], best_key: str, best: dict[str, Any], candidates: dict[str, dict[str, Any]]
) -> GateDecision:
    cur = current["heldout"][metric]
    cand = best["scores"]["heldout"][metric]

    eval_metric = "ndcg@10" if metric.endswith("loglik") else metric  # labelled eval sets are judged by a ranking metric

    def fig(name: str, s: dict[str, Any]) -> float:
        return float(s[metric if name == "heldout" else eval_metric])

    figures = {k: {name: fig(name, s) for name, s in c["scores"].items()} for k, c in candidates.items()}
    cur_fig = {name: fig(name, s) for name, s in current.items()}
    n = int(current["heldout"]["n"])
    if not cand > cur + cfg.gate.margin:
        return GateDecision(
            False,
            f"candidate {best_key} {metric} {cand:.4f} does not beat the current model's {cur:.4f} by the margin {cfg.gate.margin} on {n} held-out queries",
            metric,
            cur_fig,
            figures,
            None,
        )
    cross_fitted = "oof" in best  # only cross-fitted query-tier candidates carry out-of-fold vectors
    confidence, knob = (cfg.gate.query_confidence, "gate.query_confidence") if cross_fitted else (cfg.gate.confidence, "gate.confidence")
    if confidence > 0:
        if n < cfg.gate.min_queries:
            return GateDecision(
                False,
                f"candidate {best_key} {metric} {cand:.4f} beats the current model's {cur:.4f}, but on only {n} held-out queries: too few to tell a gain from noise (gate.min_queries {cfg.gate.min_queries}; lower it, or set {knob} to 0, to promote on fewer)",
                metric,
                cur_fig,
                figures,
                None,
            )
        p_win = win_probability(best["scores"]["heldout"]["per_query"][metric], current["heldout"]["per_query"][metric], cfg.gate.margin)
        figures[best_key]["p_win"] = round(p_win, 4)
        if p_win < confidence:
            return GateDecision(
                False,
                f"candidate {best_key} {metric} {cand:.4f} beats the current model's {cur:.4f} on {n} held-out queries, but only in {p_win:.1%} of paired bootstrap resamples ({knob} {confidence:g}): within the noise",
                metric,
                cur_fig,
                figures,
                None,
            )
    for name, s in best["scores"].items():
        if name == "heldout":
            continue
        if s[eval_metric] < current[name][eval_metric] - cfg.gate.eval_max_drop:
            return GateDecision(
                False,
                f"candidate {best_key} gains on held-out feedback ({metric} {cand:.4f} vs {cur:.4f}) but loses on {name}: {eval_metric} {s[eval_metric]:.4f} vs {current[name][eval_metric]:.4f} (max drop {cfg.gate.eval_max_drop})",
                metric,
                cur_fig,
                figures,
                None,
            )
    return GateDecision(
        True,
        f"candidate {best_key} {metric} {cand:.4f} beats the current {cur:.4f} on {n} held-out queries",
        metric,
        cur_fig,
        figures,
        best_key,
    )


def _promote(
    rt: Ragtune,
    serving: _Serving,
    mode: str,
    spec: ModelSpec,
    src: Path,
    decision: GateDecision,
    mined: MinedSet,
    new_events: int,
    trained: set[str] | None,
) -> str:
    """Write the promoted candidate as a new version (re-embedding unless it is query-side) and swap.

    ``trained`` (the feedback queries the new model has seen; ``None`` if unknown) is saved beside it,
    so the next refresh knows which queries it can judge the new model on.
    """
    metrics = {"gate": decision.to_dict()}
    feedback = {**mined.report(), "new_events": new_events}

    def write_files(staging: Path, rel: str) -> ModelSpec:
        if trained is not None:
            (staging / TRAINED_FILE).write_text(json.dumps(sorted(trained)), encoding="utf-8")
        if mode == "query":
            if (src / OOF_FILE).is_file():
                shutil.copy2(src / OOF_FILE, staging / OOF_FILE)
            fields = spec.to_dict()
            for key in ("query_map", "query_memory"):
                if fields[key]:
                    name = Path(fields[key]).name
                    shutil.copy2(src / name, staging / name)
                    fields[key] = f"{rel}/{name}"
            return ModelSpec(**fields)
        shutil.copytree(src, staging / "model")
        return ModelSpec(**{**spec.to_dict(), "adapter": f"{rel}/model"})

    if mode == "query":
        return rt._write_version(
            None,
            None,
            spec,
            kind="query",
            parent=serving.name,
            index_version=serving.info.index_version,
            metrics=metrics,
            feedback=feedback,
            note=f"query-side tier ({decision.chosen})",
            write_files=write_files,
        )
    docs = serving.docs.all_documents()
    emb = Embedder(spec, rt.ws.root, rt.config.model.device, rt.config.model.batch_size)
    vectors = emb.encode_documents([d.embed_text for d in docs], progress=rt.progress)
    return rt._write_version(
        docs,
        vectors,
        spec,
        kind="index",
        parent=serving.name,
        metrics=metrics,
        feedback=feedback,
        note=f"{mode} fine-tune ({decision.chosen}), re-embedded {len(docs)} docs",
        write_files=write_files,
    )
