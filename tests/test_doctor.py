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
