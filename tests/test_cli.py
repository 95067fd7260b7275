from __future__ import annotations

import json

from click.testing import CliRunner

from ragtune.cli import main


def _run(args, ws, **kw):
    res = CliRunner().invoke(main, ["-q", "-w", str(ws), *args], catch_exceptions=False, **kw)
    return res


def test_cli_loop(tmp_path, tiny_model, docs_jsonl):
    ws = tmp_path / "ws"
    r = _run(["init", "--model", tiny_model], ws)
    assert r.exit_code == 0 and "created workspace" in r.output
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


def test_user_mistakes_are_clean_errors(tmp_path, tiny_model, docs_jsonl):
    ws = tmp_path / "ws"
    runner = CliRunner()
    r = runner.invoke(main, ["-w", str(ws), "query", "hello"])
    assert r.exit_code == 1 and "Error: no ragtune workspace" in r.output and "Traceback" not in r.output
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
    # the index still answers
    assert _run(["query", "reset", "--no-log"], ws).exit_code == 0


def test_auto_refresh_prints_both_tiers_gates(capsys):
    from ragtune.cli import _print_refresh

    lora_gate = {"metric": "ndcg@10", "current": {"heldout": 0.80}, "candidates": {"lora@1": {"heldout": 0.79}}}
    query_gate = {"metric": "loglik", "current": {"heldout": -1.30}, "candidates": {"memory@0.5": {"heldout": -1.20, "p_win": 0.95}}}
    _print_refresh(
        {
            "status": "promoted",
            "version": "v0002",
            "reason": "lora refused (...); query promoted: ...",
            "train_s": 12.0,
            "reembed_s": 0.0,
            "refresh_s": 14.0,
            "gate": query_gate,
            "tiers": {"lora": {"status": "refused", "gate": lora_gate}, "query": {"status": "promoted", "gate": query_gate}},
        }
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[lora] refused" and "held-out ndcg@10: current 0.8000" in out[1] and "lora@1" in out[2]
    assert out[3] == "[query] promoted" and "held-out loglik: current -1.3000" in out[4] and "p_win 0.9500" in out[5]
    assert out[-1].startswith("promoted v0002 (lora refused")
