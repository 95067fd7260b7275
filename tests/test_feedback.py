from __future__ import annotations

import json
import logging
import multiprocessing as mp
import sqlite3

import pytest

from ragtune import FeedbackError, InputError
from ragtune.errors import FeedbackLogError
from ragtune.feedback import FeedbackLog, Impression


def _writer(path: str, n: int, tag: int) -> None:
    log = FeedbackLog(path)
    for i in range(n):
        qid = log.log_query(f"q{tag}-{i}", [Impression("d1", 1, 0.5), Impression("d2", 2, 0.4)])
        log.click(qid, "d1")
    log.close()


def test_multiprocess_writes_lose_nothing(tmp_path):
    path = str(tmp_path / "fb.sqlite")
    FeedbackLog(path).stats()  # create schema
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 150, t)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = FeedbackLog(path).stats()
    assert s == {"queries": 600, "impressions": 1200, "clicks": 600, "ratings": 0, "queries_with_positive": 600}


def test_click_and_rate_validate(workspace):
    hits = workspace.search("reset", k=3)
    workspace.click(hits.query_id, hits[0].doc_id, dwell=3.5)
    workspace.rate(hits.query_id, hits[1].doc_id, -1)
    with pytest.raises(FeedbackError, match="unknown query id 'nope'"):
        workspace.click("nope", hits[0].doc_id)
    with pytest.raises(FeedbackError, match="unknown doc id 'zzz'"):
        workspace.click(hits.query_id, "zzz")
    with pytest.raises(FeedbackError, match="must be \\+1 or -1"):
        workspace.rate(hits.query_id, hits[0].doc_id, 5)
    s = workspace.feedback.stats()
    assert (s["queries"], s["impressions"], s["clicks"], s["ratings"], s["queries_with_positive"]) == (1, 3, 1, 1, 1)


def test_late_feedback_on_a_shown_document_that_left_the_index_is_kept(workspace, docs_jsonl):
    """Feedback may come late: a document the search showed stays clickable after a re-index removed it."""
    hits = workspace.search("reset", k=3)
    gone = hits[0].doc_id
    rows = [json.loads(line) for line in docs_jsonl.read_text().splitlines()]
    docs_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] != gone))
    workspace.index([docs_jsonl])
    assert gone not in workspace.serving().docs.ids
    assert workspace.click(hits.query_id, gone) and workspace.rate(hits.query_id, gone, 1)
    with pytest.raises(FeedbackError, match=f"unknown doc id '{gone}': it is not in the current index .* and was not shown for query"):
        workspace.click(workspace.search("wifi", k=1).query_id, gone)
    assert workspace.feedback.stats()["clicks"] == 1


def test_export_import_round_trip(workspace, tmp_path):
    hits = workspace.search("firmware update", k=3)
    workspace.click(hits.query_id, hits[1].doc_id)
    events = list(workspace.feedback.export_events())
    assert events[0]["type"] == "query" and events[0]["impressions"][1]["rank"] == 2
    other = tmp_path / "other.sqlite"
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    log = FeedbackLog(other)
    counts = log.import_file(path, doc_exists=lambda ids: set(ids), text_to_id=lambda t: None)
    assert (counts.queries, counts.clicks, counts.ratings, counts.present) == (1, 1, 0, 0)
    assert log.stats()["clicks"] == 1
    # importing the same file again adds nothing, and says so
    again = log.import_file(path, doc_exists=lambda ids: set(ids), text_to_id=lambda t: None)
    assert (again.new, again.present_queries, again.present_clicks) == (0, 1, 1)
    assert "0 new" in again.summary() and "2 already present" in again.summary()
    assert log.stats()["queries"] == 1 and log.stats()["clicks"] == 1


def test_an_export_imports_into_a_workspace_whose_index_lost_a_clicked_doc(workspace, docs_jsonl, tmp_path):
    """Import follows live feedback's rule: a doc the search showed keeps its feedback after it left the index."""
    from ragtune import Ragtune

    hits = workspace.search("reset", k=3)
    gone = hits[0].doc_id
    workspace.click(hits.query_id, gone)
    workspace.rate(hits.query_id, hits[1].doc_id, 1)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in workspace.feedback.export_events()))
    rows = [json.loads(line) for line in docs_jsonl.read_text().splitlines()]
    docs_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] != gone))
    fresh = Ragtune.init(tmp_path / "fresh", workspace.config, progress=False)
    fresh.index([docs_jsonl])
    report = fresh.import_feedback(path)
    assert (report.queries, report.clicks, report.ratings) == (1, 1, 1)
    # a click on a doc neither in the index nor shown by its search is still refused, naming the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "click", "query_id": hits.query_id, "doc_id": "d-never"}) + "\n")
    with pytest.raises(InputError, match=f"bad.jsonl:1: unknown doc id 'd-never' .*not shown by search '{hits.query_id}'"):
        fresh.import_feedback(bad)
    # feedback for another corpus: no doc id of the file is in the index
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"type": "query", "query_id": "x1", "text": "t", "impressions": [{"doc_id": "o1", "rank": 1}]}) + "\n"
                     + json.dumps({"type": "click", "query_id": "x1", "doc_id": "o1"}) + "\n")  # fmt: skip
    with pytest.raises(InputError, match="none of its 1 doc ids is in the current index"):
        fresh.import_feedback(other)
    assert fresh.feedback.stats()["queries"] == 1
    # the workspace that logged the search, its doc removed since: a clicks-only file on it is this workspace's feedback
    workspace.index([docs_jsonl])
    late = tmp_path / "late.jsonl"
    late.write_text(json.dumps({"type": "click", "query_id": hits.query_id, "doc_id": gone, "ts": 1e9}) + "\n")
    assert workspace.import_feedback(late).clicks == 1


def test_export_import_keeps_randomisation(tmp_path):
    log = FeedbackLog(tmp_path / "a.sqlite")
    q = log.log_query("swap", [Impression("d3", 1, 0.2, orig_rank=3), Impression("d2", 2, 0.4), Impression("d1", 3, 0.5, orig_rank=1)], randomized=True)
    log.click(q, "d3")
    log.log_query("plain", [Impression("d1", 1, 0.5)])
    events = list(log.export_events())
    assert events[0]["randomized"] is True and "randomized" not in events[1]
    assert [im.get("orig_rank") for im in events[0]["impressions"]] == [3, None, 1]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    other = FeedbackLog(tmp_path / "b.sqlite")
    other.import_file(path, doc_exists=lambda ids: set(ids), text_to_id=lambda t: None)
    back = {r.text: r for r in other.records()}
    assert back["swap"].randomized and not back["plain"].randomized
    assert [(im.doc_id, im.rank, im.orig_rank) for im in back["swap"].impressions] == [("d3", 1, 3), ("d2", 2, 2), ("d1", 3, 1)]
    for line, needle in (
        ('{"type": "query", "query_id": "x", "text": "t", "impressions": [], "randomized": "yes"}', "'randomized' must be true or false"),
        ('{"type": "query", "query_id": "x", "text": "t", "impressions": [{"doc_id": "d1", "rank": true}]}', "impressions\\[0\\]: 'rank' must be an integer >= 1, got True"),
        ('{"type": "query", "query_id": "x", "text": "t", "impressions": [{"doc_id": "d1", "rank": 1, "orig_rank": 0}]}', "'orig_rank' must be an integer >= 1"),
        (json.dumps({"type": "query", "query_id": events[0]["query_id"], "text": "another text", "impressions": []}), "already in the log with another text"),
    ):
        path.write_text(line + "\n")
        with pytest.raises(InputError, match=needle):
            other.import_file(path, doc_exists=lambda ids: set(ids), text_to_id=lambda t: None)


def _count(rt):
    s = rt.feedback.stats()
    return s["queries"], s["clicks"], s["ratings"]


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (['{"query": "reset", "positive_id": "d1"}', "{broken"], ":2: malformed JSON"),
        (['{"query": "reset", "positive_id": "d1"}', '{"query": "x", "positive_id": "nope"}'], ":2: unknown doc id 'nope'"),
        (['{"type": "click", "query_id": "ghost", "doc_id": "d1"}'], ":1: unknown query id 'ghost'"),
        (['{"query": "reset", "positive": "text that is in no document"}'], ":1: the positive text matches no document"),
        (['{"type": "rating", "query_id": "q", "doc_id": "d1", "value": 3}'], ":1: a rating's 'value' must be 1 or -1, got 3"),
    ],
)
def test_import_is_all_or_nothing(workspace, tmp_path, lines, needle):
    path = tmp_path / "fb.jsonl"
    path.write_text("\n".join(lines) + "\n")
    before = _count(workspace)
    with pytest.raises(InputError) as exc:
        workspace.import_feedback(path)
    assert str(path) in str(exc.value) and needle in str(exc.value)
    assert _count(workspace) == before


def test_import_triplets_by_text_and_id(workspace, tmp_path):
    from tests.conftest import DOCS

    path = tmp_path / "triplets.jsonl"
    rows = [
        {"query": "how to factory reset", "positive": DOCS[0]["text"], "negative": DOCS[1]["text"]},
        {"query": "wifi password", "positive_id": "d2", "negative_id": "d3"},
        {"query": "guest wifi", "positive_id": "d6"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = workspace.import_feedback(path)
    assert (counts.queries, counts.clicks, counts.ratings) == (3, 0, 5)
    again = workspace.import_feedback(path)  # the same triplets again: recognised by their content
    assert (again.new, again.present_queries, again.present_ratings) == (0, 3, 5)
    assert workspace.feedback.stats()["queries"] == 3
    mined = workspace.mine()
    pairs = {(ex.query, ex.positive_id) for ex in mined.train} | {(h.query, d) for h in mined.heldout for d in h.positive_ids}
    assert ("how to factory reset", "d1") in pairs and ("wifi password", "d2") in pairs


def test_threads_get_their_own_connections_and_ended_ones_are_closed(tmp_path):
    import threading

    log = FeedbackLog(tmp_path / "fb.sqlite")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                qid = log.log_query(f"q{i}-{j}", [Impression("d1", 1), Impression("d2", 2)])
                log.click(qid, "d2")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert log.stats()["queries"] == 80 and log.stats()["clicks"] == 80
    # the four worker threads have ended: opening this thread's connection closed theirs
    assert len(log._conns) == 1
    log.close()
    assert log._conns == [] and log.stats()["impressions"] == 160  # reconnects on use


def test_import_dedupes_events_without_ts_and_keeps_repeated_triplets(workspace, tmp_path):
    hits = workspace.search("reset", k=3)
    path = tmp_path / "clicks.jsonl"
    path.write_text(json.dumps({"type": "click", "query_id": hits.query_id, "doc_id": hits[0].doc_id, "dwell": 2}) + "\n")
    assert workspace.import_feedback(path).clicks == 1
    assert workspace.import_feedback(path).present_clicks == 1  # dated at its query's time: recognised again
    twice = tmp_path / "twice.jsonl"
    twice.write_text(2 * (json.dumps({"query": "wifi", "positive_id": "d2"}) + "\n"))
    assert workspace.import_feedback(twice).queries == 2  # the same triplet twice in a file counts twice
    assert workspace.import_feedback(twice).new == 0
    assert workspace.feedback.stats()["clicks"] == 1


def test_check_reports_health_without_raising(tmp_path):
    log = FeedbackLog(tmp_path / "fb.sqlite")
    assert log.check().state == "absent" and log.check().ok
    log.log_query("q", [Impression("d1", 1)])
    good = log.check()
    assert good.ok and good.state == "ok" and good.integrity == "ok" and good.counts is not None and good.counts["queries"] == 1
    log.close()
    (tmp_path / "fb.sqlite").write_bytes(b"not a database at all" * 100)
    bad = FeedbackLog(tmp_path / "fb.sqlite")
    health = bad.check()
    assert not health.ok and health.state == "corrupt" and "doctor --repair" in health.fix and health.to_dict()["path"].endswith("fb.sqlite")
    with pytest.raises(FeedbackError, match=r"cannot record the click: .*fb.sqlite is not a SQLite database"):
        bad.click("q", "d1")


@pytest.mark.parametrize(
    ("error", "kind", "needle"),
    [
        (sqlite3.OperationalError("database or disk is full"), "disk_full", "is full"),
        (sqlite3.OperationalError("database is locked"), "locked", "stayed locked by another writer for more than 60s"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "unwritable", "cannot be written"),
        (sqlite3.OperationalError("disk I/O error"), "io_error", "disk I/O error"),
        (PermissionError(13, "Permission denied"), "unwritable", "cannot be written"),
    ],
)
def test_write_failures_name_the_file_and_never_fail_search(workspace, monkeypatch, caplog, error, kind, needle):
    def broken(*args, **kwargs):
        raise error

    log = workspace.feedback
    monkeypatch.setattr(log, "_connect", broken)
    with pytest.raises(FeedbackLogError) as exc:
        log.log_query("q", [Impression("d1", 1)])
    assert exc.value.kind == kind and needle in str(exc.value) and str(log.path) in str(exc.value)
    assert log.write_error is exc.value
    with caplog.at_level(logging.WARNING, logger="ragtune.serving"):
        results = [workspace.search(f"reset {i}", k=2) for i in range(3)]
    assert all(len(r) == 2 and r.query_id is None for r in results)
    assert len([r for r in caplog.records if "not logged" in r.getMessage()]) == 1


def test_a_doc_id_whose_accents_are_composed_differently_is_the_same_id(tmp_path, tiny_config):
    import unicodedata

    from ragtune import Ragtune

    composed = unicodedata.normalize("NFC", "kette ölen.md#0")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": composed, "text": "Oil the chain after rain."}) + "\n" + json.dumps({"id": "b", "text": "Tyres."}) + "\n", encoding="utf-8")
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    rt.index([docs])
    qid = rt.search("chain oil", k=2).query_id
    assert rt.click(qid, unicodedata.normalize("NFD", composed))  # as a browser or a Mac file system may send it
    assert next(c for c in rt.feedback.export_events() if c["type"] == "click")["doc_id"] == composed
