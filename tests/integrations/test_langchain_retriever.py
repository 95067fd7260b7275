"""RagtuneRetriever: LangChain's standard retriever tests plus logging, feedback and version pickup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ragtune import FeedbackConflictError, FeedbackError, Ragtune
from ragtune.integrations.langchain import RagtuneRetriever


class TestRagtuneRetrieverStandard(RetrieversIntegrationTests):
    ws_path: str = ""

    @pytest.fixture(autouse=True)
    def _workspace(self, request: pytest.FixtureRequest, workspace: Ragtune) -> None:
        request.cls.ws_path = str(workspace.ws.root)

    @property
    def retriever_constructor(self) -> type[RagtuneRetriever]:
        return RagtuneRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"workspace": self.ws_path, "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return "how do I reset the router?"


def test_documents_carry_ids_and_metadata(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root, k=3)
    docs = retriever.invoke("reset the router")
    assert len(docs) == 3
    qid = docs[0].metadata["ragtune_query_id"]
    assert qid and all(d.metadata["ragtune_query_id"] == qid for d in docs)
    assert [d.metadata["rank"] for d in docs] == [1, 2, 3]
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    first = docs[0]
    assert first.id == first.metadata["doc_id"] and first.metadata["title"]
    assert first.metadata["ragtune_version"] == workspace.current_version
    docs_store = workspace.serving().docs
    assert first.page_content == docs_store.get([docs_store.positions([first.id])[first.id]])[0].text
    assert len(retriever.invoke("reset the router", k=5)) == 5


def test_logs_impressions_by_default_and_not_when_off(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root, k=2)
    retriever.invoke("guest network")
    assert workspace.feedback.stats()["queries"] == 1
    docs = retriever.invoke("guest network", log=False)
    assert docs[0].metadata["ragtune_query_id"] is None
    quiet = RagtuneRetriever(workspace=workspace.ws.root, k=2, log=False)
    quiet.invoke("guest network")
    assert workspace.feedback.stats()["queries"] == 1
    with pytest.raises(FeedbackError, match="without logging"):
        retriever.record_click(docs[0])
    with pytest.raises(FeedbackError, match="no ragtune metadata"):
        retriever.record_click(Document(page_content="from another retriever"))


def test_record_click_and_rating(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root)
    docs = retriever.invoke("change the wifi password")
    retriever.record_click(docs[1])
    retriever.record_rating(docs[0], -1)
    retriever.record_click(docs[0].metadata["ragtune_query_id"], docs[2].metadata["doc_id"], dwell=3.5)
    stats = workspace.feedback.stats()
    assert stats["clicks"] == 2 and stats["ratings"] == 1
    with pytest.raises(FeedbackError):
        retriever.record_click("some-query-id")  # no doc id
    with pytest.raises(FeedbackError):
        retriever.record_click(docs[0].metadata["ragtune_query_id"], "no-such-doc")
    with pytest.raises(FeedbackError):
        retriever.record_click(Document(page_content="x", metadata={"ragtune_query_id": "q"}))


def test_a_retried_click_or_rating_with_its_feedback_id_counts_once(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root)
    docs = retriever.invoke("change the wifi password")
    assert retriever.record_click(docs[1], feedback_id="click-1") is True
    assert retriever.record_click(docs[1], feedback_id="click-1") is False  # the front end retried
    assert retriever.record_rating(docs[0], 1, feedback_id="rate-1") is True
    assert retriever.record_rating(docs[0], 1, feedback_id="rate-1") is False
    assert (workspace.feedback.stats()["clicks"], workspace.feedback.stats()["ratings"]) == (1, 1)
    with pytest.raises(FeedbackConflictError):
        retriever.record_click(docs[2], feedback_id="click-1")  # the same id for another click


async def test_async_invoke_logs_and_honours_k(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root, k=2)
    docs = await retriever.ainvoke("firmware updates", k=3)
    assert len(docs) == 3 and docs[0].metadata["ragtune_query_id"]
    batch = await retriever.abatch(["firmware", "time zone"])
    assert [len(b) for b in batch] == [2, 2]


def test_picks_up_a_new_version_without_rebuild(workspace: Ragtune, tmp_path: Path) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root, k=8)
    before = retriever.invoke("status light")
    v1 = before[0].metadata["ragtune_version"]
    # another process (here: another facade) re-indexes with a changed and a new doc
    other = Ragtune(workspace.ws.root, progress=False)
    from tests.conftest import DOCS

    docs = [dict(d) for d in DOCS]
    docs[4]["text"] = "A blinking amber light means the router is updating."
    docs.append({"id": "d9", "title": "Mesh", "text": "Add a mesh satellite to extend coverage."})
    src = tmp_path / "docs2.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    other.index([src], replace=True)  # the corpus moved to another file
    after = retriever.invoke("status light", k=9)
    assert after[0].metadata["ragtune_version"] != v1
    assert len(after) == 9 and "d9" in {d.metadata["doc_id"] for d in after}
    d5 = next(d for d in after if d.metadata["doc_id"] == "d5")
    assert "amber" in d5.page_content
    retriever.record_click(d5)


def test_clicks_become_training_pairs(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever(workspace=workspace.ws.root, k=4)
    clicked = {}
    for q in ["reset to factory settings", "change wifi password", "pause internet for kids", "host a game server", "set the clock"]:
        docs = retriever.invoke(q)
        target = docs[-1]  # users pick something lower in the list
        retriever.record_click(target)
        clicked[q] = target.metadata["doc_id"]
    mined = Ragtune(workspace.ws.root, progress=False).mine()
    assert mined.train, mined.report()
    pairs = {(ex.query, ex.positive_id) for ex in mined.train}
    held = {h.query for h in mined.heldout}
    trained = [q for q in clicked if q not in held]
    assert trained
    for q in trained:
        assert (q, clicked[q]) in pairs


def test_from_ragtune_shares_the_instance(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever.from_ragtune(workspace, k=1)
    assert retriever.ragtune is workspace
    assert len(retriever.invoke("guest")) == 1
