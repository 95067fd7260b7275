from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from ragtune import FeedbackError, InputError
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
    assert counts == {"queries": 1, "clicks": 1, "ratings": 0}
    assert log.stats()["clicks"] == 1


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
        ('{"type": "query", "query_id": "x", "text": "t", "impressions": [{"doc_id": "d1", "rank": true}]}', "an integer 'rank' >= 1"),
        ('{"type": "query", "query_id": "x", "text": "t", "impressions": [{"doc_id": "d1", "rank": 1, "orig_rank": 0}]}', "'orig_rank' must be an integer >= 1"),
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
        (['{"type": "rating", "query_id": "q", "doc_id": "d1", "value": 3}'], ":1: unknown query id"),
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
    assert counts == {"queries": 3, "clicks": 0, "ratings": 5}
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
