"""Every kind of bad input gives a one-line message naming what is at fault, and changes nothing.

A table of cases across the CLI (``CliRunner`` on ``ragtune.cli.main``) and the Python facade. Each
asserts: one line that names the file, line or value at fault; CLI exit code 1 (a ragtune error) or
2 (a usage error); no traceback; and the workspace's files (path, size, mtime) unchanged. Then: a
broken feedback log (corrupt, read-only) never breaks a logged search, and ``status`` reports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ragtune import ConfigError, FeedbackError, InputError, Ragtune, RagtuneConfig, RagtuneError, WorkspaceError
from ragtune.cli import main
from ragtune.errors import FeedbackLogError
from tests.conftest import DOCS

#: Files that change without any state changing: SQLite's WAL side files and the lock file's stamp.
VOLATILE = ("-wal", "-shm", "refresh.lock")


def _log_content(path: Path) -> str:
    """A hash of the feedback log's rows (of its bytes when it is no database)."""
    try:
        conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)
        try:
            return hashlib.sha1("\n".join(conn.iterdump()).encode()).hexdigest()
        finally:
            conn.close()
    except sqlite3.Error:
        return hashlib.sha1(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> list[tuple[str, int, int, str]]:
    """(path, size, mtime) of every file in a workspace, and the feedback log's rows."""
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns, _log_content(p) if p.name == "feedback.sqlite" else "")
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(VOLATILE)
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> dict[str, Any]:
    """A workspace with one logged search, an empty one, one with a corrupt log, one with a corrupt config, and input files."""
    base = tmp_path_factory.mktemp("bad-input")
    config = RagtuneConfig().with_overrides({"model.name": tiny_model, "model.batch_size": 8})
    docs = base / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    rt = Ragtune.init(base / "ws", config, progress=False)
    rt.index([docs])
    hits = rt.search("reset the router", k=3)
    rt.feedback.close()  # checkpoints the WAL: later readers change no file
    Ragtune.init(base / "empty", config, progress=False)
    corrupt = base / "corrupt"
    shutil.copytree(base / "ws", corrupt)
    (corrupt / "feedback.sqlite").write_bytes(b"this is not a SQLite file\n" * 64)
    badcfg = base / "badcfg"
    shutil.copytree(base / "ws", badcfg)
    (badcfg / "config.json").write_text('{"model": {"name": ', encoding="utf-8")
    files = base / "files"
    files.mkdir()
    qid = hits.query_id
    lines = {
        "malformed.jsonl": json.dumps({"query": "reset", "positive_id": "d1"}) + "\n{not json\n",
        "wrongtype.jsonl": json.dumps({"type": "query", "query_id": 5, "text": "t"}) + "\n",
        "unknowntype.jsonl": json.dumps({"type": "purchase", "query_id": qid, "doc_id": "d1"}) + "\n",
        "baddwell.jsonl": json.dumps({"type": "click", "query_id": qid, "doc_id": "d1", "dwell": -1}) + "\n",
        "nandwell.jsonl": f'{{"type": "click", "query_id": "{qid}", "doc_id": "d1", "dwell": NaN}}\n',
        "boolrating.jsonl": json.dumps({"type": "rating", "query_id": qid, "doc_id": "d1", "value": True}) + "\n",
        "badts.jsonl": json.dumps({"type": "click", "query_id": qid, "doc_id": "d1", "ts": "yesterday"}) + "\n",
        "unknowndoc.jsonl": json.dumps({"type": "click", "query_id": qid, "doc_id": "d1"}) + "\n" + json.dumps({"query": "x", "positive_id": "nope"}) + "\n",
        "unknownqid.jsonl": json.dumps({"type": "click", "query_id": "ghost", "doc_id": "d1"}) + "\n",
        "badimpression.jsonl": json.dumps({"type": "query", "query_id": "n1", "text": "t", "impressions": [{"doc_id": "d1", "rank": 0}]}) + "\n",
        "notobject.jsonl": "[1, 2]\n",
        "empty.jsonl": "\n\n",
        "good.jsonl": json.dumps({"query": "guest wifi", "positive_id": "d6"}) + "\n",
    }
    for name, text in lines.items():
        (files / name).write_text(text, encoding="utf-8")
    (files / "latin1.jsonl").write_bytes('{"query": "caf\xe9"}\n'.encode("latin-1"))
    (files / "adir").mkdir()
    return {"base": base, "ws": base / "ws", "empty": base / "empty", "corrupt": corrupt, "badcfg": badcfg, "files": files, "qid": qid}


def _fill(value: Any, env: dict[str, Any]) -> Any:
    """Placeholders in a case: {ws}, {files}, {qid} ..."""
    if isinstance(value, str):
        return value.format(**{k: str(v) for k, v in env.items()})
    if isinstance(value, (list, tuple)):
        return [_fill(v, env) for v in value]
    return value


# -- the CLI ------------------------------------------------------------------------------------
# (id, workspace, args, exit code, needles the error line must hold)
CLI_CASES = [
    ("init-model-no-such-dir", "empty", ["init", "--model", "{base}/no-such-model"], 2, ["--model", "looks like a path, but there is no such directory"]),
    ("dwell-nan", "ws", ["feedback", "click", "{qid}", "d1", "--dwell", "nan"], 2, ["--dwell", "nan"]),
    ("dwell-inf", "ws", ["feedback", "click", "{qid}", "d1", "--dwell", "inf"], 2, ["--dwell", "inf"]),
    ("dwell-negative", "ws", ["feedback", "click", "{qid}", "d1", "--dwell", "-5"], 2, ["--dwell", "-5"]),
    ("dwell-garbage", "ws", ["feedback", "click", "{qid}", "d1", "--dwell", "long"], 2, ["--dwell", "long"]),
    ("rate-2", "ws", ["feedback", "rate", "{qid}", "d1", "2"], 2, ["'2' is not one of"]),
    ("click-unknown-query", "ws", ["feedback", "click", "nope", "d1"], 1, ["unknown query id 'nope'", "ragtune query"]),
    ("click-unknown-doc", "ws", ["feedback", "click", "{qid}", "zzz"], 1, ["unknown doc id 'zzz'"]),
    ("rate-unknown-doc", "ws", ["feedback", "rate", "{qid}", "zzz", "up"], 1, ["unknown doc id 'zzz'"]),
    ("click-empty-id", "ws", ["feedback", "click", " ", "d1"], 2, ["QUERY_ID", "must not be empty"]),
    ("import-dir", "ws", ["feedback", "import", "{files}/adir"], 2, ["adir", "is a directory"]),
    ("import-missing", "ws", ["feedback", "import", "{files}/missing.jsonl"], 2, ["missing.jsonl", "does not exist"]),
    ("import-malformed-json", "ws", ["feedback", "import", "{files}/malformed.jsonl"], 1, ["malformed.jsonl:2: malformed JSON", "column 2"]),
    ("import-wrong-field-type", "ws", ["feedback", "import", "{files}/wrongtype.jsonl"], 1, ["wrongtype.jsonl:1: 'query_id' must be a non-empty string, got 5"]),
    ("import-unknown-type", "ws", ["feedback", "import", "{files}/unknowntype.jsonl"], 1, ["unknowntype.jsonl:1: unknown event type 'purchase'"]),
    ("import-negative-dwell", "ws", ["feedback", "import", "{files}/baddwell.jsonl"], 1, ["baddwell.jsonl:1: 'dwell'", "got -1"]),
    ("import-nan-dwell", "ws", ["feedback", "import", "{files}/nandwell.jsonl"], 1, ["nandwell.jsonl:1: 'dwell'", "got nan"]),
    ("import-bool-rating", "ws", ["feedback", "import", "{files}/boolrating.jsonl"], 1, ["boolrating.jsonl:1: a rating's 'value'", "got True"]),
    ("import-bad-ts", "ws", ["feedback", "import", "{files}/badts.jsonl"], 1, ["badts.jsonl:1: 'ts'", "'yesterday'"]),
    ("import-unknown-doc", "ws", ["feedback", "import", "{files}/unknowndoc.jsonl"], 1, ["unknowndoc.jsonl:2: unknown doc id 'nope'"]),
    ("import-unknown-query", "ws", ["feedback", "import", "{files}/unknownqid.jsonl"], 1, ["unknownqid.jsonl:1: unknown query id 'ghost'"]),
    ("import-bad-impression", "ws", ["feedback", "import", "{files}/badimpression.jsonl"], 1, ["badimpression.jsonl:1: impressions[0]: 'rank'", "got 0"]),
    ("import-not-object", "ws", ["feedback", "import", "{files}/notobject.jsonl"], 1, ["notobject.jsonl:1: expected a JSON object, got list"]),
    ("import-empty", "ws", ["feedback", "import", "{files}/empty.jsonl"], 1, ["empty.jsonl: no events found"]),
    ("import-not-utf8", "ws", ["feedback", "import", "{files}/latin1.jsonl"], 1, ["latin1.jsonl: not UTF-8"]),
    ("interval-0", "ws", ["refresh", "--watch", "--interval", "0"], 2, ["--interval", "'0'"]),
    ("interval-negative", "ws", ["refresh", "--watch", "--interval", "-5s"], 2, ["--interval", "'-5s'"]),
    ("interval-garbage", "ws", ["refresh", "--watch", "--interval", "abc"], 2, ["--interval", "'abc'"]),
    ("interval-nan", "ws", ["refresh", "--watch", "--interval", "nan"], 2, ["--interval", "'nan'"]),
    ("refresh-bad-mode", "ws", ["refresh", "--mode", "turbo"], 2, ["--mode", "'turbo'"]),
    ("query-k-0", "ws", ["query", "reset", "-k", "0"], 2, ["--top-k", "0"]),
    ("query-empty-text", "ws", ["query", "  "], 2, ["'TEXT...'", "must contain something to search for", "'  '"]),
    ("query-empty-workspace", "empty", ["query", "reset"], 1, ["has no index yet", "ragtune index"]),
    ("query-missing-workspace", "base", ["query", "reset"], 1, ["no ragtune workspace", "ragtune init"]),
    ("rollback-unknown", "ws", ["rollback", "v0099"], 1, ["'v0099' does not exist"]),
    ("unknown-command", "ws", ["frobnicate"], 2, ["No such command 'frobnicate'"]),
    ("trial-bad-action", "ws", ["trial", "go"], 2, ["'go'"]),
    ("export-bad-format", "ws", ["feedback", "export", "--format", "xml"], 2, ["--format", "'xml'"]),
    ("export-to-dir", "ws", ["feedback", "export", "-o", "{files}/adir"], 2, ["adir", "is a directory"]),
    ("init-bad-backend", "ws", ["init", "--backend", "milvus"], 2, ["--backend", "'milvus'"]),
    ("corrupt-config", "badcfg", ["status"], 1, ["config.json", "not valid JSON"]),
    ("corrupt-log-click", "corrupt", ["feedback", "click", "{qid}", "d1"], 1, ["feedback.sqlite is not a SQLite database", "doctor --repair"]),
    ("corrupt-log-rate", "corrupt", ["feedback", "rate", "{qid}", "d1", "up"], 1, ["feedback.sqlite is not a SQLite database"]),
    ("corrupt-log-stats", "corrupt", ["feedback", "stats"], 1, ["feedback.sqlite is not a SQLite database"]),
    ("corrupt-log-export", "corrupt", ["feedback", "export"], 1, ["feedback.sqlite is not a SQLite database"]),
    ("corrupt-log-import", "corrupt", ["feedback", "import", "{files}/good.jsonl"], 1, ["feedback.sqlite is not a SQLite database"]),
    ("corrupt-log-mine", "corrupt", ["feedback", "mine"], 1, ["feedback.sqlite is not a SQLite database"]),
]


@pytest.mark.parametrize(("where", "args", "code", "needles"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(env: dict[str, Any], where: str, args: list[str], code: int, needles: list[str]) -> None:
    ws = env[where]
    before = snapshot(ws)
    res = CliRunner().invoke(main, ["-q", "-w", str(ws), *_fill(args, env)])
    out = res.output
    assert res.exit_code == code, out
    assert "Traceback" not in out and not isinstance(res.exception, (RagtuneError, OSError, sqlite3.Error))
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    if code == 1:
        assert out.strip() == errors[0]  # a ragtune error is the whole output: one line
    for needle in _fill(needles, env):
        assert needle in errors[0], errors[0]
    assert snapshot(ws) == before


def test_cli_messages_speak_cli_and_python_speaks_python(env: dict[str, Any]) -> None:
    res = CliRunner().invoke(main, ["-w", str(env["ws"]), "feedback", "click", "nope", "d1"])
    assert "log=True" not in res.output and "`ragtune query TEXT` prints its id" in res.output
    rt = Ragtune(env["ws"], progress=False)
    with pytest.raises(FeedbackError) as exc:
        rt.click("nope", "d1")
    assert "search(..., log=True)" in str(exc.value) and "ragtune query" not in str(exc.value)
    assert exc.value.cli is not None and "ragtune query" in exc.value.cli_message()
    with pytest.raises(FeedbackError) as exc:
        rt.click(env["qid"], "d1", dwell=-5)
    assert "dwell must be" in str(exc.value) and "--dwell" not in str(exc.value) and "--dwell" in exc.value.cli_message()


# -- Python ---------------------------------------------------------------------------------------
def _import(name: str) -> Callable[[Ragtune, dict[str, Any]], Any]:
    return lambda rt, env: rt.import_feedback(env["files"] / name)


# (id, call, error class, needles the message must hold)
PY_CASES: list[tuple[str, Callable[[Ragtune, dict[str, Any]], Any], type[Exception], list[str]]] = [
    ("dwell-nan", lambda rt, e: rt.click(e["qid"], "d1", dwell=math.nan), FeedbackError, ["dwell", "got nan"]),
    ("dwell-inf", lambda rt, e: rt.click(e["qid"], "d1", dwell=math.inf), FeedbackError, ["dwell", "got inf"]),
    ("dwell-negative", lambda rt, e: rt.click(e["qid"], "d1", dwell=-5), FeedbackError, ["dwell", "got -5"]),
    ("dwell-string", lambda rt, e: rt.click(e["qid"], "d1", dwell="3"), FeedbackError, ["dwell", "got '3'"]),  # type: ignore[arg-type]
    ("rate-true", lambda rt, e: rt.rate(e["qid"], "d1", True), FeedbackError, ["+1 or -1", "got True"]),
    ("search-log-string", lambda rt, e: rt.search("reset", log="false"), InputError, ["log must be True, False or None", "got 'false'"]),  # type: ignore[arg-type]
    ("rate-2", lambda rt, e: rt.rate(e["qid"], "d1", 2), FeedbackError, ["+1 or -1", "got 2"]),
    ("rate-float", lambda rt, e: rt.rate(e["qid"], "d1", 1.0), FeedbackError, ["+1 or -1", "got 1.0"]),  # type: ignore[arg-type]
    ("click-unknown-query", lambda rt, e: rt.click("nope", "d1"), FeedbackError, ["unknown query id 'nope'", "search(..., log=True)"]),
    ("click-unknown-doc", lambda rt, e: rt.click(e["qid"], "zzz"), FeedbackError, ["unknown doc id 'zzz'", "v0001"]),
    ("click-empty-query-id", lambda rt, e: rt.click("", "d1"), FeedbackError, ["query_id must be a non-empty string, got ''"]),
    ("click-none-doc-id", lambda rt, e: rt.click(e["qid"], None), FeedbackError, ["doc_id must be a non-empty string, got None"]),  # type: ignore[arg-type]
    ("search-k-0", lambda rt, e: rt.search("reset", k=0), InputError, ["k must be a positive integer, got 0"]),
    ("search-k-bool", lambda rt, e: rt.search("reset", k=True), InputError, ["k must be a positive integer, got True"]),
    ("search-k-float", lambda rt, e: rt.search("reset", k=2.5), InputError, ["got 2.5"]),  # type: ignore[arg-type]
    ("search-empty", lambda rt, e: rt.search("   "), InputError, ["query must be a non-empty string", "'   '"]),
    ("import-dir", _import("adir"), InputError, ["adir: is a directory"]),
    ("import-missing", _import("missing.jsonl"), InputError, ["missing.jsonl: no such file"]),
    ("import-malformed-json", _import("malformed.jsonl"), InputError, ["malformed.jsonl:2: malformed JSON", "column 2"]),
    ("import-bad-ts", _import("badts.jsonl"), InputError, ["badts.jsonl:1: 'ts' must be a finite number"]),
    ("import-unknown-type", _import("unknowntype.jsonl"), InputError, ["unknowntype.jsonl:1: unknown event type 'purchase'"]),
    ("refresh-bad-mode", lambda rt, e: rt.refresh(mode="turbo"), ConfigError, ["'turbo'"]),
    ("rollback-unknown", lambda rt, e: rt.rollback("v0099"), WorkspaceError, ["'v0099' does not exist"]),
    ("config-unknown-key", lambda rt, e: RagtuneConfig().with_overrides({"nope.key": 1}), ConfigError, ["'nope.key'"]),
    ("config-bad-value", lambda rt, e: RagtuneConfig().with_overrides({"train.epochs": -1}), ConfigError, ["train.epochs", "got -1"]),
    ("missing-workspace", lambda rt, e: Ragtune(e["base"] / "nowhere"), WorkspaceError, ["no ragtune workspace", "nowhere"]),
]


@pytest.mark.parametrize(("call", "error", "needles"), [c[1:] for c in PY_CASES], ids=[c[0] for c in PY_CASES])
def test_python_bad_input(env: dict[str, Any], call: Callable[[Ragtune, dict[str, Any]], Any], error: type[Exception], needles: list[str]) -> None:
    ws = env["ws"]
    before = snapshot(ws)
    rt = Ragtune(ws, progress=False)
    with pytest.raises(error) as exc:
        call(rt, env)
    message = str(exc.value)
    assert isinstance(exc.value, RagtuneError) and "\n" not in message
    for needle in needles:
        assert needle in message, message
    rt.feedback.close()
    assert snapshot(ws) == before


def test_reimport_adds_nothing(env: dict[str, Any], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(env["ws"], ws)
    rt = Ragtune(ws, progress=False)
    events = tmp_path / "events.jsonl"
    assert CliRunner().invoke(main, ["-w", str(ws), "feedback", "export", "-o", str(events)]).exit_code == 0
    res = CliRunner().invoke(main, ["-w", str(ws), "feedback", "import", str(events), "--json"])
    report = json.loads(res.output)
    assert res.exit_code == 0 and report["new"] == 0 and report["present_queries"] == 1
    first = rt.import_feedback(env["files"] / "good.jsonl")
    second = CliRunner().invoke(main, ["-w", str(ws), "feedback", "import", str(env["files"] / "good.jsonl")])
    assert first.new == 2 and "0 new" in second.output and "2 already present" in second.output
    assert rt.feedback.stats()["queries"] == 2


def test_refresh_reason_names_no_cli_flag(env: dict[str, Any], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(env["ws"], ws)
    report = Ragtune(ws, progress=False).refresh()
    assert report.status == "skipped" and "--force" not in report.reason and "force=True" not in report.reason


# -- a broken feedback log never breaks search ---------------------------------------------------
def test_logged_search_survives_a_corrupt_log(env: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(env["corrupt"], ws)
    rt = Ragtune(ws, progress=False)
    with caplog.at_level(logging.WARNING, logger="ragtune.serving"):
        first = rt.search("reset the router", k=3)
        second = rt.search("wifi password", k=3)
    assert len(first) == 3 and len(second) == 3 and first.query_id is None and second.query_id is None
    warned = [r for r in caplog.records if "not logged" in r.getMessage()]
    assert len(warned) == 1 and "feedback.sqlite is not a SQLite database" in warned[0].getMessage()  # once, not per search
    status = rt.status()
    health = status["feedback_health"]
    assert not health["ok"] and health["state"] == "corrupt" and "doctor --repair" in health["fix"] and status["feedback"] is None
    assert status["n_docs"] == len(DOCS)
    res = CliRunner().invoke(main, ["-w", str(ws), "status"])
    assert res.exit_code == 0 and "PROBLEM" in res.output and "doctor --repair" in res.output
    with pytest.raises(FeedbackLogError, match=r"cannot record the click: .*feedback.sqlite is not a SQLite database"):
        rt.click("q", "d1")
    # moved aside: the next search starts a new log and is logged again
    (ws / "feedback.sqlite").rename(ws / "feedback.sqlite.broken")
    with caplog.at_level(logging.WARNING, logger="ragtune.serving"):
        again = rt.search("reset the router", k=3)
    assert again.query_id is not None and any("writable again" in r.getMessage() for r in caplog.records)
    assert rt.status()["feedback_health"]["ok"]


@pytest.fixture()
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make a workspace read-only: its permissions, and (as root, whom permissions do not stop) SQLite opens it read-only."""

    def apply(ws: Path) -> None:
        for p in [ws, *ws.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        if os.geteuid() == 0:
            real = sqlite3.connect

            def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
                if kwargs.pop("uri", False):
                    uri = str(database).replace("mode=rw", "mode=ro")
                else:
                    uri = Path(database).resolve().as_uri() + "?mode=ro"
                return real(uri, *args, uri=True, **kwargs)

            monkeypatch.setattr(sqlite3, "connect", connect)

    return apply


def test_logged_search_survives_a_read_only_workspace(env: dict[str, Any], tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(env["ws"], ws)
    read_only(ws)
    try:
        rt = Ragtune(ws, progress=False)
        hits = rt.search("reset the router", k=3)
        assert len(hits) == 3 and hits.query_id is None
        status = rt.status()
        assert not status["feedback_health"]["ok"] and status["feedback_health"]["state"] == "unwritable"
        assert "writable" in status["feedback_health"]["fix"]
        with pytest.raises(FeedbackLogError, match=r"cannot record the click: .*feedback.sqlite cannot be written"):
            rt.click(env["qid"], "d1")
        runner = CliRunner()
        res = runner.invoke(main, ["-w", str(ws), "query", "reset", "--json"])
        assert res.exit_code == 0 and '"query_id": null' in res.output
        for args in (["feedback", "click", env["qid"], "d1"], ["feedback", "import", str(env["files"] / "good.jsonl")]):
            res = runner.invoke(main, ["-w", str(ws), *args])
            assert res.exit_code == 1 and res.output.count("\n") == 1 and "feedback.sqlite cannot be written" in res.output, res.output
        assert runner.invoke(main, ["-w", str(ws), "status"]).exit_code == 0
    finally:
        for p in [ws, *ws.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
