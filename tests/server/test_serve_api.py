"""The HTTP API against a real uvicorn server on loopback: search, feedback (idempotency, late, unknown ids, bad bodies), reads."""

from __future__ import annotations

import pytest

from ragtune import Ragtune
from tests.conftest import play
from tests.server.live import Client, running


def _search(c: Client, query: str = "how do I reset the router", k: int = 3) -> dict:
    r = c.post("/search", {"query": query, "k": k})
    assert r.status == 200, r.body
    return r.json()


def test_search_returns_hits_and_a_logged_query_id(service: Client, workspace: Ragtune):
    out = _search(service, k=4)
    assert out["version"] == "v0001" and out["trial"] is None
    assert [h["rank"] for h in out["hits"]] == [1, 2, 3, 4]
    direct = workspace.search("how do I reset the router", k=4, log=False)
    assert [h["doc_id"] for h in out["hits"]] == [h.doc_id for h in direct]
    assert out["hits"][0]["text"] == direct[0].text and out["hits"][0]["title"] == direct[0].title
    (rec,) = [r for r in workspace.feedback.records() if r.qid == out["query_id"]]
    assert rec.text == "how do I reset the router" and [i.doc_id for i in rec.impressions] == [h["doc_id"] for h in out["hits"]]


def test_click_and_rating_are_logged(service: Client, workspace: Ragtune):
    out = _search(service)
    qid, doc = out["query_id"], out["hits"][1]["doc_id"]
    r = service.post("/feedback", {"query_id": qid, "doc_id": doc, "type": "click", "dwell": 12.5})
    assert r.status == 200 and r.json() == {"status": "recorded", "recorded": True, "type": "click", "query_id": qid, "doc_id": doc, "feedback_id": None}
    r = service.post("/feedback", {"query_id": qid, "doc_id": doc, "type": "rating", "value": -1})
    assert r.status == 200 and r.json()["recorded"] is True
    (rec,) = [x for x in workspace.feedback.records() if x.qid == qid]
    assert rec.clicks == [(doc, 12.5)] and rec.ratings == [(doc, -1)]


def test_feedback_is_idempotent_by_feedback_id(service: Client, workspace: Ragtune):
    out = _search(service)
    qid, doc = out["query_id"], out["hits"][0]["doc_id"]
    body = {"query_id": qid, "doc_id": doc, "type": "click", "dwell": 3.0, "feedback_id": "evt-1"}
    first = service.post("/feedback", body)
    again = service.post("/feedback", body)
    assert first.json()["status"] == "recorded" and again.status == 200 and again.json()["status"] == "duplicate"
    assert again.json()["recorded"] is False
    rating = {"query_id": qid, "doc_id": doc, "type": "rating", "value": 1, "feedback_id": "evt-2"}
    assert service.post("/feedback", rating).json()["status"] == "recorded"
    assert service.post("/feedback", rating).json()["status"] == "duplicate"
    assert workspace.feedback.stats()["clicks"] == 1 and workspace.feedback.stats()["ratings"] == 1
    # the same id with other content is a conflict, and nothing is written
    for other in ({**body, "dwell": 4.0}, {**body, "doc_id": out["hits"][1]["doc_id"]}, {**rating, "feedback_id": "evt-1"}):
        r = service.post("/feedback", other)
        assert r.status == 409 and r.json()["error"] == "FeedbackConflictError" and "evt-1" in r.json()["detail"]
    assert workspace.feedback.stats()["clicks"] == 1 and workspace.feedback.stats()["ratings"] == 1


def test_unknown_ids_are_404_with_the_library_message(service: Client):
    out = _search(service)
    r = service.post("/feedback", {"query_id": "no-such-query", "doc_id": "d1", "type": "click"})
    assert r.status == 404 and r.json()["error"] == "UnknownIdError" and "unknown query id 'no-such-query'" in r.json()["detail"]
    r = service.post("/feedback", {"query_id": out["query_id"], "doc_id": "d99", "type": "rating", "value": 1})
    assert r.status == 404 and "unknown doc id 'd99'" in r.json()["detail"] and "not in the current index" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/search", {"k": 3}),  # no query
        ("/search", {"query": "", "k": 3}),
        ("/search", {"query": "   ", "k": 3}),  # the library refuses a blank query
        ("/search", {"query": "reset", "k": 0}),
        ("/search", {"query": "reset", "k": "3"}),
        ("/search", {"query": "reset", "k": True}),
        ("/search", {"query": "reset", "kk": 3}),  # a misspelt field
        ("/feedback", {"query_id": "q", "doc_id": "d1"}),  # no type
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "like"}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating"}),  # a rating without value
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating", "value": 2}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "click", "value": 1}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "click", "dwell": -1}),
        ("/feedback", {"query_id": "", "doc_id": "d1", "type": "click"}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "click", "feedback_id": ""}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating", "value": True}),  # a rating is the integer 1 or -1
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating", "value": 1.0}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating", "value": -1.0}),
        ("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating", "value": "1"}),
        ("/search", {"query": "r" * 4097}),  # too long
        ("/feedback", {"query_id": "q" * 513, "doc_id": "d1", "type": "click"}),
        ("/feedback", {"query_id": "q", "doc_id": "d" * 513, "type": "click"}),
    ],
)
def test_bad_bodies_are_422(service: Client, path: str, body: dict):
    r = service.post(path, body)
    assert r.status == 422, r.body
    assert r.json()["detail"]  # says what is wrong: pydantic's field errors, or the library's message
    assert r.json()["error"] in ("ValidationError", "InputError")  # the documented {"detail", "error"}


def test_a_validation_error_keeps_fastapis_field_errors(service: Client):
    r = service.post("/feedback", {"query_id": "q", "doc_id": "d1", "type": "rating", "value": True})
    assert r.status == 422 and r.json()["error"] == "ValidationError"
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "value"] and err["input"] is True
    assert "integer 1 or -1" in err["msg"]
    assert service.post("/search", {"query": "r" * 4096, "k": 1}).status == 200  # the longest query taken
    r = service.post("/search", {"query": "r" * 4097})
    assert r.json()["detail"][0]["loc"] == ["body", "query"] and r.json()["detail"][0]["type"] == "string_too_long"


def test_malformed_json_is_422_not_500(service: Client):
    r = service.post("/feedback", raw=b"{not json")
    assert r.status == 422
    r = service.post("/search", raw=b"[1, 2]")
    assert r.status == 422


def test_inputs_strict_json_cannot_echo_are_still_422(service: Client):
    """Field errors echo the input: a NaN, an infinity or a lone surrogate there must not make the 422 a 500."""
    qid = _search(service)["query_id"]
    for raw in (b'{"query_id": "%s", "doc_id": "d1", "type": "click", "dwell": NaN}' % qid.encode(), b'{"query_id": "q", "doc_id": "d1", "type": "click", "dwell": 1e400}'):
        r = service.post("/feedback", raw=raw)
        assert r.status == 422 and r.json()["detail"][0]["input"] in ("nan", "inf"), r.body
    r = service.post("/search", raw=b'{"query": "\\ud800 wifi"}')
    assert r.status == 422 and r.json()["detail"][0]["input"] == "\\ud800 wifi", r.body


def test_late_feedback_after_the_version_changed_is_accepted(service: Client, workspace: Ragtune, docs_jsonl):
    out = _search(service)
    qid, doc = out["query_id"], out["hits"][0]["doc_id"]
    text = docs_jsonl.read_text(encoding="utf-8").replace("ten seconds", "twelve seconds")
    docs_jsonl.write_text(text, encoding="utf-8")
    assert workspace.index([docs_jsonl]).version == "v0002"
    assert _search(service)["version"] == "v0002"
    r = service.post("/feedback", {"query_id": qid, "doc_id": doc, "type": "click", "feedback_id": "late"})
    assert r.status == 200 and r.json()["recorded"] is True
    (rec,) = [x for x in workspace.feedback.records() if x.qid == qid]
    assert rec.version == "v0001" and rec.clicks == [(doc, None)]


def test_status_versions_trial_and_health(service: Client, workspace: Ragtune):
    assert service.get("/health").json() == {"ok": True}
    _search(service)
    st = service.get("/status").json()
    assert st["current_version"] == "v0001" and st["n_docs"] == 8 and st["feedback"]["queries"] == 1
    assert st["feedback_health"]["ok"] is True and st["trial"] is None
    versions = service.get("/versions").json()
    assert [(v["name"], v["current"], v["kind"]) for v in versions] == [("v0001", True, "index")]
    assert service.get("/trial").json() == {"live": False, "trial": None}


def test_searches_are_interleaved_while_a_trial_is_live(workspace: Ragtune):
    workspace.config = workspace.config.with_overrides({"trial.share": 1.0})
    workspace.config.save(workspace.ws.config_path)
    play(workspace)
    rep = workspace.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    with running(workspace) as port:
        c = Client(port)
        out = _search(c, "please help me with my router problem number 3", k=5)
        trial = c.get("/trial").json()
        assert trial["live"] is True and out["trial"] == trial["trial"]["id"]
        (rec,) = [r for r in workspace.feedback.records() if r.qid == out["query_id"]]
        assert rec.trial == out["trial"] and {i.team for i in rec.impressions} <= {"serving", "trial", "shared"}
        r = c.post("/feedback", {"query_id": out["query_id"], "doc_id": out["hits"][0]["doc_id"], "type": "click"})
        assert r.status == 200
        c.close()


def test_search_before_anything_is_indexed_is_409_with_the_fix(tmp_path, tiny_config):
    rt = Ragtune.init(tmp_path / "empty", tiny_config, progress=False)
    with running(rt) as port:
        c = Client(port)
        r = c.post("/search", {"query": "reset", "k": 3})
        assert r.status == 409 and "has no index yet" in r.json()["detail"]
        assert c.get("/status").json()["current_version"] is None
        c.close()
