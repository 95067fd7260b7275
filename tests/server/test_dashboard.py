"""The dashboard's data layer: the feedback log's per-day and per-rank figures, and DashboardData over a real workspace."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

from ragtune import Ragtune
from ragtune.feedback import FeedbackLog, Impression
from ragtune.server.dashboard import STATIC_DIR, DashboardData, build_dashboard
from tests.conftest import play, play_trial

DAY = 86400.0


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d")


def test_daily_counts_group_queries_clicks_and_ratings_by_utc_day(tmp_path: Path):
    log = FeedbackLog(tmp_path / "feedback.sqlite")
    assert log.daily_counts() == []
    now = time.time()
    old = log.log_query("reset", [Impression("d1", 1), Impression("d2", 2)], ts=now - 3 * DAY)
    log.click(old, "d2", ts=now - 3 * DAY + 5)
    log.rate(old, "d1", -1, ts=now - 1 * DAY)  # rated two days after the search: counted on its own day
    new = log.log_query("wifi", [Impression("d2", 1)], ts=now)
    log.click(new, "d2", ts=now)
    log.click(new, "d2", ts=now)
    days = log.daily_counts()
    assert [d.day for d in days] == [_day(now - 3 * DAY), _day(now - DAY), _day(now)]  # the empty day between is left out
    assert [(d.queries, d.clicks, d.ratings) for d in days] == [(1, 1, 0), (0, 0, 1), (1, 2, 0)]
    assert days[0].to_dict() == {"day": _day(now - 3 * DAY), "queries": 1, "clicks": 1, "ratings": 0}
    recent = log.daily_counts(since=now - 2 * DAY)
    assert [(d.day, d.queries, d.clicks, d.ratings) for d in recent] == [(_day(now - DAY), 0, 0, 1), (_day(now), 1, 2, 0)]


def test_clicks_by_rank_counts_each_shown_result_once(tmp_path: Path):
    log = FeedbackLog(tmp_path / "feedback.sqlite")
    assert [(r.rank, r.shown, r.clicked) for r in log.clicks_by_rank(3)] == [(1, 0, 0), (2, 0, 0), (3, 0, 0)]
    for i in range(4):
        qid = log.log_query(f"q{i}", [Impression("a", 1), Impression("b", 2), Impression("c", 3), Impression("d", 4)])
        if i < 3:
            log.click(qid, "a")
        if i == 0:
            log.click(qid, "b")
            log.click(qid, "b")  # a second click on the same result: still one clicked result
        if i == 1:
            log.click(qid, "z")  # a click on something not shown has no rank
    ranks = log.clicks_by_rank(3)
    assert [(r.rank, r.shown, r.clicked) for r in ranks] == [(1, 4, 3), (2, 4, 1), (3, 4, 0)]
    assert ranks[0].rate == 0.75 and ranks[2].rate == 0.0
    assert ranks[1].to_dict() == {"rank": 2, "shown": 4, "clicked": 1, "rate": 0.25}
    assert len(log.clicks_by_rank(10)) == 10 and log.clicks_by_rank(10)[3].shown == 4


def test_a_workspace_with_nothing_indexed(tmp_path: Path, tiny_config):
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    data = build_dashboard(rt)
    assert data.versions == [] and data.daily == [] and data.ranks == [] and data.trial is None and data.decisions == []
    assert data.overview.current_version is None and data.overview.feedback_ok
    assert not rt.ws.feedback_path.exists()  # reading the dashboard creates no feedback log
    json.dumps(data.to_dict())


def test_versions_trial_and_decisions_of_a_real_workspace(workspace):
    rt: Ragtune = workspace
    rt.config = rt.config.with_overrides({"trial.share": 1.0})
    play(rt)
    rep = rt.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    played = play_trial(rt, 12, "trial", text="router trial question {}")

    data = build_dashboard(rt, days=7, max_rank=5)
    assert isinstance(data, DashboardData)
    assert [v.name for v in data.versions] == ["v0001", "v0002"]
    base, cand = data.versions
    assert base.current and base.event == "indexed" and base.kind == "index" and base.check is None and base.trial is None
    assert not cand.current and cand.trial_live and cand.never_served and cand.event == "trial_started" and cand.kind == "query"
    assert cand.check is not None and cand.check.worth_trial and cand.check.n >= 1
    assert cand.check.score == rep.check.score and cand.check.current == rep.check.current and cand.check.metric == rep.check.metric
    assert cand.trial is not None and cand.trial.state == "live" and cand.trial.wins is None  # live figures are in data.trial

    live = rt.trial()
    assert data.trial is not None and live is not None
    assert (data.trial.version, data.trial.baseline, data.trial.tier) == ("v0002", "v0001", "query")
    assert (data.trial.wins, data.trial.losses, data.trial.ties, data.trial.searches) == (live["wins"], live["losses"], live["ties"], live["searches"])
    assert data.trial.wins > 0 and data.trial.searches == 12 and data.trial.verdict == live["verdict"]

    fb = rt.feedback.stats()
    assert (data.overview.queries, data.overview.clicks, data.overview.current_version, data.overview.n_docs) == (fb["queries"], fb["clicks"], "v0001", 8)
    assert len(data.daily) == 1 and data.daily[0].queries == fb["queries"] and data.daily[0].clicks == fb["clicks"]
    assert [r.rank for r in data.ranks] == [1, 2, 3, 4, 5]
    assert sum(r.shown for r in data.ranks) == fb["impressions"]
    assert sum(r.clicked for r in data.ranks) == fb["clicks"] >= played["clicks"]  # every click was on a shown result, one per search

    assert [d.event for d in data.decisions] == ["trial_started", "indexed"]  # newest first
    started, indexed = data.decisions
    assert started.version == "v0002" and "query candidate against v0001" in started.reason and "100% of searches interleaved" in started.reason
    assert rep.check.reason in started.reason
    assert indexed.version == "v0001" and indexed.reason.startswith("8 docs (8 added")

    rt.stop_trial("stopped for the dashboard test")
    after = build_dashboard(rt)
    dropped = after.versions[1]
    assert dropped.trial is not None and dropped.trial.state == "dropped" and dropped.trial.wins == data.trial.wins
    assert dropped.trial.losses == data.trial.losses and dropped.trial.p_value is not None and not dropped.current
    assert after.trial is None
    assert after.decisions[0].event == "trial_dropped" and after.decisions[0].version == "v0002"
    assert after.decisions[0].reason.startswith("stopped for the dashboard test")

    out = json.loads(json.dumps(after.to_dict()))  # JSON as GET /api/dashboard sends it
    assert set(out) == {"overview", "versions", "daily", "ranks", "trial", "decisions", "generated"}
    assert out["versions"][1]["trial"]["state"] == "dropped" and out["versions"][1]["check"]["metric"] == rep.check.metric
    assert out["ranks"][0]["rate"] == after.ranks[0].rate


def test_decisions_are_capped_newest_first_with_refused_reasons(workspace):
    rt: Ragtune = workspace
    rep = rt.refresh(mode="query", force=True)  # no feedback at all: too little to train
    assert rep.status == "skipped"
    data = build_dashboard(rt, n_decisions=1)
    assert [d.event for d in data.decisions] == ["refresh_skipped"] and data.decisions[0].reason == rep.reason


def test_the_page_fetches_nothing_from_another_origin():
    files = sorted(p.name for p in STATIC_DIR.iterdir())
    assert files == ["dashboard.css", "dashboard.js", "index.html"]
    for p in STATIC_DIR.iterdir():
        text = p.read_text(encoding="utf-8")
        urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text) if "www.w3.org/2000/svg" not in u]
        assert urls == [], f"{p.name} refers to {urls}"
        assert "@import" not in text and "url(" not in text


def test_the_service_serves_the_page_its_files_and_its_figures(service, workspace):
    page = service.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"<title>ragtune dashboard</title>" in page.body and b'src="dashboard/dashboard.js"' in page.body
    js = service.get("/dashboard/dashboard.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript") and js.body == (STATIC_DIR / "dashboard.js").read_bytes()
    assert service.get("/dashboard/dashboard.css").headers["content-type"].startswith("text/css")
    for name in ("index.html", "nothing.js", "..%2Fdashboard.py", "..%2F..%2Fapi.py"):
        assert service.get(f"/dashboard/{name}").status == 404, name
    preview = service.post("/search", {"query": "reset the router", "k": 3, "log": False}).json()  # what the page's search box sends
    assert preview["query_id"] is None and len(preview["hits"]) == 3 and not workspace.ws.feedback_path.exists()
    assert service.post("/search", {"query": "reset the router", "log": "false"}).status == 422
    hits = service.post("/search", {"query": "reset the router", "k": 3}).json()
    assert service.post("/feedback", {"query_id": hits["query_id"], "doc_id": hits["hits"][0]["doc_id"], "type": "click"}).status == 200
    data = service.get("/api/dashboard?days=7&max_rank=3").json()
    assert data == json.loads(json.dumps(build_dashboard(workspace, days=7, max_rank=3).to_dict())) | {"generated": data["generated"]}
    assert [v["name"] for v in data["versions"]] == ["v0001"] and data["overview"]["clicks"] == 1
    assert [r["clicked"] for r in data["ranks"]] == [1, 0, 0] and data["daily"][0]["queries"] == 1
    assert service.get("/api/dashboard?days=0").status == 422


def test_lines_of_the_refresh_log_that_are_not_objects_are_skipped_with_one_warning(service, workspace: Ragtune, caplog):
    import logging

    log = workspace.ws.decisions_path
    good = log.read_text(encoding="utf-8")
    log.write_text('[1, 2]\n"text"\n42\n' + good + "null\n", encoding="utf-8")  # JSON, but no entry: someone else wrote it
    with caplog.at_level(logging.WARNING, logger="ragtune.workspace"):
        entries = workspace.ws.read_log()
        assert workspace.ws.read_log() == entries
    assert [e["event"] for e in entries] == ["indexed"] and all(isinstance(e, dict) for e in entries)
    warned = [r.getMessage() for r in caplog.records if r.name == "ragtune.workspace"]
    assert len(warned) == 1 and "skipped 4 line(s)" in warned[0]  # once, however often it is read
    assert workspace.ws.served_versions() == {"v0001"}
    r = service.get("/versions")
    assert r.status == 200 and [v["name"] for v in r.json()] == ["v0001"]
    r = service.get("/api/dashboard")
    assert r.status == 200 and [d["event"] for d in r.json()["decisions"]] == ["indexed"]
