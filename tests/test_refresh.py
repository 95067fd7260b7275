"""The refresh with tiny in-process models: one candidate, the offline check, a staged trial or a direct promotion, lock, rollback, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragtune import RagtuneError, RefreshLockedError
from ragtune.mining import normalize_query
from ragtune.refresh import FOLDS, RefreshReport, last_refused_events, trained_queries
from ragtune.training.crossfit import fold_of
from ragtune.workspace import OOF_FILE, TRAINED_FILE
from tests.conftest import ROUTER, play

ROOT = Path(__file__).resolve().parent.parent


def _log(rt) -> list[dict]:
    return rt.ws.read_log()


def _play_varied(rt, first: int, last: int) -> None:
    """Users of near-identical queries click different ranks, so the check's figures are not all alike."""
    for i in range(first, last):
        hits = rt.search(ROUTER.format(i), k=5)
        rt.click(hits.query_id, hits[(i * 7) % 5].doc_id)


def _play_fold_own_docs(rt) -> None:
    """Each fold's users click a doc of their own: clicks that do not generalise across queries (30 queries)."""
    ids = rt.serving().docs.ids
    seed = rt.config.train.seed
    for i in range(30):
        text = ROUTER.format(i)
        hits = rt.search(text, k=len(ids))
        rt.click(hits.query_id, ids[fold_of(normalize_query(text), FOLDS, seed)])


def test_too_little_feedback_is_a_clear_noop(workspace):
    rep = workspace.refresh()
    assert isinstance(rep, RefreshReport) and rep.status == "skipped"
    assert rep["status"] == "skipped" and "0 new feedback events" in rep["reason"] and "a forced refresh trains anyway" in rep["reason"]
    rep = workspace.refresh(force=True)
    assert rep.status == "skipped" and "too little feedback" in rep.reason and rep.check is None
    assert workspace.current_version == "v0001" and workspace.ws.read_trial() is None
    assert _log(workspace)[-1]["event"] == "refresh_skipped"
    assert json.loads(json.dumps(rep.to_dict()))["status"] == "skipped"


def test_a_query_tier_candidate_becomes_a_staged_trial(workspace):
    play(workspace)
    v1 = workspace.current_version
    rep = workspace.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    v2 = rep.version
    assert v2 != v1 and workspace.current_version == v1  # staged, not current
    assert rep.reembed_s == 0.0 and rep.check is not None and rep.check.worth_trial and rep.check.metric == "loglik"
    assert set(rep.checks) == {"query"} and rep.settled is None
    assert rep.trial is not None and rep.trial["version"] == v2 and rep.trial["baseline"] == v1 and rep.trial["tier"] == "query"
    assert workspace.ws.read_trial()["version"] == v2 and workspace.ws.read_trial()["id"] == rep.trial["id"]
    info = workspace.ws.read_version(v2)
    assert info.kind == "query" and info.index_version == v1 and info.parent == v1
    assert info.trial["state"] == "live" and info.trial["id"] == rep.trial["id"]
    vdir = workspace.ws.version_dir(v2)
    for key in ("query_map", "query_memory"):  # one candidate: the memory, then the map
        assert (vdir / f"{key}.safetensors").is_file()
        assert info.model[key] == f"versions/{v2}/{key}.safetensors"  # relative: the workspace can move
    assert info.model["query_interpolation"] == workspace.config.train.query_interpolation
    assert info.model["memory_weight"] == workspace.config.train.memory_weight
    assert not (vdir / "vectors.npy").exists() and not (vdir / "docs.sqlite").exists()
    rows = {v["name"]: v for v in workspace.versions()}
    assert rows[v1]["current"] and not rows[v1]["trial_live"] and rows[v2]["trial_live"] and not rows[v2]["current"]
    # unlogged searches are never interleaved: the serving version answers them
    hits = workspace.search(ROUTER.format(99), k=5, log=False)
    assert hits.version == v1 and hits.trial is None
    entry = _log(workspace)[-1]
    assert entry["event"] == "trial_started" and entry["version"] == v2 and entry["baseline"] == v1 and entry["check"]["worth_trial"]
    assert entry["check"]["score"] > entry["check"]["current"]


def test_no_trial_promotes_at_once(workspace):
    play(workspace)
    v1 = workspace.current_version
    rep = workspace.refresh(mode="query", trial=False)
    assert rep.status == "promoted", rep.reason
    assert "without a trial" in rep.reason and "--no-trial" in rep.reason
    v2 = workspace.current_version
    assert rep.version == v2 != v1 and workspace.ws.read_trial() is None and rep.trial is None
    info = workspace.ws.read_version(v2)
    assert info.kind == "query" and info.index_version == v1 and info.trial == {}
    hits = workspace.search(ROUTER.format(99), k=5)
    assert hits.version == v2 and hits.trial is None
    entry = _log(workspace)[-1]
    assert entry["event"] == "promoted" and entry["version"] == v2 and entry["previous"] == v1


def test_clicks_that_do_not_generalise_across_queries_are_refused(workspace):
    """Each fold's users click a doc of their own: out of fold, every candidate pulls a query toward the other folds' docs."""
    _play_fold_own_docs(workspace)
    rep = workspace.refresh(mode="query")
    assert rep.status == "refused", rep.reason
    assert rep.check is not None and not rep.check.worth_trial and rep.check.score < rep.check.current
    assert rep.reason.startswith("not worth a trial: query:") and "no gain" in rep.reason
    assert workspace.current_version == "v0001" and len(workspace.ws.list_versions()) == 1 and workspace.ws.read_trial() is None
    entry = _log(workspace)[-1]
    assert entry["event"] == "refresh_refused" and entry["checks"]["query"]["score"] == pytest.approx(rep.check.score)
    # the refused feedback is consumed: the next refresh waits for new events
    assert workspace.refresh(mode="query").status == "skipped"
    assert not any(p.name.startswith(".tmp-") for p in workspace.ws.versions_dir.iterdir())


def test_too_few_queries_are_refused_whatever_the_gain(workspace):
    play(workspace)
    workspace.config = workspace.config.with_overrides({"gate.min_queries": 100})
    rep = workspace.refresh(mode="query")
    assert rep.status == "refused" and "gate.min_queries 100" in rep.reason
    assert rep.check is not None and rep.check.score > rep.check.current  # a gain, too little evidence for it
    assert workspace.current_version == "v0001" and len(workspace.ws.list_versions()) == 1


def test_crossfit_judges_every_query_and_records_what_it_trained_on(workspace):
    assert trained_queries(workspace.ws, workspace.current_version) == set()  # a plain index has seen no feedback
    play(workspace)
    rep = workspace.refresh(mode="query", trial=False)
    assert rep.status == "promoted", rep.reason
    n = rep.mined["feedback_queries"]
    assert n >= 10 and rep.mined["heldout_queries"] == n and rep.check.n == n  # every query judged, none set aside
    v2 = workspace.current_version
    seen = json.loads((workspace.ws.version_dir(v2) / TRAINED_FILE).read_text())
    assert len(seen) == n and trained_queries(workspace.ws, v2) == set(seen)
    assert (workspace.ws.version_dir(v2) / OOF_FILE).is_file()
    # new queries join the judged set
    _play_varied(workspace, 24, 36)
    rep = workspace.refresh(mode="query", force=True, trial=False)
    assert rep.check is not None and rep.check.n == n + 12


def test_serving_tier_is_judged_by_its_own_out_of_fold_vectors(workspace):
    play(workspace)  # a pattern to learn ...
    _play_varied(workspace, 24, 36)  # ... and users it does not fit
    workspace.config = workspace.config.with_overrides({"gate.confidence": 0.01})  # on, but lenient
    rep = workspace.refresh(mode="query", trial=False)
    assert rep.status == "promoted", rep.reason
    v2 = workspace.current_version
    # no new feedback: the same data, folds and seed refit the same candidate, whose out-of-fold
    # figure must equal the serving tier's (the saved vectors line up with the right queries)
    rep = workspace.refresh(mode="query", force=True, trial=False)
    assert rep.status == "refused" and workspace.current_version == v2
    assert rep.check.current == pytest.approx(rep.check.score, abs=1e-6)
    assert rep.check.current < -1e-3  # a log-probability short of certainty: the comparison is not trivial


def test_reindex_keeps_the_record_of_what_the_model_trained_on(workspace, docs_jsonl, tmp_path):
    play(workspace)
    assert workspace.refresh(mode="query", trial=False).status == "promoted"
    seen = trained_queries(workspace.ws, workspace.current_version)
    assert seen
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "extra-1", "text": "a brand new document about routers"}) + "\n")
    v3 = workspace.index([docs_jsonl, extra])["version"]
    assert (workspace.ws.version_dir(v3) / TRAINED_FILE).is_file() and trained_queries(workspace.ws, v3) == seen
    assert (workspace.ws.version_dir(v3) / OOF_FILE).is_file()


def test_lora_candidate_is_reembedded_and_rolls_back(workspace):
    play(workspace)
    # this test is about what a promotion writes (the tiny random model may not improve): the check is off
    workspace.config = workspace.config.with_overrides({"train.lr": 5e-3, "train.epochs": 2, "gate.confidence": 0.0})
    v1 = workspace.current_version
    rep = workspace.refresh(mode="lora", trial=False)
    assert rep.status == "promoted", rep.reason
    v2 = workspace.current_version
    info = workspace.ws.read_version(v2)
    assert info.kind == "index" and info.index_version == v2 and info.parent == v1
    adapter = workspace.ws.version_dir(v2) / "model"
    assert (adapter / "adapter_model.safetensors").is_file()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == workspace.config.model.name
    assert info.model["adapter"] == f"versions/{v2}/model"
    assert rep.reembed_s > 0 and rep.check.metric == "ndcg@10"
    hits = workspace.search("reset", k=3, log=False)
    assert hits.version == v2
    assert workspace.rollback() == v1 and workspace.current_version == v1
    assert workspace.search("reset", k=3, log=False).version == v1
    assert workspace.rollback(v2) == v2


def test_early_stopping_weighs_each_held_out_pair_as_training_would(workspace, monkeypatch):
    """A held-out query's answer (chosen in both of its searches) outweighs a stray click (one search) in the early-stopping loss."""
    import ragtune.training.sentence as sentence

    seen: list = []
    real = sentence.train_sentence_model

    def spy(base, train, eval_examples, *args, **kwargs):
        seen.extend(eval_examples)
        return real(base, train, eval_examples, *args, **kwargs)

    monkeypatch.setattr(sentence, "train_sentence_model", spy)
    target = play(workspace)
    for i in range(24):  # each query asked again: the answer chosen again, plus a stray click on another shown doc
        hits = workspace.search(ROUTER.format(i), k=5)
        stray = next(h.doc_id for h in hits if h.doc_id != target)
        workspace.click(hits.query_id, target)
        workspace.click(hits.query_id, stray)
    workspace.config = workspace.config.with_overrides({"train.epochs": 1, "gate.confidence": 0.0})
    workspace.refresh(mode="lora", trial=False, force=True)
    by_query: dict[str, dict[str, float]] = {}
    for ex in seen:
        by_query.setdefault(ex.query, {})[ex.positive_id] = ex.weight
    assert by_query, "no held-out pair reached early stopping"
    pairs = [(w[target], max(v for d, v in w.items() if d != target)) for w in by_query.values() if target in w and len(w) > 1]
    # a query whose first search showed no target has one search with a choice: both weigh 1 there
    assert pairs and all(answer >= stray > 0 for answer, stray in pairs), by_query
    assert any(stray == pytest.approx(answer / 2) for answer, stray in pairs), by_query


def test_a_lora_trial_interleaves_two_models_and_a_dropped_one_is_discarded(workspace):
    play(workspace)
    workspace.config = workspace.config.with_overrides({"train.lr": 5e-3, "train.epochs": 2, "gate.confidence": 0.0, "trial.share": 1.0})
    rep = workspace.refresh(mode="lora")
    assert rep.status == "trial_started" and rep.trial["tier"] == "lora", rep.reason
    v2 = rep.version
    vdir = workspace.ws.version_dir(v2)
    assert (vdir / "vectors.npy").is_file() and (vdir / "model" / "adapter_model.safetensors").is_file()
    hits = workspace.search("reset the router", k=5)
    assert hits.trial == rep.trial["id"] and hits.version == "v0001" and len(hits) == 5
    assert len({h.doc_id for h in hits}) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    done = workspace.stop_trial()
    assert done["verdict"] == "drop" and done["version"] == v2 and "stopped by the operator" in done["reason"]
    # a dropped trial keeps its record, not its index or model
    assert sorted(p.name for p in vdir.iterdir()) == sorted(["manifest.json", "config.json", TRAINED_FILE])
    assert workspace.ws.read_version(v2).trial["state"] == "dropped"
    with pytest.raises(RagtuneError, match="dropped trial"):
        workspace.rollback(v2)
    assert workspace.search("reset the router", k=5).trial is None


def test_a_document_side_candidate_needs_only_not_to_be_behind_when_a_trial_follows(workspace):
    """Its pools hold what the serving model showed, so it can at best tie there: with a trial to decide,
    only an obvious loser is refused; promoted without a trial, it must be ahead."""
    play(workspace)
    workspace.config = workspace.config.with_overrides({"train.epochs": 1, "gate.min_queries": 1})
    rep = workspace.refresh(mode="lora", trial=False)
    assert rep.check is not None and rep.check.bar == "ahead" and rep.check.p_behind is None
    assert rep.status == ("promoted" if rep.check.worth_trial else "refused")
    rep = workspace.refresh(mode="lora", force=True)
    chk = rep.check
    assert chk is not None and chk.bar == "not_behind" and chk.p_behind is not None
    assert chk.worth_trial is (chk.p_behind < workspace.config.gate.confidence)
    assert rep.status == ("trial_started" if chk.worth_trial else "refused"), rep.reason
    assert chk.reason.endswith(": not an obvious loser" if chk.worth_trial else ": an obvious loser")


def test_a_labelled_set_decides_after_a_not_behind_check(workspace, tmp_path):
    """With --eval-beir the pre-filter only refuses an obvious loser; the labelled set must then show a gain."""
    play(workspace)
    beir = tmp_path / "labelled"
    (beir / "qrels").mkdir(parents=True)
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(["reset the router", "guest wifi"])))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t1\nq1\td6\t1\n")
    workspace.config = workspace.config.with_overrides({"train.epochs": 1, "gate.confidence": 0.99})  # only a sure loser is refused
    rep = workspace.refresh(mode="lora", eval_beir=beir)
    assert rep.check is not None and rep.check.bar == "not_behind" and rep.check.worth_trial, rep.reason
    assert rep.labelled is not None and rep.labelled.bar == "ahead" and rep.labelled.n == 2
    assert rep.status == ("promoted" if rep.labelled.score > rep.labelled.current else "refused"), rep.reason
    assert rep.trial is None and workspace.trial() is None


def test_auto_tries_the_query_tier_first_and_trains_no_lora_when_it_is_worth_a_trial(workspace):
    """auto: the cheap tier first; a query-tier candidate worth a trial is tried, and no LoRA is trained."""
    play(workspace)
    v1 = workspace.current_version
    rep = workspace.refresh(mode="auto")
    assert rep.mode == "auto" and list(rep.checks) == ["query"], rep.reason
    assert rep.checks["query"].worth_trial and rep.check is rep.checks["query"] and rep.check.bar == "ahead"
    assert rep.status == "trial_started", rep.reason
    assert rep.trial is not None and rep.trial["tier"] == "query" and rep.reembed_s == 0.0
    info = workspace.ws.read_version(rep.version)
    assert info.kind == "query" and info.index_version == v1
    # while that trial is undecided, the next refresh trains nothing
    rep = workspace.refresh(mode="auto", force=True)
    assert rep.status == "trial_running" and rep.checks == {} and "undecided" in rep.reason
    assert len(workspace.ws.list_versions()) == 2


def test_auto_tries_lora_when_the_query_tier_is_not_worth_a_trial(workspace):
    """Clicks that do not generalise across queries give the query tier no gain; auto then trains a
    LoRA candidate, held to "not behind" since a trial would decide after it."""
    _play_fold_own_docs(workspace)
    # only a sure loser is refused (the serving model ahead in 99% of resamples), so the LoRA candidate goes on
    workspace.config = workspace.config.with_overrides({"train.epochs": 1, "gate.min_queries": 1, "gate.confidence": 0.99})
    rep = workspace.refresh(mode="auto")
    assert list(rep.checks) == ["query", "lora"], rep.reason
    assert not rep.checks["query"].worth_trial and "no gain" in rep.checks["query"].reason
    lora = rep.checks["lora"]
    assert rep.check is lora and lora.bar == "not_behind" and lora.p_behind is not None and lora.p_behind < 0.99
    assert lora.worth_trial and rep.status == "trial_started" and rep.trial is not None and rep.trial["tier"] == "lora", rep.reason
    assert rep.reembed_s > 0 and (workspace.ws.version_dir(rep.version) / "model" / "adapter_model.safetensors").is_file()
    hits = workspace.search(ROUTER.format(99), k=5)
    assert hits.trial == rep.trial["id"] and len(hits) == 5  # the two models' rankings interleaved


def test_a_document_side_candidate_the_check_could_only_refuse_is_not_trained(workspace):
    """Too few held-out queries for gate.min_queries: the refusal is certain, so no LoRA is trained
    (in auto, after the query tier found no gain; in lora mode, on its own)."""
    _play_fold_own_docs(workspace)
    workspace.config = workspace.config.with_overrides({"gate.min_queries": 20})  # the query tier checks all 30, LoRA its held-out few
    rep = workspace.refresh(mode="auto")
    assert rep.status == "refused" and list(rep.checks) == ["query", "lora"], rep.reason
    assert rep.checks["query"].n == 30 and "no gain" in rep.checks["query"].reason
    lora = rep.checks["lora"]
    assert not lora.worth_trial and lora.n < 20 and lora.score is None and lora.current is None and lora.bar == "not_behind"
    assert lora.reason == (
        f"lora: not trained: {lora.n} queries of held-out feedback, too few to tell a gain from noise (gate.min_queries 20); "
        "the query tier learns from fewer (`ragtune refresh --mode query`), or lower gate.min_queries in config.json"
    )
    assert "; lora: not trained:" in rep.reason
    json.dumps(rep.to_dict(), allow_nan=False)  # strict JSON for --json and the dashboard
    assert _log(workspace)[-1]["checks"]["lora"]["score"] is None
    rep = workspace.refresh(mode="lora", force=True)
    assert rep.status == "refused" and rep.check is not None and rep.check.reason.startswith("lora: not trained:"), rep.reason
    assert rep.train_s == 0.0 and len(workspace.ws.list_versions()) == 1


def test_a_document_side_check_says_which_held_out_queries_it_left_out(workspace):
    """After a query tier is promoted, the queries it trained on cannot judge a LoRA candidate: the reason says how many were left out."""
    play(workspace)
    assert workspace.refresh(mode="query", trial=False).status == "promoted"
    rep = workspace.refresh(mode="lora", force=True)  # every held-out query was trained on: none left to check on
    assert rep.status == "refused" and rep.check is not None and rep.check.n == 0, rep.reason
    assert "lora: not trained: 0 queries of held-out feedback (" in rep.check.reason and "left out: the serving version trained on them" in rep.check.reason
    assert "needs searches of new queries" in rep.check.reason and "lower gate.min_queries" not in rep.check.reason  # lowering it cannot help
    play(workspace, start=100)  # new queries, which the promoted tier never saw
    rep = workspace.refresh(mode="lora", force=True)
    assert rep.check is not None and rep.check.n > 0, rep.reason
    assert "more held-out queries left out: the serving version trained on them" in rep.check.reason, rep.check.reason


def test_after_a_refused_document_side_candidate_the_next_waits_for_twice_the_feedback(workspace):
    """A LoRA candidate the check refused is not retrained from little more feedback (minutes of
    training each); once the log holds twice the clicks, or by a forced refresh, it is."""
    _play_varied(workspace, 0, 40)
    # a learning rate that wrecks the model, and a bar it cannot clear: the check refuses a trained candidate
    workspace.config = workspace.config.with_overrides({"train.epochs": 1, "train.lr": 1.0, "gate.min_queries": 1, "gate.confidence": 0.99})
    rep = workspace.refresh(mode="lora", trial=False)
    first = rep.check
    assert rep.status == "refused" and first is not None and first.current is not None and rep.train_s > 0, rep.reason
    assert last_refused_events(workspace.ws, "lora", "v0001", "ahead") == 40
    assert last_refused_events(workspace.ws, "lora", "v0001", "not_behind") is None  # another bar: its own record
    for _ in range(3):  # the same searches again: more clicks, no new training pair (a plateau must not block for good)
        _play_varied(workspace, 0, 10)
    rep = workspace.refresh(mode="lora", trial=False, min_new_events=1)
    assert rep.status == "refused" and rep.train_s == 0.0 and rep.check is not None and rep.check.current is None, rep.reason
    assert rep.check.reason == (
        "lora: not trained: the last one against this serving version was refused with 40 clicks and ratings in the log; "
        "the next is trained from 80 (now 70) or by a forced refresh"
    )
    assert last_refused_events(workspace.ws, "lora", "v0001", "ahead") == 40  # an untrained refusal does not move the mark
    rep = workspace.refresh(mode="lora", trial=False, force=True)
    assert rep.check is not None and rep.check.current is not None and rep.train_s > 0, rep.reason
    assert last_refused_events(workspace.ws, "lora", "v0001", "ahead") == 70
    for _ in range(7):  # twice the clicks, on queries seen before
        _play_varied(workspace, 0, 10)
    rep = workspace.refresh(mode="lora", trial=False)
    assert rep.check is not None and rep.check.current is not None and rep.train_s > 0, rep.reason


def test_a_version_kept_for_its_files_keeps_the_index_it_searches(workspace, docs_jsonl):
    """A version whose model files another kept version uses (as workspaces before the copies were
    made have) is kept whole: pruning never leaves a listed version that cannot serve."""
    play(workspace)
    query = workspace.refresh(mode="query", trial=False).version
    rows = [json.loads(line) for line in docs_jsonl.read_text().splitlines()]
    rows[0]["text"] = "changed"
    docs_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    new = workspace.index([docs_jsonl])["version"]
    model = workspace.ws.read_version(new).model
    workspace.ws.update_manifest(new, model={**model, **{k: f"versions/{query}/{k}.safetensors" for k in ("query_map", "query_memory")}})
    workspace.config = workspace.config.with_overrides({"index.keep_versions": 1})
    assert workspace.ws.prune_versions(workspace.config) == []
    assert [v.name for v in workspace.ws.list_versions()] == ["v0001", query, new]
    assert workspace.rollback(query) == query and len(workspace.search("reset", k=3, log=False)) == 3
    assert workspace.doctor().healthy


def test_rollback_errors(workspace):
    with pytest.raises(RagtuneError, match="no earlier version"):
        workspace.rollback()
    with pytest.raises(RagtuneError, match="does not exist"):
        workspace.rollback("v0042")


def test_second_refresh_is_locked_out(workspace):
    play(workspace)
    with workspace.ws.lock("refresh"), pytest.raises(RefreshLockedError, match="locked by refresh"):
        workspace.refresh(mode="query")
    with workspace.ws.lock("index"), pytest.raises(RefreshLockedError, match="locked by index"):
        workspace.decide_trial()
    with workspace.ws.lock("refresh"), pytest.raises(RefreshLockedError, match="locked by refresh") as own:
        workspace.rollback()
    assert "to roll back now" not in str(own.value)  # this process's own refresh (a service's POST /refresh): nothing to kill
    holder = subprocess.Popen(  # another process's long refresh: the rollback says how to pull the lever now
        _script(f"from ragtune.workspace import Workspace\nimport time\nwith Workspace({str(workspace.ws.root)!r}).lock('refresh'):\n    print('held', flush=True)\n    time.sleep(60)"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RefreshLockedError, match=rf"locked by refresh \(pid {holder.pid}.*to roll back now, stop it first \(kill {holder.pid}\)"):
            workspace.rollback()
    finally:
        holder.kill()
        holder.wait()
    assert workspace.refresh(mode="query").status == "trial_started"


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + body]


def test_concurrent_reader_keeps_answering_and_picks_up_the_swap(workspace, tmp_path):
    play(workspace)
    out = tmp_path / "reader.jsonl"
    reader = subprocess.Popen(
        _script(
            f"""
import json, time
from ragtune import Ragtune
rt = Ragtune({str(workspace.ws.root)!r}, progress=False)
stop = time.time() + 120
with open({str(out)!r}, 'w') as fh:
    while time.time() < stop:
        hits = rt.search('reset the router', k=3, log=False)
        assert len(hits) == 3
        fh.write(json.dumps(hits.version) + '\\n'); fh.flush()
        if hits.version != 'v0001':
            break
        time.sleep(0.02)
"""
        ),
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    while not out.exists() or not out.read_text():
        time.sleep(0.1)
        assert reader.poll() is None
    rep = workspace.refresh(mode="query", trial=False)
    assert rep.status == "promoted", rep.reason
    assert reader.wait(120) == 0
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert seen[0] == "v0001" and seen[-1] == rep.version


def test_kill_minus_nine_mid_refresh_leaves_serving_intact(workspace):
    play(workspace)
    root = workspace.ws.root
    proc = subprocess.Popen(
        _script(f"from ragtune import Ragtune\nRagtune({str(root)!r}, progress=False).refresh(mode='lora')"),
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    deadline = time.time() + 120
    work = workspace.ws.work_dir
    while not (work.is_dir() and any(p.name.startswith("refresh-") for p in work.iterdir())):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert workspace.current_version == "v0001" and workspace.ws.read_trial() is None
    assert len(workspace.search("reset", k=3, log=False)) == 3
    # the lock died with the process; the next refresh runs and cleans up
    rep = workspace.refresh(mode="query", force=True)
    assert rep.status == "trial_started", rep.reason
    assert not any(p.name.startswith(".tmp-") for p in workspace.ws.versions_dir.iterdir())
    assert not work.exists() or not any(work.iterdir())


def test_prune_keeps_current_and_what_it_needs(workspace, docs_jsonl):
    workspace.config = workspace.config.with_overrides({"index.keep_versions": 1})
    play(workspace)
    rep = workspace.refresh(mode="query", trial=False)
    assert rep.status == "promoted", rep.reason
    # a query-tier version searches v0001's index: pruning to 1 must keep both
    names = [v.name for v in workspace.ws.list_versions()]
    assert names == ["v0001", rep.version]
    rows = [json.loads(line) for line in docs_jsonl.read_text().splitlines()]
    rows[0]["text"] = "changed"
    docs_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    new = workspace.index([docs_jsonl])["version"]
    # the re-indexed version keeps the query-side tier in copies of its own, so nothing it needs
    # lives in an older version: both older versions go
    for key in ("query_map", "query_memory"):
        assert workspace.ws.read_version(new).model[key] == f"versions/{new}/{key}.safetensors"
    assert [v.name for v in workspace.ws.list_versions()] == [new]
    assert len(workspace.search("reset", k=3, log=False)) == 3

