"""Feedback ids in the library: Ragtune.click/rate and FeedbackLog, an old log gaining the column, export/import round trips."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ragtune import FeedbackConflictError, FeedbackError, InputError, Ragtune, UnknownIdError
from ragtune.feedback import FeedbackLog, Impression


def test_click_and_rate_with_a_feedback_id_are_recorded_once(workspace: Ragtune):
    hits = workspace.search("reset the router", k=3)
    assert workspace.click(hits.query_id, hits[0].doc_id, dwell=2.0, feedback_id="a") is True
    assert workspace.click(hits.query_id, hits[0].doc_id, dwell=2.0, feedback_id="a") is False
    assert workspace.rate(hits.query_id, hits[1].doc_id, -1, feedback_id="b") is True
    assert workspace.rate(hits.query_id, hits[1].doc_id, -1, feedback_id="b") is False
    assert workspace.click(hits.query_id, hits[0].doc_id) is True  # no id: every click counts
    assert workspace.click(hits.query_id, hits[0].doc_id) is True
    stats = workspace.feedback.stats()
    assert (stats["clicks"], stats["ratings"]) == (3, 1)
    with pytest.raises(FeedbackConflictError, match="feedback id 'a' is already recorded as a click"):
        workspace.click(hits.query_id, hits[0].doc_id, dwell=3.0, feedback_id="a")
    with pytest.raises(FeedbackConflictError, match="'b'"):
        workspace.click(hits.query_id, hits[1].doc_id, feedback_id="b")  # the id of a rating
    with pytest.raises(FeedbackError, match="feedback_id must be a non-empty string"):
        workspace.click(hits.query_id, hits[0].doc_id, feedback_id="")
    with pytest.raises(FeedbackError, match="feedback_id must be at most 200 characters"):  # as over HTTP
        workspace.rate(hits.query_id, hits[0].doc_id, 1, feedback_id="x" * 201)
    assert workspace.click(hits.query_id, hits[0].doc_id, feedback_id="y" * 200) is True
    assert workspace.feedback.stats()["clicks"] == 4


def test_unknown_ids_raise_unknown_id_error_a_feedback_error_too(workspace: Ragtune):
    hits = workspace.search("reset", k=2)
    with pytest.raises(UnknownIdError, match="unknown query id 'nope'"):
        workspace.click("nope", "d1", feedback_id="x")
    with pytest.raises(FeedbackError, match="unknown doc id 'd404'"):
        workspace.rate(hits.query_id, "d404", 1)
    with pytest.raises(UnknownIdError, match="unknown query id 'nope'"):  # both unknown: the query is named, not "not shown for query nope"
        workspace.click("nope", "d404")
    assert isinstance(UnknownIdError("x"), LookupError)
    assert workspace.feedback.stats()["clicks"] == 0


def test_a_retry_after_the_doc_left_the_index_is_a_duplicate_not_an_unknown_doc(workspace: Ragtune, docs_jsonl: Path):
    hits = workspace.search("reset the router", k=3)
    doc = hits[0].doc_id
    assert workspace.click(hits.query_id, doc, dwell=1.5, feedback_id="c1") is True
    assert workspace.rate(hits.query_id, doc, 1, feedback_id="r1") is True
    kept = [line for line in docs_jsonl.read_text(encoding="utf-8").splitlines() if json.loads(line)["id"] != doc]
    docs_jsonl.write_text("\n".join(kept) + "\n", encoding="utf-8")
    workspace.index([docs_jsonl])  # the doc leaves the index
    assert workspace.click(hits.query_id, doc, dwell=1.5, feedback_id="c1") is False
    assert workspace.rate(hits.query_id, doc, 1, feedback_id="r1") is False
    assert workspace.click(hits.query_id, doc, feedback_id="c2") is True  # new late feedback on a shown doc is kept
    with pytest.raises(FeedbackConflictError):
        workspace.rate(hits.query_id, doc, -1, feedback_id="r1")  # not the same content: no duplicate
    with pytest.raises(UnknownIdError, match=f"unknown doc id {doc!r}"):
        workspace.click(workspace.search("wifi", k=1).query_id, doc)  # never shown there, and gone: unknown
    assert workspace.feedback.feedback_by_id("c1") == ("click", hits.query_id, doc, 1.5)
    assert workspace.feedback.feedback_by_id("nope") is None
    stats = workspace.feedback.stats()
    assert (stats["clicks"], stats["ratings"]) == (2, 1)


def test_a_log_written_before_feedback_ids_gains_the_column(tmp_path: Path):
    path = tmp_path / "feedback.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE queries (qid TEXT PRIMARY KEY, text TEXT NOT NULL, ts REAL NOT NULL, version TEXT, randomized INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT 'search');"
        "CREATE TABLE clicks (id INTEGER PRIMARY KEY AUTOINCREMENT, qid TEXT NOT NULL, doc_id TEXT NOT NULL, ts REAL NOT NULL, dwell REAL);"
        "CREATE TABLE ratings (id INTEGER PRIMARY KEY AUTOINCREMENT, qid TEXT NOT NULL, doc_id TEXT NOT NULL, value INTEGER NOT NULL, ts REAL NOT NULL);"
        "INSERT INTO queries VALUES ('q1', 'reset', 1.0, 'v0001', 0, 'search');"
        "INSERT INTO clicks(qid, doc_id, ts, dwell) VALUES ('q1', 'd1', 2.0, NULL);"
    )
    old.commit()
    old.close()
    log = FeedbackLog(path)
    assert log.click("q1", "d1", feedback_id="f") is True and log.click("q1", "d1", feedback_id="f") is False
    assert log.stats()["clicks"] == 2


def test_export_and_import_keep_feedback_ids(tmp_path: Path, workspace: Ragtune, tiny_config, docs_jsonl: Path):
    hits = workspace.search("reset the router", k=3)
    workspace.click(hits.query_id, hits[0].doc_id, dwell=1.5, feedback_id="c1")
    workspace.rate(hits.query_id, hits[1].doc_id, 1, feedback_id="r1")
    workspace.click(hits.query_id, hits[2].doc_id)
    events = list(workspace.feedback.export_events())
    assert [e.get("feedback_id") for e in events if e["type"] != "query"] == ["c1", None, "r1"]
    dump = tmp_path / "events.jsonl"
    dump.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")

    other = Ragtune.init(tmp_path / "other", tiny_config, progress=False)
    other.index([docs_jsonl])
    first = other.import_feedback(dump)
    assert (first.queries, first.clicks, first.ratings) == (1, 2, 1)
    assert [e.get("feedback_id") for e in other.feedback.export_events() if e["type"] != "query"] == ["c1", None, "r1"]
    again = other.import_feedback(dump)
    assert again.new == 0 and again.present == 4
    assert other.click(hits.query_id, hits[0].doc_id, dwell=1.5, feedback_id="c1") is False  # an imported id is known

    # the same feedback id at another time and with the same content: already present; with other content: refused
    click = next(e for e in events if e.get("feedback_id") == "c1")
    moved = tmp_path / "moved.jsonl"
    moved.write_text(json.dumps({**click, "ts": click["ts"] + 60}) + "\n", encoding="utf-8")
    assert other.import_feedback(moved).present_clicks == 1
    moved.write_text(json.dumps({**click, "dwell": 9.0}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="feedback id 'c1' is already recorded"):
        other.import_feedback(moved)
    assert other.feedback.stats()["clicks"] == 2


def test_importing_an_id_for_an_event_logged_without_one_stores_the_id(tmp_path: Path, workspace: Ragtune):
    hits = workspace.search("reset the router", k=3)
    workspace.click(hits.query_id, hits[0].doc_id, dwell=2.0)  # logged without an id
    workspace.rate(hits.query_id, hits[1].doc_id, -1)
    workspace.click(hits.query_id, hits[2].doc_id, dwell=4.0)
    events = [e for e in workspace.feedback.export_events() if e["type"] != "query"]
    assert [(e["type"], e["doc_id"], e.get("feedback_id")) for e in events] == [
        ("click", hits[0].doc_id, None), ("click", hits[2].doc_id, None), ("rating", hits[1].doc_id, None),
    ]  # fmt: skip
    # the same events, now carrying the ids the front end gave them (the second click with another dwell: another event)
    with_ids = [{**e, "feedback_id": fid} for e, fid in zip(events, ["c-a", "c-c", "r-b"])]
    with_ids[1]["dwell"] = 5.0
    dump = tmp_path / "ids.jsonl"
    dump.write_text("".join(json.dumps(e) + "\n" for e in with_ids), encoding="utf-8")
    report = workspace.import_feedback(dump)
    assert report.new == 0 and (report.present_clicks, report.present_ratings) == (2, 1)
    assert [e.get("feedback_id") for e in workspace.feedback.export_events() if e["type"] != "query"] == ["c-a", None, "r-b"]
    assert workspace.feedback.feedback_by_id("c-a") == ("click", hits.query_id, hits[0].doc_id, 2.0)
    assert workspace.feedback.feedback_by_id("c-c") is None  # its dwell differs from the row's: not the same event
    # the id now dedups a retry, live and on a second import
    assert workspace.click(hits.query_id, hits[0].doc_id, dwell=2.0, feedback_id="c-a") is False
    assert workspace.rate(hits.query_id, hits[1].doc_id, -1, feedback_id="r-b") is False
    assert workspace.import_feedback(dump).new == 0
    stats = workspace.feedback.stats()
    assert (stats["clicks"], stats["ratings"]) == (2, 1)


def test_the_log_alone(tmp_path: Path):
    log = FeedbackLog(tmp_path / "f.sqlite")
    qid = log.log_query("q", [Impression("d1", 1)])
    assert log.rate(qid, "d1", 1, feedback_id="x") is True
    assert log.rate(qid, "d1", 1, feedback_id="x") is False
    with pytest.raises(FeedbackConflictError):
        log.rate(qid, "d1", -1, feedback_id="x")
    with pytest.raises(UnknownIdError):
        log.rate("missing", "d1", 1, feedback_id="y")
    assert log.stats()["ratings"] == 1
