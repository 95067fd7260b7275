from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ragtune.cli import main


def _run(args, ws, **kw):
    res = CliRunner().invoke(main, ["-q", "-w", str(ws), *args], catch_exceptions=False, **kw)
    return res


def test_cli_loop(tmp_path, tiny_model, docs_jsonl):
    ws = tmp_path / "ws"
    r = _run(["init", "--model", tiny_model], ws)
    assert r.exit_code == 0 and "created workspace" in r.output
    r = _run(["init", "--model", tiny_model], ws)
    assert r.exit_code == 0 and "workspace unchanged:" in r.output and "updated" not in r.output
    r = _run(["index", str(docs_jsonl)], ws)
    assert r.exit_code == 0 and "8 docs (8 added" in r.output
    r = _run(["index", str(docs_jsonl)], ws)
    assert "0 embedded" in r.output
    r = _run(["query", "reset the router", "-k", "3", "--json"], ws)
    data = json.loads(r.output)
    assert len(data["hits"]) == 3 and data["query_id"]
    qid, doc = data["query_id"], data["hits"][1]["doc_id"]
    r = _run(["feedback", "click", qid, doc], ws)
    assert r.exit_code == 0 and "click recorded" in r.output
    r = _run(["feedback", "rate", qid, doc, "up"], ws)
    assert r.exit_code == 0
    r = _run(["query", "wifi", "--no-log"], ws)
    assert "query id" not in r.output and " 1. " in r.output
    unquoted = _run(["query", "reset", "the", "router", "-k", "3", "--no-log", "--json"], ws)  # the words are the query, quoted or not
    assert unquoted.exit_code == 0 and json.loads(unquoted.output)["hits"] == [
        {**h, "score": pytest.approx(h["score"])} for h in json.loads(_run(["query", "reset the router", "-k", "3", "--no-log", "--json"], ws).output)["hits"]
    ]
    stats = json.loads(_run(["feedback", "stats", "--json"], ws).output)
    assert stats == {"queries": 1, "impressions": 3, "clicks": 1, "ratings": 1, "queries_with_positive": 1}
    mined = json.loads(_run(["feedback", "mine", "--dry-run", "--json"], ws).output)
    assert {"pairs", "negatives_per_pair", "dropped_false_negatives", "heldout_queries"} <= set(mined)
    out = tmp_path / "events.jsonl"
    r = _run(["feedback", "export", "-o", str(out)], ws)
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 3
    r = _run(["feedback", "export", "--format", "triplets"], ws)
    assert r.exit_code == 0
    status = json.loads(_run(["status", "--json"], ws).output)
    assert status["n_docs"] == 8 and status["current_version"] == "v0001"
    r = _run(["refresh"], ws)
    assert r.exit_code == 0 and "refresh skipped" in r.output
    r = _run(["versions"], ws)
    assert "* v0001" in r.output
    r = _run(["trial"], ws)
    assert r.exit_code == 0 and r.output.strip() == "no trial is live"
    assert json.loads(_run(["trial", "status", "--json"], ws).output) is None
    assert json.loads(_run(["trial", "stop", "--json"], ws).output) is None
    assert "trial       none live" in _run(["status"], ws).output


def test_a_failed_first_index_leaves_no_workspace_behind(tmp_path):
    """`index` creates a workspace where there is none; when that first run fails, it removes what it made."""
    ws = tmp_path / "new"
    r = CliRunner().invoke(main, ["-q", "-w", str(ws), "index", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 1 and "no such file or directory" in r.output and not ws.exists()
    project = tmp_path / "project"  # an existing folder that is no workspace: only what the run added goes
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["-q", "-w", str(project), "index", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 1 and sorted(p.name for p in project.iterdir()) == ["notes.txt"]


def test_user_mistakes_are_clean_errors(tmp_path, tiny_model, docs_jsonl):
    ws = tmp_path / "ws"
    runner = CliRunner()
    r = runner.invoke(main, ["-w", str(ws), "query", "hello"])
    assert r.exit_code == 1 and "Error: no ragtune workspace" in r.output and "Traceback" not in r.output
    docs = tmp_path / "docs"  # `-w docs index x.jsonl`: a folder of the user's files is not made a workspace unasked
    docs.mkdir()
    (docs / "a.md").write_text("a note", encoding="utf-8")
    r = runner.invoke(main, ["-w", str(docs), "index", str(docs_jsonl)])
    assert r.exit_code == 1 and "holds files and is not a ragtune workspace" in r.output, r.output
    assert sorted(p.name for p in docs.iterdir()) == ["a.md"]
    hidden = tmp_path / "hidden"  # a folder holding only dotfiles counts as empty
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"x")
    r = runner.invoke(main, ["-w", str(hidden), "index", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 1 and "holds files" not in r.output and "no such file" in r.output, r.output
    assert sorted(p.name for p in hidden.iterdir()) == [".DS_Store"]  # the failed first index left nothing
    _run(["init", "--model", tiny_model], ws)
    _run(["index", str(docs_jsonl)], ws)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "ok"}\n{"id": "y"\n')
    r = runner.invoke(main, ["-w", str(ws), "index", str(bad)])
    assert r.exit_code == 1 and f"{bad}:2: malformed JSON" in r.output
    r = runner.invoke(main, ["-w", str(ws), "feedback", "click", "nope", "d1"])
    assert r.exit_code == 1 and "unknown query id 'nope'" in r.output
    r = runner.invoke(main, ["-w", str(ws), "rollback", "v0099"])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = runner.invoke(main, ["-w", str(ws), "init", "--backend", "milvus"])
    assert r.exit_code == 2  # click validates the choice
    r = runner.invoke(main, ["-w", str(ws), "refresh", "--watch", "--interval", "soon"])
    assert r.exit_code == 2 and "expected a duration" in r.output
    r = runner.invoke(main, ["-w", str(ws), "query", "  "])
    assert r.exit_code == 2 and "Invalid value for 'TEXT...': must contain something to search for" in r.output  # a usage error, as for feedback click ''
    r = runner.invoke(main, ["-w", str(ws), "feedback", "rate", "q", "d1", "--vlaue", "1"])
    assert r.exit_code == 2 and "No such option '--vlaue'" in r.output  # not "invalid VALUE"
    r = runner.invoke(main, ["-w", str(ws), "feedback", "rate", "q", "d1", "up", "--jsn"])
    assert r.exit_code == 2 and "No such option '--jsn'" in r.output and "Did you mean '--json'?" in r.output
    r = runner.invoke(main, ["-w", str(ws), "feedback", "rate", "q", "d1", "up", "--feedback-id", "-abc"])
    assert r.exit_code == 1 and "unknown query id 'q'" in r.output  # an option's value may start with '-'
    r = runner.invoke(main, ["-w", str(ws), "feedback", "rate", "q", "d1", "-2"])
    assert r.exit_code == 2 and "'-2' is not one of" in r.output  # a number is a bad VALUE, not an option
    # the index still answers
    assert _run(["query", "reset", "--no-log"], ws).exit_code == 0


def _check(tier: str, worth: bool, reason: str):
    from ragtune.gate import CheckResult

    return CheckResult(worth, reason, tier, "loglik" if tier == "query" else "ndcg@10", 0.5, 0.6 if worth else 0.4, 30, 0.9 if worth else None)


def _refresh_output(monkeypatch, ws, report, *args):
    """The CLI's printout of ``report`` (the facade's refresh replaced: printing is what is tested here)."""
    seen = {}

    def fake(self, **kwargs):
        seen.update(kwargs)
        return report

    monkeypatch.setattr("ragtune.api.Ragtune.refresh", fake)
    r = _run(["refresh", *args], ws)
    assert r.exit_code == 0, r.output
    return r.output.splitlines(), seen


def test_refresh_prints_each_tiers_check_and_what_it_did(monkeypatch, tmp_path, tiny_model):
    from ragtune.refresh import RefreshReport

    ws = tmp_path / "ws"
    _run(["init", "--model", tiny_model], ws)
    trial = {"id": "abc123", "version": "v0003", "baseline": "v0001", "tier": "lora", "share": 0.5, "started": "now"}
    settled = {**trial, "id": "old1", "version": "v0002", "verdict": "drop", "reason": "out of budget", "wins": 1, "losses": 1, "ties": 0, "searches": 5, "p_value": 1.0}
    report = RefreshReport(
        "trial_started", "lora candidate v0003 is live as trial abc123 (50% of searches interleaved)", "auto", "v0001", "v0003",
        checks={"query": _check("query", False, "query: no gain"), "lora": _check("lora", True, "lora: not an obvious loser")}, settled=settled, trial=trial,
    )  # fmt: skip
    out, seen = _refresh_output(monkeypatch, ws, report, "--mode", "auto")
    assert seen["mode"] == "auto" and seen["trial"] is True
    assert out[0] == "trial old1 (v0002): dropped: out of budget"
    assert out[1] == "[query] offline check: not worth a trial: query: no gain"
    assert out[2] == "[lora] offline check: worth a trial: lora: not an obvious loser"
    assert out[3].startswith("lora candidate v0003 is live as trial abc123") and "ragtune trial" in out[4]
    # --no-trial reaches the facade, and the JSON report is the report's dict
    report = RefreshReport("promoted", "query candidate promoted without a trial", "query", "v0001", "v0002", checks={"query": _check("query", True, "query: ahead")})
    out, seen = _refresh_output(monkeypatch, ws, report, "--no-trial", "--json")
    assert seen["trial"] is False
    data = json.loads("\n".join(out))
    assert data["status"] == "promoted" and data["version"] == "v0002" and data["checks"]["query"]["worth_trial"] is True
    out, _ = _refresh_output(monkeypatch, ws, report)
    assert out[-1].startswith("promoted v0002: query candidate promoted without a trial")


def test_refresh_prints_a_running_trial(monkeypatch, tmp_path, tiny_model):
    from ragtune.refresh import RefreshReport

    ws = tmp_path / "ws"
    _run(["init", "--model", tiny_model], ws)
    trial = {
        "id": "abc123", "version": "v0002", "baseline": "v0001", "tier": "query", "share": 0.5, "started": "now", "verdict": "continue",
        "reason": "undecided: 3 wins", "wins": 3, "losses": 2, "ties": 1, "searches": 9, "decided": 5, "p_value": 0.81234,
    }  # fmt: skip
    report = RefreshReport("trial_running", "trial abc123 (v0002) is live", "query", "v0001", settled=trial, trial=trial)
    out, _ = _refresh_output(monkeypatch, ws, report)
    assert out[0] == "trial abc123: v0002 vs v0001 (query tier, 50% of searches): 3 wins, 2 losses, 1 ties in 9 interleaved searches, p = 0.8123"
    assert out[1] == "undecided: 3 wins; nothing trained while it runs (to train now: `ragtune trial stop`, then `ragtune refresh --force`)"
    repeated = RefreshReport("trial_running", "trial abc123 (v0002) is live", "query", "v0001", settled=trial, trial={**trial, "repeats": 7})
    out, _ = _refresh_output(monkeypatch, ws, repeated)
    assert out[0].endswith("1 ties in 9 interleaved searches (7 more decided searches of repeated queries not counted), p = 0.8123")
    refused = RefreshReport("refused", "not worth a trial: query: no gain", "query", "v0001", checks={"query": _check("query", False, "query: no gain")})
    out, _ = _refresh_output(monkeypatch, ws, refused)
    assert out == ["[query] offline check: not worth a trial: query: no gain", "refused: not worth a trial: query: no gain"]


def test_feedback_click_and_rate_take_a_feedback_id_and_say_duplicate(tmp_path, tiny_model, docs_jsonl):
    ws = tmp_path / "ws"
    _run(["init", "--model", tiny_model], ws)
    _run(["index", str(docs_jsonl)], ws)
    data = json.loads(_run(["query", "reset the router", "-k", "3", "--json"], ws).output)
    qid, doc = data["query_id"], data["hits"][0]["doc_id"]
    first = json.loads(_run(["feedback", "click", qid, doc, "--dwell", "2", "--feedback-id", "evt-1", "--json"], ws).output)
    assert first == {"status": "recorded", "recorded": True, "type": "click", "query_id": qid, "doc_id": doc, "dwell": 2.0, "feedback_id": "evt-1"}
    again = json.loads(_run(["feedback", "click", qid, doc, "--dwell", "2", "--feedback-id", "evt-1", "--json"], ws).output)
    assert again["status"] == "duplicate" and again["recorded"] is False
    r = _run(["feedback", "rate", qid, doc, "down", "--feedback-id", "evt-2"], ws)
    assert r.exit_code == 0 and "rating -1 recorded" in r.output
    r = _run(["feedback", "rate", qid, doc, "down", "--feedback-id", "evt-2"], ws)
    assert r.exit_code == 0 and "duplicate: feedback id 'evt-2' is already recorded" in r.output and "nothing added" in r.output
    rated = json.loads(_run(["feedback", "rate", "--feedback-id", "evt-2", "--json", qid, doc, "down"], ws).output)
    assert rated["status"] == "duplicate" and rated["value"] == -1 and rated["type"] == "rating"
    rated = json.loads(_run(["feedback", "rate", qid, doc, "-1", "--feedback-id", "evt-2", "--json"], ws).output)  # -1 is a value, not an option
    assert rated["status"] == "duplicate" and rated["value"] == -1
    stats = json.loads(_run(["feedback", "stats", "--json"], ws).output)
    assert (stats["clicks"], stats["ratings"]) == (1, 1)
    r = CliRunner().invoke(main, ["-w", str(ws), "feedback", "rate", qid, doc, "up", "--feedback-id", "evt-1"])
    assert r.exit_code == 1 and "feedback id 'evt-1' is already recorded as a click" in r.output
    r = CliRunner().invoke(main, ["-w", str(ws), "feedback", "click", qid, doc, "--feedback-id", " "])
    assert r.exit_code == 2 and "Invalid value for '--feedback-id': must not be empty" in r.output  # a usage error, as a bad --dwell
    r = CliRunner().invoke(main, ["-w", str(ws), "feedback", "rate", qid, doc, "up", "--feedback-id", "x" * 201])
    assert r.exit_code == 2 and "must be at most 200 characters" in r.output
    assert json.loads(_run(["feedback", "stats", "--json"], ws).output)["clicks"] == 1  # nothing recorded


def test_common_slips_get_a_pointer_to_the_right_command_line(tmp_path):
    def run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, list(args))

    r = run("status", "-w", str(tmp_path))
    assert r.exit_code == 2 and "-w is a global option: put it before the command" in r.output
    r = run("click", "q1", "d1")
    assert r.exit_code == 2 and "No such command 'click'; it is `ragtune feedback click`" in r.output
    r = run("-w", str(tmp_path), "refresh", "--interval", "5m")
    assert r.exit_code == 2 and "--interval is for --watch" in r.output


def test_init_restores_a_lost_config_from_the_serving_version(tmp_path, tiny_model, docs_jsonl):
    """config.json deleted by mistake: init brings back the serving version's settings (its model), not the defaults."""
    ws = tmp_path / "ws"
    _run(["init", "--model", tiny_model], ws)
    _run(["index", str(docs_jsonl)], ws)
    (ws / "config.json").unlink()
    r = CliRunner().invoke(main, ["-w", str(ws), "status"])
    assert r.exit_code == 1 and "has versions but no config.json; `ragtune init" in r.output and "restores it" in r.output
    out = _run(["init"], ws).output
    assert "config.json was missing: restored from versions/v0001/config.json" in out and "updated workspace" in out
    assert json.loads((ws / "config.json").read_text())["model"]["name"] == tiny_model
    assert _run(["query", "reset the router", "--json"], ws).exit_code == 0
    # CURRENT corrupt as well: the version the log last made current
    (ws / "config.json").unlink()
    (ws / "CURRENT").write_text("garbage")
    out = _run(["init"], ws).output
    assert "restored from versions/v0001/config.json" in out
    assert json.loads((ws / "config.json").read_text())["model"]["name"] == tiny_model
