"""RagtuneRetriever and RagtuneEmbedding for LlamaIndex: nodes, logging, feedback, async, version pickup, no network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from ragtune import ConfigError, FeedbackConflictError, FeedbackError, InputError, Ragtune
from ragtune.integrations.llamaindex import RagtuneEmbedding, RagtuneRetriever


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every connection attempt (NLTK or tiktoken downloads, the hub) is recorded and refused; the test then fails."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object, *args: object) -> None:
        attempts.append(address)
        raise OSError(f"network access in a test: {address!r}")

    def refuse_lookup(host: object, *args: object, **kwargs: object) -> list[object]:
        attempts.append(host)
        raise OSError(f"name lookup in a test: {host!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    yield attempts
    assert attempts == [], f"the test tried to reach the network: {attempts}"


def _record(rt: Ragtune, qid: str):  # type: ignore[no-untyped-def]
    return next(r for r in rt.feedback.records() if r.qid == qid)


def test_retrieve_returns_nodes_with_ids_and_metadata(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace.ws.root, similarity_top_k=3)
    nodes = retriever.retrieve("reset the router")
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    qid = nodes[0].node.metadata["ragtune_query_id"]
    assert qid and all(n.node.metadata["ragtune_query_id"] == qid for n in nodes)
    assert [n.node.metadata["rank"] for n in nodes] == [1, 2, 3]
    scores = [n.score for n in nodes]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    expected = workspace.search("reset the router", k=3, log=False)
    assert [n.node.node_id for n in nodes] == [h.doc_id for h in expected] == [n.node.metadata["doc_id"] for n in nodes]
    assert np.allclose(scores, [h.score for h in expected], atol=1e-5)
    first = nodes[0].node
    assert first.get_content() == expected[0].text and first.metadata["title"] == expected[0].title
    assert first.metadata["ragtune_version"] == workspace.current_version and first.metadata["ragtune_trial"] is None
    # the bookkeeping stays out of what an LLM sees; the title stays in
    llm_text = first.get_content(metadata_mode=MetadataMode.LLM)
    assert qid not in llm_text and "ragtune_version" not in llm_text and expected[0].title in llm_text
    assert "similarity_top_k=3" in repr(retriever)


def test_impressions_are_logged_and_not_when_off(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace, similarity_top_k=2)
    nodes = retriever.retrieve(QueryBundle("guest network"))
    rec = _record(workspace, nodes[0].node.metadata["ragtune_query_id"])
    assert rec.text == "guest network"
    assert [(im.doc_id, im.rank) for im in rec.impressions] == [(n.node.node_id, i) for i, n in enumerate(nodes, 1)]
    quiet = RagtuneRetriever(workspace, similarity_top_k=2, log=False)
    unlogged = quiet.retrieve("guest network")
    assert unlogged[0].node.metadata["ragtune_query_id"] is None
    assert workspace.feedback.stats()["queries"] == 1
    with pytest.raises(FeedbackError, match="log=False"):
        quiet.record_click(unlogged[0])


def test_record_click_and_rating_reach_the_log(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace, similarity_top_k=4)
    nodes = retriever.retrieve("change the wifi password")
    qid = nodes[0].node.metadata["ragtune_query_id"]
    retriever.record_click(nodes[2], dwell=4.0)
    retriever.record_click(nodes[1].node)  # the bare node works too
    retriever.record_rating(nodes[0], -1)
    retriever.record_click(nodes[3].node.node_id, query_id=qid)
    rec = _record(workspace, qid)
    ids = [n.node.node_id for n in nodes]
    assert rec.clicks == [(ids[2], 4.0), (ids[1], None), (ids[3], None)]
    assert rec.ratings == [(ids[0], -1)]
    with pytest.raises(FeedbackError, match="query_id"):
        retriever.record_click(ids[0])  # a doc id needs its query id
    with pytest.raises(FeedbackError, match="no-such-doc"):
        retriever.record_click("no-such-doc", query_id=qid)
    with pytest.raises(FeedbackError, match="doc_id"):
        retriever.record_click(TextNode(text="x", metadata={"ragtune_query_id": qid}))
    with pytest.raises(FeedbackError, match="no ragtune metadata"):
        retriever.record_click(TextNode(text="from another retriever"))
    with pytest.raises(FeedbackError):
        retriever.record_rating(nodes[0], 2)
    assert workspace.feedback.stats()["clicks"] == 3


def test_a_retried_click_or_rating_with_its_feedback_id_counts_once(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace, similarity_top_k=4)
    nodes = retriever.retrieve("change the wifi password")
    assert retriever.record_click(nodes[1], feedback_id="click-1") is True
    assert retriever.record_click(nodes[1], feedback_id="click-1") is False  # the front end retried
    assert retriever.record_rating(nodes[0], -1, feedback_id="rate-1") is True
    assert retriever.record_rating(nodes[0], -1, feedback_id="rate-1") is False
    assert (workspace.feedback.stats()["clicks"], workspace.feedback.stats()["ratings"]) == (1, 1)
    with pytest.raises(FeedbackConflictError):
        retriever.record_rating(nodes[0], 1, feedback_id="rate-1")  # the same id for another verdict


def test_without_the_extra_the_error_names_it() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['llama_index.core.base.base_retriever'] = None; import ragtune.integrations.llamaindex"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "MissingDependencyError" in proc.stderr and "pip install 'ragtune[llamaindex]'" in proc.stderr


def test_bad_top_k_is_refused() -> None:
    with pytest.raises(InputError, match="similarity_top_k"):
        RagtuneRetriever(similarity_top_k=0)


async def test_async_retrieve_logs(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace, similarity_top_k=2)
    nodes = await retriever.aretrieve("firmware updates")
    assert len(nodes) == 2
    qid = nodes[0].node.metadata["ragtune_query_id"]
    retriever.record_click(nodes[1])
    assert _record(workspace, qid).clicks == [(nodes[1].node.node_id, None)]


def _reindex_changed(workspace: Ragtune, tmp_path: Path) -> None:
    from tests.conftest import DOCS

    docs = [dict(d) for d in DOCS]
    docs[4]["text"] = "A blinking amber light means the router is updating."
    docs.append({"id": "d9", "title": "Mesh", "text": "Add a mesh satellite to extend coverage."})
    src = tmp_path / "docs2.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    Ragtune(workspace.ws.root, progress=False).index([src], replace=True)  # another process's facade


def test_retriever_follows_a_new_version(workspace: Ragtune, tmp_path: Path) -> None:
    retriever = RagtuneRetriever(workspace.ws.root, similarity_top_k=9)
    v1 = retriever.retrieve("status light")[0].node.metadata["ragtune_version"]
    _reindex_changed(workspace, tmp_path)
    after = retriever.retrieve("status light")
    assert after[0].node.metadata["ragtune_version"] != v1
    assert len(after) == 9 and "d9" in {n.node.node_id for n in after}
    d5 = next(n for n in after if n.node.node_id == "d5")
    assert "amber" in d5.node.get_content()
    retriever.record_click(d5)


def test_embedding_matches_the_facades_embedder(workspace: Ragtune) -> None:
    emb = RagtuneEmbedding(workspace=workspace.ws.root)
    embedder = workspace.embedder()
    q = emb.get_query_embedding("reset the router")
    assert len(q) == embedder.dim and all(type(x) is float for x in q)
    assert np.allclose(q, embedder.encode_queries(["reset the router"])[0], atol=1e-5)
    texts = ["hold the button", "guest network"]
    batch = emb.get_text_embedding_batch(texts)
    assert np.allclose(batch, embedder.encode_documents(texts), atol=1e-5)
    assert np.allclose(emb.get_text_embedding(texts[0]), batch[0], atol=1e-5)
    # a stored vector is what the embedding gives for its document's embed text
    serving = workspace.serving()
    doc = serving.docs.get([0])[0]
    assert np.allclose(emb.get_text_embedding(doc.embed_text), serving.vectors()[0], atol=1e-4)
    assert emb.workspace == str(workspace.ws.root) and emb.class_name() == "RagtuneEmbedding"


def test_embedding_applies_prefixes_like_the_facade(tmp_path: Path, tiny_config, docs_jsonl: Path) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config.with_overrides({"model.query_prefix": "query: ", "model.document_prefix": "passage: "})
    rt = Ragtune.init(tmp_path / "ws", config, progress=False)
    rt.index([docs_jsonl])
    emb = RagtuneEmbedding(workspace=rt)
    plain = RagtuneEmbedding(model=tiny_config.model.name, device="cpu")
    q, d = emb.get_query_embedding("reset"), emb.get_text_embedding("reset")
    assert np.allclose(q, plain.get_text_embedding("query: reset"), atol=1e-5)
    assert np.allclose(d, plain.get_text_embedding("passage: reset"), atol=1e-5)
    assert not np.allclose(q, d, atol=1e-3)
    assert np.allclose(q, rt.embedder().encode_queries(["reset"])[0], atol=1e-5)


def test_embedding_applies_the_query_map(workspace: Ragtune, tmp_path: Path) -> None:
    """A version with a query-side map: queries go through it, texts do not."""
    from dataclasses import replace

    from safetensors.numpy import save_file

    emb = RagtuneEmbedding(workspace=workspace)  # made before the new version: it follows the swap
    serving = workspace.serving()
    dim = serving.embedder.dim
    weight = np.random.default_rng(0).normal(size=(dim, dim)).astype(np.float32)
    save_file({"weight": weight}, str(tmp_path / "qmap.safetensors"))
    spec = replace(serving.spec, query_map=str(tmp_path / "qmap.safetensors"))
    with workspace.ws.lock("index"):
        workspace.ws.write_version(workspace.config, spec, kind="query", parent=serving.name, index_version=serving.info.index_version)
    plain = serving.embedder.encode_documents(["reset the router"])[0]
    mapped = plain @ weight.T
    mapped /= np.linalg.norm(mapped)
    assert np.allclose(emb.get_query_embedding("reset the router"), mapped, atol=1e-4)
    assert np.allclose(emb.get_text_embedding("reset the router"), plain, atol=1e-5)


def test_embedding_follows_a_new_version(workspace: Ragtune, tmp_path: Path) -> None:
    """A re-index with another model (here: the same tiny architecture, other weights) is picked up."""
    from tests.conftest import make_tiny_model

    emb = RagtuneEmbedding(workspace=workspace.ws.root)
    before = emb.get_query_embedding("reset the router")
    other = Ragtune(workspace.ws.root, progress=False)  # another process re-embeds with another model
    other.config = other.config.with_overrides({"model.name": str(make_tiny_model(tmp_path / "other-model", seed=1))})
    assert other.reindex().reindexed
    after = emb.get_query_embedding("reset the router")
    assert not np.allclose(before, after, atol=1e-3)
    assert np.allclose(after, other.embedder().encode_queries(["reset the router"])[0], atol=1e-5)


async def test_embedding_async_paths(workspace: Ragtune) -> None:
    emb = RagtuneEmbedding(workspace=workspace)
    q = await emb.aget_query_embedding("guest wifi")
    t = await emb.aget_text_embedding("guest wifi")
    batch = await emb.aget_text_embedding_batch(["a", "b", "c"])
    assert np.allclose(q, emb.get_query_embedding("guest wifi"), atol=1e-5)
    assert np.allclose(t, emb.get_text_embedding("guest wifi"), atol=1e-5)
    assert len(batch) == 3 and len(batch[0]) == workspace.embedder().dim


def test_embedding_model_mode_and_exclusive_arguments(tiny_model: str, workspace: Ragtune) -> None:
    emb = RagtuneEmbedding(model=tiny_model, device="cpu")
    assert emb.workspace is None and emb.model_name == tiny_model
    vecs = emb.get_text_embedding_batch(["reset the router", "guest network"])
    assert np.allclose(np.linalg.norm(np.array(vecs), axis=1), 1.0, atol=1e-4)
    assert np.allclose(emb.get_query_embedding("reset the router"), vecs[0], atol=1e-5)  # no prefixes: same vector
    with pytest.raises(ConfigError):
        RagtuneEmbedding(workspace=workspace, model=tiny_model)


def test_a_vector_index_over_ragtune_embedding_answers_offline(tiny_model: str) -> None:
    """LlamaIndex's own VectorStoreIndex with RagtuneEmbedding: chunking (tiktoken) and retrieval need no download."""
    from llama_index.core import Document, VectorStoreIndex

    emb = RagtuneEmbedding(model=tiny_model, device="cpu")
    docs = [Document(text=t, id_=str(i)) for i, t in enumerate(["Hold reset for ten seconds.", "Guest networks keep visitors apart.", "Set the time zone."])]
    index = VectorStoreIndex.from_documents(docs, embed_model=emb)
    hits = index.as_retriever(similarity_top_k=1).retrieve("Set the time zone.")
    assert hits[0].node.ref_doc_id == "2"
