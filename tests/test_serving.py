"""Serving a damaged workspace: a missing pointer or a damaged version never breaks search while an
intact version is left, and write commands refuse to build on a stand-in."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ragtune import Ragtune, WorkspaceError
from ragtune.cli import main


@pytest.fixture()
def two_versions(workspace, tmp_path):  # type: ignore[no-untyped-def]
    """The workspace with a second version (one more document): v0001 and v0002 (current)."""
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "x1", "text": "an extra document about modems"}) + "\n", encoding="utf-8")
    workspace.index([extra])
    assert workspace.current_version == "v0002"
    return workspace


def test_a_missing_current_is_answered_by_the_last_good_version_and_index_refuses_to_start_over(two_versions, tmp_path, caplog):
    root = two_versions.ws.root
    (root / "CURRENT").unlink()
    fresh = Ragtune(root, progress=False)
    hits = fresh.search("modems", k=3, log=False)
    assert hits.version == "v0002" and "x1" in {h.doc_id for h in hits}
    assert "CURRENT is missing although versions exist" in caplog.text and "doctor --repair" in caplog.text
    assert any("is missing although versions exist" in p for p in fresh.status()["problems"])
    # before: `index` read the missing pointer as "nothing indexed yet" and served only the source it was given
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "o1", "text": "another document"}) + "\n", encoding="utf-8")
    out = CliRunner().invoke(main, ["-w", str(root), "index", str(other)])
    assert out.exit_code == 1 and "CURRENT is missing" in out.output and "doctor --repair" in out.output and "Traceback" not in out.output, out.output
    out = CliRunner().invoke(main, ["-w", str(root), "refresh", "--force"])
    assert out.exit_code == 1 and "CURRENT is missing" in out.output, out.output
    assert [v["name"] for v in fresh.versions()] == ["v0001", "v0002"]


def test_current_naming_a_version_that_is_gone_is_answered_by_an_intact_one(two_versions, caplog):
    root = two_versions.ws.root
    (root / "CURRENT").write_text(json.dumps({"version": "v0009"}), encoding="utf-8")
    hits = Ragtune(root, progress=False).search("modems", k=3, log=False)
    assert hits.version == "v0002" and "version v0009 cannot be opened" in caplog.text
    out = CliRunner().invoke(main, ["-w", str(root), "index", "--reindex"])
    assert out.exit_code == 1 and "names version v0009, which does not exist" in out.output, out.output


@pytest.mark.parametrize("damage", ["missing docs.sqlite", "junk docs.sqlite", "junk index.faiss"])
def test_a_damaged_current_version_is_answered_by_the_previous_one(two_versions, damage, caplog):
    root = two_versions.ws.root
    what, name = damage.split(" ")
    path = two_versions.ws.version_dir("v0002") / name
    if what == "missing":
        path.unlink()
    else:
        path.write_bytes(b"garbage\n")
    out = CliRunner().invoke(main, ["-w", str(root), "query", "reset the router", "--no-log", "--json"])
    assert out.exit_code == 0 and "Traceback" not in out.output, out.output
    assert json.loads(out.stdout)["version"] == "v0001"
    rt = Ragtune(root, progress=False)
    assert rt.search("reset the router", k=2, log=False).version == "v0001"
    assert "version v0002 cannot be opened" in caplog.text and "ragtune doctor" in caplog.text
    assert any("v0002 cannot be opened" in p for p in rt.status()["problems"])


def test_when_no_version_can_be_opened_the_error_is_one_line_naming_the_fix(workspace):
    (workspace.ws.version_dir("v0001") / "docs.sqlite").write_bytes(b"garbage\n")
    with pytest.raises(WorkspaceError, match=r"version v0001 cannot be opened \(DatabaseError: .*`ragtune doctor`"):
        Ragtune(workspace.ws.root, progress=False).search("reset", k=2, log=False)
    out = CliRunner().invoke(main, ["-w", str(workspace.ws.root), "query", "reset"])
    assert out.exit_code == 1 and "Traceback" not in out.output and "cannot be opened" in out.output, out.output


def test_a_lost_refresh_log_is_not_refilled_with_false_history(two_versions, tmp_path):
    root = two_versions.ws.root
    (root / "refresh-log.jsonl").unlink()
    more = tmp_path / "third.jsonl"
    more.write_text(json.dumps({"id": "t1", "text": "a third document about cables"}) + "\n", encoding="utf-8")
    Ragtune(root, progress=False).index([more])  # a write command replays what a crash left unlogged: nothing here
    log = [json.loads(line) for line in (root / "refresh-log.jsonl").read_text(encoding="utf-8").splitlines()]
    # the newest version's record is logged again (it is current: true); before, v0001 was logged as "never served"
    assert [(e["event"], e["version"]) for e in log] == [("indexed", "v0002"), ("indexed", "v0003")] and not any("abandoned" in e for e in log), log
    out = CliRunner().invoke(main, ["-w", str(root), "rollback", "v0002"])
    assert out.exit_code == 0, out.output


def test_a_version_that_failed_to_open_is_tried_again(two_versions, monkeypatch):
    import ragtune.serving

    path = two_versions.ws.version_dir("v0002") / "docs.sqlite"
    good = path.read_bytes()
    path.write_bytes(b"garbage\n")
    rt = Ragtune(two_versions.ws.root, progress=False)
    assert rt.search("modems", k=2, log=False).version == "v0001"
    path.write_bytes(good)  # repaired while the app runs
    assert rt.search("modems", k=2, log=False).version == "v0001"  # not retried on every search
    monkeypatch.setattr(ragtune.serving, "RETRY_S", 0.0)
    assert rt.search("modems", k=2, log=False).version == "v0002"


def test_index_and_refresh_refuse_to_build_on_a_stand_in(two_versions, tmp_path):
    root = two_versions.ws.root
    (two_versions.ws.version_dir("v0002") / "index.faiss").write_bytes(b"garbage\n")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "o1", "text": "another document"}) + "\n", encoding="utf-8")
    rt = Ragtune(root, progress=False)
    assert rt.search("modems", k=2, log=False).version == "v0001"  # searches go on
    # before: a v0003 built on v0001's documents, x1 silently lost
    with pytest.raises(WorkspaceError, match=r"version v0002 \(CURRENT\) cannot be opened.*then index again"):
        rt.index([other])
    with pytest.raises(WorkspaceError, match=r"version v0002 \(CURRENT\) cannot be opened.*then refresh again"):
        rt.refresh(mode="query", trial=False, force=True)
    assert [v["name"] for v in rt.versions()] == ["v0001", "v0002"]


def test_a_stand_in_follows_a_rollback_at_once_and_prefers_the_damaged_versions_parent(two_versions, tmp_path):
    root = two_versions.ws.root
    third = tmp_path / "third.jsonl"
    third.write_text(json.dumps({"id": "t1", "text": "a third document about cables"}) + "\n", encoding="utf-8")
    two_versions.index([third])
    two_versions.rollback("v0002")  # the operator did not want v0003
    (two_versions.ws.version_dir("v0002") / "docs.sqlite").write_bytes(b"garbage\n")
    rt = Ragtune(root, progress=False)
    assert rt.search("modems", k=2, log=False).version == "v0001"  # v0002's parent, not v0003
    two_versions.rollback("v0003")  # another process moves CURRENT: picked up on the next search, not 30 s later
    assert rt.search("modems", k=2, log=False).version == "v0003"


def test_a_lost_refresh_log_does_not_undo_a_rollback(two_versions, tmp_path):
    import time

    root = two_versions.ws.root
    time.sleep(1.1)  # CURRENT's time and a version's are kept to the second: a rollback in the second v0002 was made is not told apart
    two_versions.rollback("v0001")
    (root / "refresh-log.jsonl").unlink()
    third = tmp_path / "third.jsonl"
    third.write_text(json.dumps({"id": "t1", "text": "a third document about cables"}) + "\n", encoding="utf-8")
    rep = Ragtune(root, progress=False).index([third])  # before: the replay "completed the swap" to v0002 and built on it
    ids = {h.doc_id for h in Ragtune(root, progress=False).search("document", k=20, log=False)}
    assert rep.version == "v0003" and "t1" in ids and "x1" not in ids, sorted(ids)


def test_rollback_says_when_the_document_count_changes(two_versions):
    out = CliRunner().invoke(main, ["-w", str(two_versions.ws.root), "rollback", "v0001"])
    assert out.exit_code == 0 and "current version is now v0001 (8 documents; v0002 had 9)" in out.output, out.output


def test_losing_both_current_and_the_log_stops_index_from_starting_over(two_versions, tmp_path):
    root = two_versions.ws.root
    (root / "CURRENT").unlink()
    (root / "refresh-log.jsonl").unlink()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "o1", "text": "another document"}) + "\n", encoding="utf-8")
    out = CliRunner().invoke(main, ["-w", str(root), "index", str(other)])
    assert out.exit_code == 1 and "CURRENT is missing although versions exist" in out.output, out.output


def test_a_loaded_app_follows_a_rollback_to_a_damaged_version_with_its_parent_not_what_it_had(two_versions, tmp_path):
    third = tmp_path / "third.jsonl"
    third.write_text(json.dumps({"id": "t1", "text": "a third document about cables"}) + "\n", encoding="utf-8")
    two_versions.index([third])
    app = Ragtune(two_versions.ws.root, progress=False)
    assert app.search("modems", k=2, log=False).version == "v0003"  # loaded
    (two_versions.ws.version_dir("v0002") / "docs.sqlite").write_bytes(b"garbage\n")
    Ragtune(two_versions.ws.root, progress=False).rollback("v0002")  # another process; v0003 is what the operator backed out of
    assert app.search("modems", k=2, log=False).version == "v0001"


def test_a_repaired_version_is_built_on_at_once(two_versions):
    path = two_versions.ws.version_dir("v0002") / "docs.sqlite"
    good = path.read_bytes()
    path.write_bytes(b"garbage\n")
    rt = Ragtune(two_versions.ws.root, progress=False)
    assert rt.search("modems", k=2, log=False).version == "v0001"
    path.write_bytes(good)  # repaired in place: CURRENT does not move
    assert rt.refresh(mode="query", trial=False, force=True).status != ""  # not "v0002 cannot be opened" for the next 30 s
