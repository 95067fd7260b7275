"""Sources are tracked (re-indexing one leaves the others), model changes are explicit, and bad sources get clear one-line errors."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragtune import InputError, Ragtune, RagtuneConfig, WorkspaceError
from ragtune.cli import main
from tests.conftest import DOCS, make_tiny_model


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second tiny model, of another width: switching to it changes every vector."""
    return str(make_tiny_model(tmp_path_factory.mktemp("other-model"), dim=16, seed=1))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _text_dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def two_sources(tmp_path: Path) -> tuple[Path, Path]:
    docs = _text_dir(tmp_path / "docs", {f"note{i}.md": f"Router note number {i}: restart it and wait." for i in range(5)})
    more = _jsonl(tmp_path / "more.jsonl", DOCS[:3])
    return docs, more


def _cli(ws: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["-q", "-w", str(ws), *args])


def _one_line_error(result, code: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# -- sources ------------------------------------------------------------------------------------
def test_indexing_a_second_source_keeps_the_first(tmp_path, tiny_config, two_sources):
    docs, more = two_sources
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    first = rt.index(docs)  # one path, not a list: one source (never its characters)
    assert first.n_docs == 5 and first.written
    rep = rt.index([more])
    assert (rep.n_docs, rep.added, rep.removed, rep.unchanged, rep.embedded) == (8, 3, 0, 5, 3)
    by_source = {s.source: s for s in rep.sources}
    assert by_source[str(more.resolve())].status == "new" and by_source[str(docs.resolve())].status == "kept"
    assert rt.status()["sources"] == [{"source": str(docs.resolve()), "n_docs": 5}, {"source": str(more.resolve()), "n_docs": 3}]
    ids = {h.doc_id for h in rt.search("router", k=8, log=False)}
    assert "note0.md#0" in ids and "d1" in ids


def test_a_folder_holding_an_indexed_folder_is_refused_not_indexed_twice(tmp_path, tiny_config):
    outer = _text_dir(tmp_path / "corpus", {"top.md": "A note at the top about modems."})
    inner = _text_dir(outer / "bike", {f"n{i}.md": f"Bike note {i}: oil the chain." for i in range(3)})
    ws = tmp_path / "ws"
    Ragtune.init(ws, tiny_config, progress=False).index(inner)
    line = _one_line_error(_cli(ws, "index", str(outer)))  # before: every bike note indexed again, as corpus/bike/n0.md#0
    assert f"{outer.resolve()} holds {inner.resolve()} ({inner.resolve()}: already indexed)" in line and "--remove" in line
    Ragtune.init(tmp_path / "ws3", tiny_config, progress=False).index(outer)
    line = _one_line_error(_cli(tmp_path / "ws3", "index", str(inner)))  # the other way round
    assert f"{outer.resolve()} holds {inner.resolve()} ({outer.resolve()}: already indexed)" in line
    line = _one_line_error(_cli(tmp_path / "ws2", "index", str(outer), str(inner)))
    assert "also given" in line
    rt = Ragtune(ws, progress=False)
    assert rt.status()["n_docs"] == 3 and len(rt.versions()) == 1
    # a JSONL file inside an indexed folder is not read by it: no overlap
    _jsonl(inner / "extra.jsonl", DOCS[:2])
    assert rt.index([inner / "extra.jsonl"]).n_docs == 5
    # dropping the inner folder and indexing the outer one in the same call is fine
    assert rt.index([outer], remove=[inner]).n_docs == 2 + 4


def test_reindexing_a_changed_source_updates_only_it(tmp_path, tiny_config, two_sources):
    docs, more = two_sources
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    v1 = rt.index([docs, more]).version
    again = rt.index([str(more)])
    assert not again.written and again.version == v1 and again.embedded == 0
    _jsonl(more, [{**DOCS[0], "text": "Something else entirely."}, DOCS[1], DOCS[5]])  # d1 changed, d3 gone, d6 new
    rep = rt.index([more])
    assert (rep.added, rep.changed, rep.removed, rep.embedded, rep.n_docs) == (1, 1, 1, 2, 8)
    by_source = {s.source: s for s in rep.sources}
    assert (by_source[str(more.resolve())].status, by_source[str(more.resolve())].removed) == ("updated", 1)
    assert by_source[str(docs.resolve())].status == "kept"
    # the other source's vectors were reused exactly
    serving = rt.serving()
    old = np.load(rt.ws.version_dir(v1) / "vectors.npy")
    assert np.array_equal(serving.vectors()[serving.docs.ids.index("note3.md#0")], old[3])
    assert "d3" not in serving.docs.ids and "d6" in serving.docs.ids
    assert rep["version"] == rep.version and rep.to_dict()["sources"][0]["source"] == str(docs.resolve())


def test_replace_drops_the_other_sources(tmp_path, tiny_config, two_sources):
    docs, more = two_sources
    ws = tmp_path / "ws"
    rt = Ragtune.init(ws, tiny_config, progress=False)
    rt.index([docs, more])
    r = _cli(ws, "index", "--replace", str(more), "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["n_docs"] == 3 and rep["removed"] == 5
    assert {s["source"]: s["status"] for s in rep["sources"]} == {str(docs.resolve()): "removed", str(more.resolve()): "unchanged"}
    assert Ragtune(ws).status()["sources"] == [{"source": str(more.resolve()), "n_docs": 3}]


def test_an_id_two_sources_produce_is_an_error_naming_both(tmp_path, tiny_config, two_sources):
    _docs, more = two_sources
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    v1 = rt.index([more]).version
    clash = _jsonl(tmp_path / "clash.jsonl", [{"id": "d2", "text": "another d2"}])
    with pytest.raises(InputError) as exc:
        rt.index([clash])
    msg = str(exc.value)
    assert "'d2'" in msg and str(clash.resolve()) in msg and str(more.resolve()) in msg and "replace=True" in msg
    assert "`ragtune index --replace SOURCES`" in exc.value.cli_message()  # the CLI's wording
    with pytest.raises(InputError, match=r"duplicate document id 'd2'.*more\.jsonl has it too"):
        rt.index([more, clash])  # both given at once
    assert rt.current_version == v1
    assert rt.index([clash], replace=True).n_docs == 1  # replacing: no clash


def test_doc_stores_from_before_sources_keep_their_docs(tmp_path, tiny_config, two_sources, caplog):
    docs, more = two_sources
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    v1 = rt.index([more]).version
    con = sqlite3.connect(rt.ws.version_dir(v1) / "docs.sqlite")  # what an older ragtune wrote: no source column
    con.execute("ALTER TABLE docs DROP COLUMN source")
    con.commit()
    con.close()
    rt = Ragtune(tmp_path / "ws", progress=False)
    assert rt.status()["sources"] == [{"source": "", "n_docs": 3}]
    with caplog.at_level("WARNING"):
        rep = rt.index([docs])  # a plain re-index keeps untracked docs, and says so
    assert "3 documents indexed before sources were tracked are kept" in caplog.text
    assert rep.n_docs == 8 and {s.source: s.status for s in rep.sources}[""] == "kept"
    rep = rt.index([more])  # the source that produces their ids adopts them: nothing is re-embedded
    assert rep.embedded == 0 and rep.n_docs == 8 and {s.source: s.status for s in rep.sources}[""] == "adopted"
    assert [s["source"] for s in rt.status()["sources"]] == [str(docs.resolve()), str(more.resolve())]


def test_sources_must_be_paths(workspace):
    with pytest.raises(InputError, match="sources must be a path or a list of paths, got 42"):
        workspace.index(42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no source given"):
        workspace.index([])


# -- model changes ------------------------------------------------------------------------------
def test_init_with_another_model_on_an_indexed_workspace_refuses(tmp_path, tiny_model, other_model, docs_jsonl):
    ws = tmp_path / "ws"
    assert _cli(ws, "init", "--model", tiny_model).exit_code == 0
    assert _cli(ws, "index", str(docs_jsonl)).exit_code == 0
    before = {p.relative_to(ws): p.read_bytes() for p in ws.rglob("*") if p.is_file() and p.name != "refresh.lock"}
    line = _one_line_error(_cli(ws, "init", "--model", other_model))
    assert f"model.name {tiny_model!r} -> {other_model!r}" in line and "--reindex" in line and "new workspace" in line
    line = _one_line_error(_cli(ws, "init", "--query-prefix", "query: "))
    assert "model.query_prefix '' -> 'query: '" in line
    after = {p.relative_to(ws): p.read_bytes() for p in ws.rglob("*") if p.is_file() and p.name != "refresh.lock"}
    assert after == before
    assert _cli(ws, "init", "--model", tiny_model, "--index-kind", "flat").exit_code == 0  # the same model: fine


def test_init_reindex_with_a_model_that_does_not_load_changes_nothing(tmp_path, tiny_model, docs_jsonl):
    ws = tmp_path / "ws"
    assert _cli(ws, "init", "--model", tiny_model).exit_code == 0
    assert _cli(ws, "index", str(docs_jsonl)).exit_code == 0
    before = {p.relative_to(ws): p.read_bytes() for p in ws.rglob("*") if p.is_file() and p.name != "refresh.lock"}
    (tmp_path / "no-such-model").mkdir()  # a directory that holds no model: init takes it, loading it fails
    line = _one_line_error(_cli(ws, "init", "--model", str(tmp_path / "no-such-model"), "--reindex"))
    assert "no-such-model" in line
    after = {p.relative_to(ws): p.read_bytes() for p in ws.rglob("*") if p.is_file() and p.name != "refresh.lock"}
    assert after == before


def test_reindex_switches_the_model_and_search_works(tmp_path, tiny_model, other_model, docs_jsonl):
    ws = tmp_path / "ws"
    assert _cli(ws, "init", "--model", tiny_model).exit_code == 0
    assert _cli(ws, "index", str(docs_jsonl)).exit_code == 0
    r = _cli(ws, "init", "--model", other_model, "--reindex", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["model"] == other_model and out["reindex"]["reindexed"] and out["reindex"]["embedded"] == len(DOCS)
    rt = Ragtune(ws, progress=False)
    name = rt.current_version
    assert name == "v0002" and rt.serving().spec.base == other_model and rt.serving().vectors().shape == (len(DOCS), 16)
    assert json.loads((rt.ws.version_dir(name) / "config.json").read_text())["model"]["name"] == other_model
    assert rt.status()["model_changes"] == [] and rt.status()["sources"] == [{"source": str(docs_jsonl.resolve()), "n_docs": len(DOCS)}]
    hits = rt.search(DOCS[2]["title"] + " " + DOCS[2]["text"], k=3, log=False)
    assert hits[0].doc_id == "d3"
    assert not rt.reindex().written  # the configured model already serves


def test_hand_edited_model_is_detected_and_search_keeps_the_serving_model(tmp_path, tiny_config, other_model, docs_jsonl, caplog):
    ws = tmp_path / "ws"
    rt = Ragtune.init(ws, tiny_config, progress=False)
    v1 = rt.index([docs_jsonl]).version
    data = json.loads(rt.ws.config_path.read_text())
    data["model"]["name"] = other_model
    rt.ws.config_path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="ragtune.api"):
        edited = Ragtune(ws, progress=False)
        Ragtune(ws, progress=False)
    warnings = [r.getMessage() for r in caplog.records if "model.name" in r.getMessage()]
    assert len(warnings) == 1 and "ragtune index --reindex" in warnings[0] and v1 in warnings[0]
    assert edited.search("reset", k=3, log=False)[0].doc_id  # still the serving (tiny) model
    s = edited.status()
    assert s["model_changes"] == [{"key": "model.name", "configured": other_model, "serving": tiny_config.model.name}]
    assert "ragtune index --reindex" in s["model_fix"]
    r = _cli(ws, "status")
    assert r.exit_code == 0 and "warning     model.name" in r.output and "ragtune index --reindex" in r.output
    # an index run keeps the serving model, and its version records that model, not the edited one
    extra = _jsonl(tmp_path / "extra.jsonl", [{"id": "x1", "text": "an extra doc"}])
    v2 = edited.index([extra]).version
    assert edited.serving().spec.base == tiny_config.model.name
    assert json.loads((edited.ws.version_dir(v2) / "config.json").read_text())["model"]["name"] == tiny_config.model.name
    r = _cli(ws, "index", "--reindex", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reindexed"] and Ragtune(ws).status()["model_changes"] == []


# -- messages -----------------------------------------------------------------------------------
def test_bad_sources_are_one_line_errors(tmp_path, tiny_model):
    ws = tmp_path / "ws"
    assert _cli(ws, "init", "--model", tiny_model).exit_code == 0
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n')
    line = _one_line_error(_cli(ws, "index", str(beir)))
    assert "looks like a BEIR folder (it has queries.jsonl and qrels/) but has no corpus.jsonl" in line
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "a.pdf").write_bytes(b"%PDF")
    line = _one_line_error(_cli(ws, "index", str(pdfs)))
    assert "no text files to index (looked for *.txt, *.md" in line and "only .pdf files" in line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b" "text": "y"}\n{"id": "c", "text": \n')
    line = _one_line_error(_cli(ws, "index", str(bad)))
    assert f"{bad}:2: malformed JSON (Expecting ',' delimiter at column 12)" in line
    bad.write_text('{"id": "c", "text": \n')
    assert f"{bad}:1: malformed JSON (Expecting value at end of line)" in _one_line_error(_cli(ws, "index", str(bad)))
    assert "give SOURCES" in _cli(ws, "index").output and _cli(ws, "index").exit_code == 2


def test_init_below_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    line = _one_line_error(_cli(tmp_path / "ws", "init", str(blocker / "ws")))
    assert f"{blocker} is a file" in line
    line = _one_line_error(_cli(tmp_path / "ws", "init", str(blocker)))
    assert "it is a file" in line
    with pytest.raises(WorkspaceError, match="is a file"):
        Ragtune.init(blocker / "deeper" / "ws", RagtuneConfig())


def test_init_json(tmp_path, tiny_model):
    r = _cli(tmp_path / "ws", "init", "--model", tiny_model, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["created"] and out["model"] == tiny_model and out["reindex"] is None and out["workspace"] == str((tmp_path / "ws").resolve())
    assert json.loads(_cli(tmp_path / "ws", "init", "--json").output)["created"] is False


def test_a_deleted_source_is_removed_by_name(tmp_path, tiny_config, two_sources):
    import shutil

    docs, more = two_sources
    ws = tmp_path / "ws"
    Ragtune.init(ws, tiny_config, progress=False).index([docs, more])
    shutil.rmtree(docs)  # the folder is gone: only --remove can drop its documents
    line = _one_line_error(_cli(ws, "index", "--remove", str(tmp_path / "never-indexed")))
    assert "never-indexed is not an indexed source" in line and "ragtune status" in line
    r = _cli(ws, "index", "--remove", str(docs), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["n_docs"] == 3 and {s["source"]: s["status"] for s in out["sources"]}[str(docs.resolve())] == "removed"
    rt = Ragtune(ws, progress=False)
    assert [s["source"] for s in rt.status()["sources"]] == [str(more.resolve())]
    assert all(h.doc_id.startswith("d") for h in rt.search("router note restart", k=3, log=False))
