from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ragtune import InputError, Ragtune, WorkspaceError
from tests.conftest import DOCS


def test_search_returns_hits_with_ranks_and_query_id(workspace):
    hits = workspace.search("hold the reset button", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert hits.query_id and hits.version == workspace.current_version
    assert {h.doc_id for h in hits} <= {d["id"] for d in DOCS}
    assert workspace.search("x", k=3, log=False).query_id is None


def test_exact_document_text_finds_itself(workspace):
    d = DOCS[2]
    hits = workspace.search(f"{d['title']} {d['text']}", k=1, log=False)
    assert hits[0].doc_id == d["id"] and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_reindex_is_idempotent_and_incremental(workspace, docs_jsonl):
    v1 = workspace.current_version
    again = workspace.index([docs_jsonl])
    assert again["embedded"] == 0 and again["version"] == v1
    rows = [json.loads(line) for line in docs_jsonl.read_text().splitlines()]
    rows[0]["text"] = "Completely new text about antennas."
    rows = [r for r in rows if r["id"] != "d8"] + [{"id": "d9", "text": "A brand new document."}]
    docs_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = workspace.index([docs_jsonl])
    assert (rep["added"], rep["changed"], rep["removed"], rep["embedded"]) == (1, 1, 1, 2)
    assert rep["version"] != v1
    ids = {h.doc_id for h in workspace.search("antennas", k=20, log=False)}
    assert "d8" not in ids and "d9" in ids
    # unchanged docs kept their vectors exactly
    serving = workspace.serving()
    old = np.load(workspace.ws.version_dir(v1) / "vectors.npy")
    assert np.allclose(serving.vectors()[serving.docs.ids.index("d2")], old[1])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"id": "a", "text": "x"}\n{oops}\n', "bad.jsonl:2: malformed JSON"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "bad.jsonl:2: duplicate document id"),
        ('{"id": "a", "text": ""}\n', "bad.jsonl:1: document 'a' has empty text"),
    ],
)
def test_bad_input_leaves_old_index_answering(workspace, tmp_path, content, needle):
    before = workspace.current_version
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(InputError, match=re.escape(needle)):
        workspace.index([bad])
    assert workspace.current_version == before
    assert len(workspace.search("reset", k=3, log=False)) == 3


def test_non_utf8_and_missing_source_leave_index(workspace, tmp_path):
    before = workspace.current_version
    d = tmp_path / "texts"
    d.mkdir()
    (d / "ok.md").write_text("fine text")
    (d / "latin1.txt").write_bytes(b"r\xe9sum\xe9")
    with pytest.raises(InputError, match=r"latin1\.txt: not UTF-8"):
        workspace.index([d])
    with pytest.raises(InputError, match="no such file"):
        workspace.index([tmp_path / "missing"])
    assert workspace.current_version == before and workspace.search("reset", k=1, log=False)


def test_text_directory_chunks(tmp_path, tiny_config):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "long.md").write_text(" ".join(f"word{i}" for i in range(400)))
    rt = Ragtune.init(tmp_path / "ws", tiny_config.with_overrides({"chunk.chunk_tokens": 100, "chunk.overlap_tokens": 20}), progress=False)
    rep = rt.index([d])
    assert rep["n_docs"] > 1
    assert rt.serving().docs.ids[0] == "long.md#0"


def test_open_missing_workspace_is_clear(tmp_path):
    with pytest.raises(WorkspaceError, match=r"no ragtune workspace at .*; create one with Ragtune.init\(") as caught:
        Ragtune(tmp_path / "nothing")
    assert "run `ragtune init" in caught.value.cli_message() and "--workspace" not in str(caught.value)  # Python names calls, the CLI commands
    (tmp_path / "data.jsonl").write_text("{}")
    with pytest.raises(WorkspaceError, match=r"data\.jsonl is a file; pass the workspace directory"):
        Ragtune(tmp_path / "data.jsonl")


def test_search_before_index(tmp_path, tiny_config):
    rt = Ragtune.init(tmp_path / "ws", tiny_config)
    with pytest.raises(WorkspaceError, match="no index yet"):
        rt.search("hello")
    with pytest.raises(InputError):
        Ragtune.init(tmp_path / "ws2", tiny_config).search("")


def _mini_beir(root, docs):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d["id"], "title": d["title"], "text": d["text"]}) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"{d['title']} {d['text']}", "metadata": {"secret": d["id"]}}) + "\n" for i, d in enumerate(docs)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{d['id']}\t1\n" for i, d in enumerate(docs)))


def test_eval_beir_indexes_then_reuses_and_refuses_other_corpus(tmp_path, tiny_config):
    beir = tmp_path / "beir"
    _mini_beir(beir, DOCS)
    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    m = rt.evaluate_beir(beir, "test")
    # each query is its doc's exact text: perfect retrieval
    assert m["ndcg@10"] == pytest.approx(1.0) and m["n_queries"] == len(DOCS) and m["n_docs"] == len(DOCS)
    v = rt.current_version
    assert rt.evaluate_beir(beir, "test")["ndcg@10"] == pytest.approx(1.0) and rt.current_version == v
    other = tmp_path / "other"
    _mini_beir(other, DOCS[:4])
    with pytest.raises(WorkspaceError, match="different corpus"):
        rt.evaluate_beir(other, "test")


def test_status(workspace):
    s = workspace.status()
    assert s["n_docs"] == len(DOCS) and s["current_version"] == "v0001" and s["size_bytes"] > 0


def test_a_document_longer_than_the_models_limit_is_reported(workspace, tmp_path, caplog):
    """JSONL rows are not chunked: one past the model's token limit is embedded by its start only, and index says so."""
    path = tmp_path / "long.jsonl"
    long_text = " ".join(f"word{i}" for i in range(400))  # the tiny model reads 64 tokens
    path.write_text(json.dumps({"id": "long", "text": long_text}) + "\n" + json.dumps({"id": "short", "text": "a short one"}) + "\n")
    with caplog.at_level("WARNING", logger="ragtune"):
        report = workspace.index([path])
    assert report.truncated == 1 and report.to_dict()["truncated"] == 1
    assert "1 of the 2 documents embedded are longer than the model's 64-token limit (e.g. 'long'" in caplog.text
    assert "split long ones before indexing" in caplog.text
    again = workspace.index([path])  # nothing embedded again: nothing to report
    assert again.truncated == 0
