"""The refresh loop with tiny in-process models: gate, swap, lock, rollback, query tier, kill -9."""

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
from ragtune.mining import normalize_query, split_heldout

ROOT = Path(__file__).resolve().parent.parent


def _play(rt, n: int = 24, *, contradict: bool = False) -> tuple[str, str]:
    """Near-identical queries whose users all click the doc ranked 5th (or, for held-out ones when
    ``contradict``, the doc ranked 1st, which the current model already serves best): a pattern a
    candidate can learn, or be misled by."""
    texts = [f"please help me with my router problem number {i}" for i in range(n)]
    first = rt.search(texts[0], k=5, log=False)
    target, other = first[4].doc_id, first[0].doc_id
    held = split_heldout([normalize_query(t) for t in texts], rt.config.mining)
    for t in texts:
        hits = rt.search(t, k=5)
        want = other if contradict and normalize_query(t) in held else target
        if want in {h.doc_id for h in hits}:
            rt.click(hits.query_id, want)
    return target, other


def test_too_little_feedback_is_a_clear_noop(workspace):
    rep = workspace.refresh()
    assert rep["status"] == "skipped" and "0 new feedback events" in rep["reason"] and "--force" in rep["reason"]
    rep = workspace.refresh(force=True)
    assert rep["status"] == "skipped" and "too little feedback" in rep["reason"]
    assert workspace.current_version == "v0001"


def test_query_tier_promotes_without_reembedding(workspace):
    _play(workspace)
    v1 = workspace.current_version
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "promoted", rep["reason"]
    assert rep["reembed_s"] == 0.0
    v2 = workspace.current_version
    info = workspace.ws.read_version(v2)
    assert info.kind == "query" and info.index_version == v1
    vdir = workspace.ws.version_dir(v2)
    key = "query_memory" if rep["gate"]["chosen"].startswith("memory@") else "query_map"  # the gate picked one of the tier's two kinds
    assert (vdir / f"{key}.safetensors").is_file()
    assert not (vdir / "vectors.npy").exists() and not (vdir / "docs.sqlite").exists()
    assert info.model[key] == f"versions/{v2}/{key}.safetensors"  # relative: the workspace can move
    assert {k.split("@")[0] for k in rep["gate"]["candidates"]} == {"query", "memory"}
    hits = workspace.search("please help me with my router problem number 99", k=5, log=False)
    assert hits.version == v2
    # the decision is recorded with both figures
    entry = json.loads((workspace.ws.root / "refresh-log.jsonl").read_text().splitlines()[-1])
    assert entry["status"] == "promoted" and entry["decision"]["current"]["heldout"] < entry["decision"]["candidates"][entry["decision"]["chosen"]]["heldout"]


def test_gate_refuses_a_worse_model(workspace):
    _play(workspace, contradict=True)
    v1 = workspace.current_version
    # the hash held-out split (what LoRA/full use), whose held-out users contradict the training ones
    workspace.config = workspace.config.with_overrides({"gate.folds": 0, "train.query_interpolation": [1.0], "train.query_l2": 0.0, "train.query_lr": 0.05, "train.query_epochs": 30})
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "refused"
    gate = rep["gate"]
    assert gate["metric"] == "loglik" and "does not beat" in rep["reason"]
    assert all(c["heldout"] < gate["current"]["heldout"] for c in gate["candidates"].values())
    assert workspace.current_version == v1 and len(workspace.ws.list_versions()) == 1
    entry = json.loads((workspace.ws.root / "refresh-log.jsonl").read_text().splitlines()[-1])
    assert entry["status"] == "refused" and entry["decision"]["current"]["heldout"] == gate["current"]["heldout"]
    # the refused feedback is consumed: the next refresh waits for new events
    assert workspace.refresh(mode="query")["status"] == "skipped"


def test_crossfit_gate_judges_every_fresh_query_and_refuses_no_gain(workspace):
    texts = [f"please help me with my router problem number {i}" for i in range(24)]
    for t in texts:  # every user clicks what the current model already ranks first: nothing to gain
        hits = workspace.search(t, k=5)
        workspace.click(hits.query_id, hits[0].doc_id)
    # nDCG over the pool: every click already sits at rank 1, so no candidate can beat 1.0
    workspace.config = workspace.config.with_overrides({"gate.folds": 5, "gate.query_metric": "ndcg@10"})
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "refused" and "does not beat" in rep["reason"]
    assert rep["gate"]["metric"] == "ndcg@10" and rep["gate"]["current"]["heldout"] == pytest.approx(1.0)
    assert rep["gate_queries"].startswith("all 24 held-out queries") and "5 folds" in rep["gate_queries"]
    assert workspace.current_version == "v0001"


def _play_varied(rt, first: int, last: int) -> None:
    """Users of near-identical queries click different ranks, so the gate's figures are not all 1.0."""
    for i in range(first, last):
        hits = rt.search(f"please help me with my router problem number {i}", k=5)
        rt.click(hits.query_id, hits[(i * 7) % 5].doc_id)


def test_crossfit_promotion_records_what_it_trained_on(workspace, docs_jsonl):
    from ragtune.refresh import OOF_FILE, TRAINED_FILE, trained_queries

    assert trained_queries(workspace, workspace.serving()) == set()  # a plain index has seen no feedback
    _play(workspace)
    workspace.config = workspace.config.with_overrides({"gate.folds": 5, "gate.min_off_policy": 1000})
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "promoted", rep.get("reason")
    n = rep["mined"]["feedback_queries"]
    assert n >= 10 and rep["mined"]["heldout_queries"] == n and rep["gate_queries"].startswith(f"all {n} ")  # every query judged, none set aside
    v2 = workspace.current_version
    seen = json.loads((workspace.ws.version_dir(v2) / TRAINED_FILE).read_text())
    assert len(seen) == n and trained_queries(workspace, workspace.serving()) == set(seen)
    assert (workspace.ws.version_dir(v2) / OOF_FILE).is_file()
    # new queries join the judged set
    _play_varied(workspace, 24, 36)
    rep = workspace.refresh(mode="query", force=True)
    assert rep["gate_queries"].startswith(f"all {n + 12} ")


def test_serving_tier_is_judged_by_its_own_out_of_fold_vectors(workspace):
    _play(workspace)  # a pattern to learn ...
    _play_varied(workspace, 24, 36)  # ... and users it does not fit
    workspace.config = workspace.config.with_overrides({"gate.folds": 5, "gate.confidence": 0.0, "gate.min_off_policy": 1000})
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "promoted", rep.get("reason")
    chosen, v2 = rep["gate"]["chosen"], workspace.current_version
    # no new feedback: the same data, folds and seed refit the same candidate, whose out-of-fold
    # figure must equal the serving tier's (the saved vectors line up with the right queries)
    rep = workspace.refresh(mode="query", force=True)
    assert rep["status"] == "refused" and workspace.current_version == v2
    assert rep["gate"]["current"]["heldout"] == pytest.approx(rep["gate"]["candidates"][chosen]["heldout"], abs=1e-6)
    assert rep["gate"]["current"]["heldout"] < 0.999


def test_reindex_keeps_the_record_of_what_the_model_trained_on(workspace, docs_jsonl, tmp_path):
    from ragtune.refresh import TRAINED_FILE, trained_queries

    _play(workspace)
    workspace.config = workspace.config.with_overrides({"gate.folds": 5})
    assert workspace.refresh(mode="query")["status"] == "promoted"
    seen = trained_queries(workspace, workspace.serving())
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "extra-1", "text": "a brand new document about routers"}) + "\n")
    v3 = workspace.index([docs_jsonl, extra])["version"]
    assert (workspace.ws.version_dir(v3) / TRAINED_FILE).is_file() and trained_queries(workspace, workspace.serving()) == seen


def test_lora_refresh_reembeds_into_a_new_version_and_rolls_back(workspace):
    _play(workspace)
    # this test is about what a promotion writes; the gate's noise check has its own tests (test_gate.py)
    workspace.config = workspace.config.with_overrides({"train.lr": 5e-3, "train.epochs": 2, "train.interpolation": [1.0], "gate.confidence": 0.0})
    v1 = workspace.current_version
    rep = workspace.refresh(mode="lora")
    assert rep["status"] in ("promoted", "refused")
    if rep["status"] == "refused":  # the tiny random model may not improve; the gate said why
        assert "does not beat" in rep["reason"]
        pytest.skip("tiny model's LoRA candidate was refused by the gate")
    v2 = workspace.current_version
    info = workspace.ws.read_version(v2)
    assert info.kind == "index" and info.index_version == v2 and info.parent == v1
    adapter = workspace.ws.version_dir(v2) / "model"
    assert (adapter / "adapter_model.safetensors").is_file()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == workspace.config.model.name
    assert rep["reembed_s"] > 0
    hits = workspace.search("reset", k=3, log=False)
    assert hits.version == v2
    assert workspace.rollback() == v1 and workspace.current_version == v1
    assert workspace.search("reset", k=3, log=False).version == v1
    assert workspace.rollback(v2) == v2


def test_auto_judges_lora_first_then_the_query_tier(workspace):
    """auto: the LoRA candidate goes through its own gate; refused (on 3 held-out queries it does not
    beat the serving model, or they are too few to tell a gain from noise), the cross-fitted query tier is judged on every feedback query and
    promoted without re-embedding. Both decisions are reported and logged."""
    _play(workspace)
    workspace.config = workspace.config.with_overrides({"train.epochs": 1})
    v1 = workspace.current_version
    rep = workspace.refresh(mode="auto")
    assert rep["mode"] == "auto" and set(rep["tiers"]) == {"lora", "query"}
    assert rep["tiers"]["lora"]["status"] == "refused" and "on 3 held-out queries" in rep["tiers"]["lora"]["reason"]
    assert rep["status"] == "promoted", rep["reason"]
    assert rep["reason"].startswith("lora refused (") and rep["reembed_s"] == 0.0
    assert rep["gate"]["metric"] == "loglik"
    info = workspace.ws.read_version(workspace.current_version)
    assert info.kind == "query" and info.index_version == v1
    log = [json.loads(line) for line in (workspace.ws.root / "refresh-log.jsonl").read_text().splitlines()]
    assert [e["status"] for e in log[-2:]] == ["refused", "promoted"]
    # nothing new since: the next auto refresh is a clear no-op that does not train either tier
    rep = workspace.refresh(mode="auto")
    assert rep["status"] == "skipped" and set(rep["tiers"]) == {"lora"}


def test_auto_fits_the_query_tier_on_top_of_a_promoted_lora_model(workspace):
    """auto: when the LoRA candidate wins, the corpus is re-embedded into a new version and the query
    tier is then judged on top of *that* version (its vectors, its held-out queries), in the same refresh."""
    _play(workspace)
    workspace.config = workspace.config.with_overrides({"train.lr": 5e-3, "train.epochs": 2, "train.interpolation": [1.0], "gate.confidence": 0.0})
    v1 = workspace.current_version
    rep = workspace.refresh(mode="auto")
    if rep["tiers"]["lora"]["status"] != "promoted":  # the tiny random model may not improve; the gate said why
        assert "does not beat" in rep["tiers"]["lora"]["reason"]
        pytest.skip("tiny model's LoRA candidate was refused by the gate")
    assert set(rep["tiers"]) == {"lora", "query"} and rep["status"] == "promoted"
    assert rep["reason"].startswith("lora promoted (") and rep["reembed_s"] > 0
    v2 = rep["tiers"]["lora"]["version"]
    assert workspace.ws.read_version(v2).kind == "index" and workspace.ws.read_version(v2).parent == v1
    query = rep["tiers"]["query"]
    assert query["status"] in ("promoted", "refused"), query
    assert query["gate"]["current"]["heldout"] is not None
    if query["status"] == "promoted":
        info = workspace.ws.read_version(workspace.current_version)
        assert info.kind == "query" and info.index_version == v2 and rep["version"] == workspace.current_version
    else:
        assert workspace.current_version == v2 == rep["version"]
    log = [json.loads(line) for line in (workspace.ws.root / "refresh-log.jsonl").read_text().splitlines()]
    assert [e["status"] for e in log[-2:]] == ["promoted", query["status"]]


def test_rollback_errors(workspace):
    with pytest.raises(RagtuneError, match="no earlier version"):
        workspace.rollback()
    with pytest.raises(RagtuneError, match="does not exist"):
        workspace.rollback("v0042")


def test_second_refresh_is_locked_out(workspace):
    _play(workspace)
    with workspace.ws.lock("refresh"), pytest.raises(RefreshLockedError, match="locked by refresh"):
        workspace.refresh(mode="query")
    assert workspace.refresh(mode="query")["status"] in ("promoted", "refused")


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + body]


def test_concurrent_reader_keeps_answering_and_picks_up_the_swap(workspace, tmp_path):
    _play(workspace)
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
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "promoted", rep["reason"]
    assert reader.wait(120) == 0
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert seen[0] == "v0001" and seen[-1] == rep["version"]


def test_kill_minus_nine_mid_refresh_leaves_serving_intact(workspace):
    _play(workspace)
    root = workspace.ws.root
    proc = subprocess.Popen(
        _script(f"from ragtune import Ragtune\nRagtune({str(root)!r}, progress=False).refresh(mode='lora')"),
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    deadline = time.time() + 120
    while not any(p.name.startswith("ragtune-refresh-") for p in root.iterdir()):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert workspace.current_version == "v0001"
    assert len(workspace.search("reset", k=3, log=False)) == 3
    # the lock died with the process; the next refresh runs and cleans up
    rep = workspace.refresh(mode="query", force=True)
    assert rep["status"] in ("promoted", "refused")
    assert not any(p.name.startswith(".tmp-") for p in workspace.ws.versions_dir.iterdir())


def test_prune_keeps_current_and_what_it_needs(workspace, docs_jsonl):
    import json as _json

    workspace.config = workspace.config.with_overrides({"index.keep_versions": 1})
    _play(workspace)
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "promoted", rep["reason"]
    # a query-tier version searches v0001's index: pruning to 1 must keep both
    names = [v.name for v in workspace.ws.list_versions()]
    assert names == ["v0001", rep["version"]]
    rows = [_json.loads(line) for line in docs_jsonl.read_text().splitlines()]
    rows[0]["text"] = "changed"
    docs_jsonl.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    new = workspace.index([docs_jsonl])["version"]
    # the re-indexed version keeps the query-side tier (its file lives in the query version's dir, so
    # that dir is kept); v0001's index is no longer needed by anything kept and goes
    key = "query_memory" if rep["gate"]["chosen"].startswith("memory@") else "query_map"
    assert workspace.ws.read_version(new).model[key] == f"versions/{rep['version']}/{key}.safetensors"
    assert [v.name for v in workspace.ws.list_versions()] == [rep["version"], new]
    assert len(workspace.search("reset", k=3, log=False)) == 3


def test_cold_guard_refuses_a_candidate_whose_gain_costs_queries_on_other_topics(workspace):
    """Router-problem users all click one doc; users asking about other topics each click their own first hit.

    Every candidate moves queries toward the router users' doc, so it loses on the other-topic
    queries (no other fold chose their docs): with the guard on, the refresh is refused and says why.
    """
    from tests.conftest import DOCS

    _play(workspace)
    for doc in DOCS:
        hits = workspace.search(f"{doc['title']}: {doc['text']}", k=5)
        workspace.click(hits.query_id, hits[0].doc_id)
    workspace.config = workspace.config.with_overrides({"gate.folds": 5, "gate.cold_guard": 1e-9, "gate.query_confidence": 0.0})
    rep = workspace.refresh(mode="query")
    assert rep["status"] == "refused", rep.get("reason")
    assert "gate.cold_guard" in rep["reason"] and "forgetting" in rep["reason"]
    gate = rep["gate"]
    assert gate["current"]["heldout_cold"] < 0  # a log-probability
    assert all("heldout_cold" in c and c["cold_p_loss"] > 0 for c in gate["candidates"].values())
    assert workspace.current_version == "v0001"
    # the same feedback without the guard: promoted
    workspace.config = workspace.config.with_overrides({"gate.cold_guard": 0.0})
    assert workspace.refresh(mode="query", force=True)["status"] == "promoted"
