"""`ragtune doctor [--repair]`: each kind of damage is found, and repaired where that is safe."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ragtune import Ragtune, WorkspaceError
from ragtune.cli import main
from ragtune.doctor import diagnose


def _problems(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.check for f in report.findings if f.status == "problem" and not f.repaired]


def test_a_healthy_workspace_is_healthy(workspace):
    report = diagnose(workspace.ws.root)
    assert report.healthy, report.to_dict()
    assert {f.check for f in report.findings} >= {"config", "feedback", "versions", "pointer", "trial", "decisions", "leftovers", "lock"}
    out = CliRunner().invoke(main, ["-w", str(workspace.ws.root), "doctor", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["healthy"] is True


def test_corrupt_current_is_found_and_repointed(workspace, docs_jsonl, tmp_path):
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "x1", "text": "an extra document about modems"}) + "\n", encoding="utf-8")
    workspace.index([extra])
    newest = workspace.current_version
    workspace.ws.current_path.write_text("{not json", encoding="utf-8")
    runner = CliRunner()
    # versions still lists (one picks a version from it), rollback VERSION still works
    out = runner.invoke(main, ["-w", str(workspace.ws.root), "versions"])
    assert out.exit_code == 0 and "v0001" in out.output, out.output
    out = runner.invoke(main, ["-w", str(workspace.ws.root), "doctor"])
    assert out.exit_code == 1 and "CURRENT" in out.output and "Traceback" not in out.output, out.output
    out = runner.invoke(main, ["-w", str(workspace.ws.root), "doctor", "--repair"])
    assert out.exit_code == 0, out.output
    assert Ragtune(workspace.ws.root, progress=False).current_version == newest
    assert Ragtune(workspace.ws.root, progress=False).search("modems", k=3, log=False)


def test_rollback_to_a_named_version_fixes_a_corrupt_current(workspace):
    workspace.ws.current_path.write_text("garbage", encoding="utf-8")
    out = CliRunner().invoke(main, ["-w", str(workspace.ws.root), "rollback", "v0001", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"current_version": "v0001"}


def test_missing_index_file_is_rebuilt_from_the_vectors(workspace, caplog):
    before = [h.doc_id for h in workspace.search("reset the router", k=4, log=False)]
    path = workspace.ws.version_dir(workspace.current_version) / "index.faiss"
    path.unlink()
    fresh = Ragtune(workspace.ws.root, progress=False)
    # searches keep answering meanwhile, exactly over the version's vectors, with a warning naming the fix
    out = CliRunner().invoke(main, ["-w", str(workspace.ws.root), "query", "reset the router", "-k", "4", "--no-log", "--json"])
    assert out.exit_code == 0 and [h["doc_id"] for h in json.loads(out.stdout)["hits"]] == before, out.output
    assert "index.faiss is missing: searching exactly over" in caplog.text and "`ragtune doctor --repair` rebuilds it" in caplog.text
    assert not fresh.doctor().healthy  # still a problem until repaired
    report = fresh.doctor(repair=True)
    assert report.healthy, report.to_dict()
    assert path.is_file()
    assert [h.doc_id for h in Ragtune(workspace.ws.root, progress=False).search("reset the router", k=4, log=False)] == before


def test_corrupt_feedback_database_is_moved_aside(workspace):
    hits = workspace.search("reset", k=3)
    workspace.click(hits.query_id, hits[0].doc_id)
    workspace.feedback.close()
    workspace.ws.feedback_path.write_bytes(b"this is not a database" * 100)
    report = diagnose(workspace.ws.root)
    assert "feedback" in _problems(report)
    report = diagnose(workspace.ws.root, repair=True)
    assert report.healthy, report.to_dict()
    aside = list(workspace.ws.root.glob("feedback.sqlite.corrupt-*"))
    assert aside and aside[0].read_bytes().startswith(b"this is not")  # nothing deleted
    rt = Ragtune(workspace.ws.root, progress=False)
    hits = rt.search("reset", k=3)
    assert hits.query_id is not None
    rt.click(hits.query_id, hits[0].doc_id)
    assert rt.feedback.stats()["clicks"] == 1


def test_leftovers_are_listed_then_removed(workspace):
    (workspace.ws.versions_dir / ".tmp-dead").mkdir()
    (workspace.ws.work_dir / "refresh-x").mkdir(parents=True)
    report = diagnose(workspace.ws.root)
    assert "leftovers" in _problems(report)
    assert (workspace.ws.versions_dir / ".tmp-dead").is_dir()  # without --repair nothing changes
    report = diagnose(workspace.ws.root, repair=True)
    assert report.healthy
    assert not (workspace.ws.versions_dir / ".tmp-dead").exists() and not workspace.ws.work_dir.exists()


def test_corrupt_trial_record_is_removed(workspace):
    workspace.ws.trial_path.write_text("{", encoding="utf-8")
    assert "trial" in _problems(diagnose(workspace.ws.root))
    assert diagnose(workspace.ws.root, repair=True).healthy
    assert not workspace.ws.trial_path.exists()
    assert workspace.search("reset", k=2)


@pytest.mark.parametrize(
    "content",
    [b'{"id": "abc"}', b"\xff\xfe\x00garbage", b"[1, 2]", b'{"id": "a", "version": "v0002", "baseline": "v0001", "tier": "query", "share": "all"}'],
    ids=["missing-fields", "not-utf8", "not-an-object", "bad-share"],
)
def test_a_malformed_trial_record_never_fails_a_search_and_trial_stop_removes_it(workspace, content):
    """A hand-edited TRIAL or one written by another program: searches go on uninterleaved, status says why, stop clears it."""
    workspace.ws.trial_path.write_bytes(content)
    fresh = Ragtune(workspace.ws.root, progress=False)  # a process that has not read it yet
    hits = fresh.search("reset", k=3)
    assert hits.trial is None and len(hits) == 3
    assert "TRIAL is corrupt" in CliRunner().invoke(main, ["-w", str(workspace.ws.root), "status"]).output
    with pytest.raises(WorkspaceError, match=r"corrupt.*`ragtune trial stop` removes it"):  # asked for directly: says what to do
        fresh.trial()
    assert fresh.stop_trial() is None and not workspace.ws.trial_path.exists()
    assert any(e["event"] == "trial_dropped" and "unreadable" in e["reason"] for e in workspace.ws.read_log())


def test_a_lost_lock_holder_name_survives_a_second_contender(workspace):
    import pytest

    from ragtune.errors import RefreshLockedError

    with workspace.ws.lock("refresh"):
        for _ in range(2):
            with pytest.raises(RefreshLockedError, match=r"locked by refresh \(pid"), workspace.ws.lock("index"):
                pass
        assert "refresh" in (workspace.ws.lock_holder() or "")
    assert workspace.ws.lock_holder() is None


def test_search_keeps_answering_when_current_is_corrupt(workspace, caplog):
    before = [h.doc_id for h in workspace.search("reset the router", k=3, log=False)]
    workspace.ws.current_path.write_text("garbage", encoding="utf-8")
    fresh = Ragtune(workspace.ws.root, progress=False)  # a new process: nothing loaded yet
    with caplog.at_level("WARNING"):
        assert [h.doc_id for h in fresh.search("reset the router", k=3, log=False)] == before
        assert [h.doc_id for h in workspace.search("reset the router", k=3, log=False)] == before  # one already serving
    assert "doctor --repair" in caplog.text and "answered by version v0001" in caplog.text


def test_a_corrupt_current_after_a_rollback_stays_rolled_back(workspace, tmp_path):
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "x1", "text": "an extra document about modems"}) + "\n", encoding="utf-8")
    workspace.index([extra])
    assert workspace.current_version == "v0002"
    workspace.rollback("v0001")
    workspace.ws.current_path.write_text("garbage", encoding="utf-8")
    assert Ragtune(workspace.ws.root, progress=False).search("modems", k=9, log=False).version == "v0001"
    assert diagnose(workspace.ws.root, repair=True).healthy
    assert Ragtune(workspace.ws.root, progress=False).current_version == "v0001"


def test_status_reports_a_corrupt_current_or_trial_instead_of_failing(workspace):
    workspace.ws.trial_path.write_text("{", encoding="utf-8")
    workspace.ws.current_path.write_text("garbage", encoding="utf-8")
    out = CliRunner().invoke(main, ["-w", str(workspace.ws.root), "status"])
    assert out.exit_code == 0, out.output
    assert "PROBLEM" in out.output and "CURRENT is corrupt" in out.output and "TRIAL is corrupt" in out.output
    assert "version     v0001" in out.output  # what answers searches meanwhile


def test_a_running_app_follows_the_new_log_after_repair(workspace):
    """The app keeps its FeedbackLog open across `doctor --repair`: its next events go to the new file."""
    hits = workspace.search("reset", k=3)
    workspace.click(hits.query_id, hits[0].doc_id)
    moved = workspace.ws.root / "aside.sqlite"
    workspace.ws.feedback_path.rename(moved)  # what --repair does to a corrupt log
    for suffix in ("-wal", "-shm"):
        side = workspace.ws.root / f"feedback.sqlite{suffix}"
        if side.exists():
            side.rename(workspace.ws.root / f"aside.sqlite{suffix}")
    hits = workspace.search("reset", k=3)
    assert hits.query_id is not None
    workspace.click(hits.query_id, hits[0].doc_id)
    assert workspace.ws.feedback_path.is_file()
    assert Ragtune(workspace.ws.root, progress=False).feedback.stats()["clicks"] == 1  # in the new log, not the moved one


def test_a_killed_lock_holder_is_told_apart_from_a_live_one(workspace):
    workspace.ws.lock_path.write_text("refresh (pid 999999999, since then)", encoding="utf-8")  # no such process
    assert workspace.ws.lock_holder() is None
    lock = next(f for f in diagnose(workspace.ws.root).findings if f.check == "lock")
    assert lock.status == "warning" and "killed holder" in lock.message
    with workspace.ws.lock("refresh"):  # a killed holder never blocks anyone
        assert "refresh (pid" in (workspace.ws.lock_holder() or "")


def test_a_cuda_device_without_a_gpu_is_a_problem_like_status_says(workspace, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    workspace.config.with_overrides({"model.device": "cuda"}).save(workspace.ws.config_path)
    report = diagnose(workspace.ws.root)
    found = [f for f in report.findings if f.check == "config"]
    assert not report.healthy and found[0].status == "problem" and "model.device is 'cuda' but torch sees no GPU" in found[0].message
    assert found[0].fix == "set model.device to 'auto' or 'cpu' in config.json"
    assert any("model.device is 'cuda'" in p for p in Ragtune(workspace.ws.root, progress=False).status()["problems"])


# -- damaged files, and repairs that fix the file rather than move CURRENT --------------------------
@pytest.fixture()
def query_tier(workspace, tmp_path):  # type: ignore[no-untyped-def]
    """v0001 (8 docs), v0002 (9 docs) and the serving v0003: a query tier over v0002's index."""
    from tests.conftest import play

    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "x1", "text": "an extra document about modems"}) + "\n", encoding="utf-8")
    workspace.index([tmp_path / "docs.jsonl", extra])
    play(workspace)
    assert workspace.refresh(mode="query", trial=False).status == "promoted"
    assert workspace.current_version == "v0003" and workspace.ws.read_version("v0003").index_version == "v0002"
    return workspace


def _finding(report, check: str, text: str):  # type: ignore[no-untyped-def]
    found = [f for f in report.findings if f.check == check and text in f.message]
    assert found, report.to_dict()
    return found[0]


@pytest.mark.parametrize("fname", ["docs.sqlite", "vectors.npy", "index.faiss"])
def test_a_junk_index_file_is_found(workspace, fname):
    """Junk that makes every search (or refresh) fail is a problem, not `healthy`, and the finding names the file."""
    (workspace.ws.version_dir("v0001") / fname).write_text("garbage\n", encoding="utf-8")
    report = diagnose(workspace.ws.root)
    assert not report.healthy
    found = _finding(report, "versions", f"versions/v0001/{fname} cannot be read")
    assert found.status == "problem"
    if fname == "docs.sqlite":  # nothing to rebuild it from, nothing to roll back to
        assert not found.repairable and "re-index" in found.fix


def test_junk_vectors_and_a_short_index_are_rebuilt_from_each_other(workspace):
    import faiss
    import numpy as np

    vdir = workspace.ws.version_dir("v0001")
    before = np.load(vdir / "vectors.npy")
    np.save(vdir / "vectors.npy", before[:3])  # a row count that does not match the doc store
    found = _finding(diagnose(workspace.ws.root), "versions", "vectors.npy holds 3 vectors for 8 documents")
    assert found.repairable and found.fix == "rebuild it from versions/v0001/index.faiss"
    assert diagnose(workspace.ws.root, repair=True).healthy
    assert np.array_equal(np.load(vdir / "vectors.npy"), before)
    short = faiss.IndexFlatIP(before.shape[1])
    short.add(before[:5])
    faiss.write_index(short, str(vdir / "index.faiss"))
    _finding(diagnose(workspace.ws.root), "versions", "index.faiss holds 5 vectors for 8 documents")
    assert diagnose(workspace.ws.root, repair=True).healthy
    assert faiss.read_index(str(vdir / "index.faiss")).ntotal == 8


def test_repair_rebuilds_missing_vectors_instead_of_rolling_a_serving_query_tier_back(query_tier):
    import numpy as np

    path = query_tier.ws.version_dir("v0002") / "vectors.npy"
    before = np.load(path)
    path.unlink()  # searches still work: they use index.faiss
    report = diagnose(query_tier.ws.root)
    found = _finding(report, "versions", "versions/v0002/vectors.npy is missing")
    assert found.repairable and "--repair: rebuild it from versions/v0002/index.faiss" in found.line() and "--repair: --repair" not in found.line()
    pointer = next(f for f in report.findings if f.check == "pointer")
    assert pointer.status == "ok" and "point CURRENT" not in pointer.fix  # no rollback announced
    report = diagnose(query_tier.ws.root, repair=True)
    assert report.healthy and not any(f.check == "pointer" and f.repaired for f in report.findings), report.to_dict()
    assert query_tier.ws.current_version() == "v0003" and np.array_equal(np.load(path), before)
    assert Ragtune(query_tier.ws.root, progress=False).search("modems", k=9, log=False).version == "v0003"


def test_repair_rewrites_a_missing_version_config_instead_of_rolling_back(query_tier):
    from ragtune import RagtuneConfig

    path = query_tier.ws.version_dir("v0003") / "config.json"
    path.unlink()
    assert not diagnose(query_tier.ws.root).healthy
    report = diagnose(query_tier.ws.root, repair=True)
    assert report.healthy and query_tier.ws.current_version() == "v0003", report.to_dict()
    assert RagtuneConfig.load(path).model.name == query_tier.config.model.name


def test_a_query_tier_that_cannot_serve_moves_current_and_says_what_is_lost(query_tier):
    (query_tier.ws.version_dir("v0003") / "query_map.safetensors").write_text("garbage\n", encoding="utf-8")
    report = diagnose(query_tier.ws.root)
    assert _finding(report, "versions", "versions/v0003/query_map.safetensors cannot be read").status == "problem"
    assert "`ragtune rollback v0002`" in _finding(report, "versions", "query_map").fix
    report = diagnose(query_tier.ws.root, repair=True)
    moved = _finding(report, "pointer", "CURRENT now -> v0002")
    assert moved.repaired and "(9 docs; v0003 had 9 docs and a query tier)" in moved.message
    assert report.healthy and query_tier.ws.current_version() == "v0002"  # the broken tier serves nothing now: a warning
    assert _finding(report, "versions", "query_map.safetensors").status == "warning"
    assert len(Ragtune(query_tier.ws.root, progress=False).search("modems", k=9, log=False)) == 9


def test_a_lost_feedback_database_is_a_problem_once_refreshes_used_it(query_tier):
    query_tier.feedback.close()
    for suffix in ("", "-wal", "-shm"):
        (query_tier.ws.root / f"feedback.sqlite{suffix}").unlink(missing_ok=True)
    found = _finding(diagnose(query_tier.ws.root), "feedback", "feedback.sqlite is missing but 1 refresh read feedback")
    assert found.status == "problem" and not found.repairable and "restore it from a backup" in found.fix
    assert not diagnose(query_tier.ws.root, repair=True).healthy  # nothing --repair can do
    fresh = Ragtune(query_tier.ws.root, progress=False)
    fresh.search("reset", k=3)  # a new log: a search, no click yet
    fresh.feedback.close()
    _finding(diagnose(query_tier.ws.root), "feedback", "feedback.sqlite is empty (no clicks or ratings)")
    query_tier.ws.feedback_path.write_bytes(b"this is not a database" * 100)  # moved aside by --repair: its events are kept
    report = diagnose(query_tier.ws.root, repair=True)
    assert report.healthy, [f.line() for f in report.findings]
    assert _finding(diagnose(query_tier.ws.root), "feedback", "feedback.sqlite.corrupt-").status == "warning"


def test_the_last_line_offers_repair_only_for_what_it_fixes(workspace):
    workspace.ws.config_path.write_text("{broken", encoding="utf-8")
    report = diagnose(workspace.ws.root)
    assert report.summary() == "problems found: `ragtune doctor --repair` cannot fix them; each says what to do"
    (workspace.ws.versions_dir / ".tmp-dead").mkdir()
    report = diagnose(workspace.ws.root)
    assert "--repair` fixes 1 of 2" in report.summary()
    left = next(f for f in report.findings if f.check == "leftovers")
    assert left.line().endswith("[--repair: removed by --repair (and by the next index or refresh)]")
    assert diagnose(workspace.ws.root, repair=True).summary() == "problems left: see above"


def test_vectors_of_another_width_are_not_rebuilt_into_the_index(workspace):
    """Which of the two files is wrong cannot be told: --repair must not rewrite a good index from the other."""
    import numpy as np

    before = [h.doc_id for h in workspace.search("reset the router", k=3, log=False)]
    vdir = workspace.ws.version_dir(workspace.current_version)
    index_bytes = (vdir / "index.faiss").read_bytes()
    np.save(vdir / "vectors.npy", np.random.default_rng(0).random((8, 16), dtype=np.float32))
    report = diagnose(workspace.ws.root, repair=True)
    assert any("-d vectors, vectors.npy 16-d" in f.message and not f.repairable for f in report.findings), report.to_dict()
    assert (vdir / "index.faiss").read_bytes() == index_bytes
    assert [h.doc_id for h in Ragtune(workspace.ws.root, progress=False).search("reset the router", k=3, log=False)] == before
