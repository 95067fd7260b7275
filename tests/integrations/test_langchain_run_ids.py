"""Run ids: each LangChain retrieval is logged with its run id and trace id; feedback can be given by either."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.context import collect_runs

from ragtune import FeedbackError, InputError, Ragtune, UnknownIdError
from ragtune.integrations.langchain import RagtuneRetriever, rating_from_score


class _RetrieverRuns(BaseCallbackHandler):
    """Records the run ids LangChain gives retriever runs (what an app's own callback would see)."""

    def __init__(self) -> None:
        self.runs: list[tuple[uuid.UUID, uuid.UUID | None]] = []

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs):  # type: ignore[no-untyped-def]
        self.runs.append((run_id, parent_run_id))


def _record(rt: Ragtune, qid: str):  # type: ignore[no-untyped-def]
    return next(r for r in rt.feedback.records() if r.qid == qid)


def test_a_retrieval_records_its_run_id(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever.from_ragtune(workspace, k=3)
    seen = _RetrieverRuns()
    docs = retriever.invoke("reset the router", config={"callbacks": [seen]})
    (run_id, parent), = seen.runs
    assert parent is None
    rec = _record(workspace, docs[0].metadata["ragtune_query_id"])
    assert rec.run_id == str(run_id) and rec.trace_id == str(run_id)  # invoked on its own: it is the root run
    assert workspace.query_id_for_run(run_id) == rec.qid
    assert workspace.query_id_for_run(str(run_id)) == rec.qid


def test_a_given_run_id_is_the_retrievers(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever.from_ragtune(workspace, k=2)
    mine = uuid.uuid4()
    docs = retriever.invoke("guest network", run_id=mine)  # a retriever takes its run id as a keyword, not from config
    assert _record(workspace, docs[0].metadata["ragtune_query_id"]).run_id == str(mine)
    assert retriever.record_feedback(mine, docs[1].metadata["doc_id"], 1) is True
    rec = _record(workspace, docs[0].metadata["ragtune_query_id"])
    assert rec.ratings == [(docs[1].metadata["doc_id"], 1)]


def test_inside_a_chain_the_trace_id_comes_from_the_tracer(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever.from_ragtune(workspace, k=3)
    chain = RunnableLambda(lambda q: f"{q} please") | retriever
    seen = _RetrieverRuns()
    root = uuid.uuid4()
    with collect_runs() as cb:  # how an app gets the run id it sends LangSmith feedback for
        docs = chain.invoke("change the wifi password", config={"callbacks": [seen], "run_id": root})
    assert cb.traced_runs[0].id == root
    (run_id, parent), = seen.runs
    assert parent is not None and run_id != root
    rec = _record(workspace, docs[0].metadata["ragtune_query_id"])
    assert rec.run_id == str(run_id) and rec.trace_id == str(root)
    # the app's one line: the chain (root) run's feedback, forwarded
    retriever.record_feedback(root, docs[2].metadata["doc_id"], 0)
    retriever.record_feedback(run_id, docs[0].metadata["doc_id"], True)
    assert _record(workspace, rec.qid).ratings == [(docs[2].metadata["doc_id"], -1), (docs[0].metadata["doc_id"], 1)]


def test_without_a_tracer_a_nested_retrieval_records_its_parent_as_the_trace(workspace: Ragtune) -> None:
    """A chain one level deep, invoked with config={"run_id": ...} and no tracer: that id finds the retrieval."""
    retriever = RagtuneRetriever.from_ragtune(workspace, k=2)
    seen = _RetrieverRuns()
    root = uuid.uuid4()
    docs = (RunnableLambda(lambda q: q) | retriever).invoke("firmware", config={"callbacks": [seen], "run_id": root})
    (run_id, parent), = seen.runs
    rec = _record(workspace, docs[0].metadata["ragtune_query_id"])
    assert parent == root and rec.run_id == str(run_id) and rec.trace_id == str(root)
    retriever.record_feedback(run_id, docs[0].metadata["doc_id"], -1)
    retriever.record_feedback(root, docs[1].metadata["doc_id"], 1)
    assert workspace.feedback.stats()["ratings"] == 2


def test_a_run_id_in_the_config_names_the_retrieval(workspace: Ragtune) -> None:
    """langchain-core's retrievers read a run id only as a keyword; config={"run_id": ...} works too."""
    retriever = RagtuneRetriever.from_ragtune(workspace, k=2)
    mine = uuid.uuid4()
    docs = retriever.invoke("guest network", config={"run_id": mine})
    assert _record(workspace, docs[0].metadata["ragtune_query_id"]).run_id == str(mine)
    retriever.record_feedback(mine, docs[0].metadata["doc_id"], 1)
    assert workspace.feedback.stats()["ratings"] == 1


async def test_async_retrieval_records_its_run_id(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever.from_ragtune(workspace, k=2)
    seen = _RetrieverRuns()
    docs = await retriever.ainvoke("time zone", config={"callbacks": [seen]})
    (run_id, _), = seen.runs
    assert _record(workspace, docs[0].metadata["ragtune_query_id"]).run_id == str(run_id)


def test_a_run_that_retrieved_twice_rates_the_search_that_showed_the_doc(workspace: Ragtune) -> None:
    root = str(uuid.uuid4())
    first = workspace.search("reset the router", k=8, trace_id=root)  # shows every doc
    second = workspace.search("port forwarding game server", k=1, trace_id=root)
    both = second[0].doc_id
    only_first = next(h.doc_id for h in first if h.doc_id != both)
    assert workspace.query_id_for_run(root, only_first) == first.query_id
    assert workspace.query_id_for_run(root, both) == second.query_id  # shown by both: the newest
    assert workspace.query_id_for_run(root) == second.query_id
    workspace.rate(workspace.query_id_for_run(root, only_first), only_first, 1)
    assert _record(workspace, first.query_id).ratings == [(only_first, 1)]


def test_a_doc_no_search_of_the_run_showed_is_an_unknown_id(workspace: Ragtune) -> None:
    root = str(uuid.uuid4())
    shown = workspace.search("port forwarding game server", k=1, trace_id=root)
    unseen = next(h.doc_id for h in workspace.search("reset the router", k=8, log=False) if h.doc_id != shown[0].doc_id)
    with pytest.raises(UnknownIdError, match=f"doc id '{unseen}' was not shown by any search of run id '{root}'"):
        workspace.query_id_for_run(root, unseen)
    retriever = RagtuneRetriever.from_ragtune(workspace, k=2)
    with pytest.raises(UnknownIdError, match=unseen):
        retriever.record_feedback(root, unseen, 1)
    assert _record(workspace, shown.query_id).ratings == []
    assert workspace.query_id_for_run(root, shown[0].doc_id) == shown.query_id


def test_unknown_run_ids_and_bad_scores_error(workspace: Ragtune) -> None:
    retriever = RagtuneRetriever.from_ragtune(workspace, k=2)
    docs = retriever.invoke("guest network", log=False, run_id=uuid.uuid4())  # not logged: no run id either
    unknown = uuid.uuid4()
    with pytest.raises(FeedbackError, match=str(unknown)):
        retriever.record_feedback(unknown, docs[0].metadata["doc_id"], 1)
    with pytest.raises(FeedbackError, match="unknown run id 'nope'"):
        workspace.query_id_for_run("nope")
    with pytest.raises(InputError, match="run_id"):
        workspace.query_id_for_run("")
    with pytest.raises(InputError, match="trace_id"):
        workspace.search("guest", k=1, trace_id=5)  # type: ignore[arg-type]
    logged = retriever.invoke("guest network", run_id=(rid := uuid.uuid4()))
    for bad in (0.5, 2, None, "1", float("nan")):
        with pytest.raises(FeedbackError, match="score"):
            retriever.record_feedback(rid, logged[0].metadata["doc_id"], bad)
    with pytest.raises(FeedbackError, match="no-such-doc"):
        retriever.record_feedback(rid, "no-such-doc", 1)
    assert workspace.feedback.stats()["ratings"] == 0
    assert [rating_from_score(s) for s in (1, 1.0, True, 0, 0.0, False, -1)] == [1, 1, 1, -1, -1, -1, -1]


def test_run_ids_survive_export_and_import(workspace: Ragtune, tmp_path: Path, tiny_config, docs_jsonl: Path) -> None:  # type: ignore[no-untyped-def]
    run, trace = str(uuid.uuid4()), str(uuid.uuid4())
    hits = workspace.search("reset the router", k=2, run_id=run, trace_id=trace)
    plain = workspace.search("guest network", k=2)
    workspace.click(hits.query_id, hits[0].doc_id)
    events = list(workspace.feedback.export_events())
    by_qid = {e["query_id"]: e for e in events if e["type"] == "query"}
    assert by_qid[hits.query_id]["run_id"] == run and by_qid[hits.query_id]["trace_id"] == trace
    assert "run_id" not in by_qid[plain.query_id] and "trace_id" not in by_qid[plain.query_id]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    other = Ragtune.init(tmp_path / "ws2", tiny_config, progress=False)
    other.index([docs_jsonl])
    report = other.import_feedback(path)
    assert report.queries == 2 and report.clicks == 1
    assert other.query_id_for_run(run) == other.query_id_for_run(trace) == hits.query_id
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**by_qid[hits.query_id], "query_id": "other", "run_id": 7}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="'run_id' must be a non-empty string"):
        other.import_feedback(bad)


def test_an_old_log_gains_the_run_columns(tmp_path: Path) -> None:
    import sqlite3

    from ragtune.feedback import FeedbackLog, Impression

    path = tmp_path / "feedback.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE queries (qid TEXT PRIMARY KEY, text TEXT NOT NULL, ts REAL NOT NULL, version TEXT, "
        "randomized INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT 'search');"
        "INSERT INTO queries(qid, text, ts) VALUES ('old', 'an old query', 1.0);"
    )
    conn.commit()
    conn.close()
    log = FeedbackLog(path)
    qid = log.log_query("a new one", [Impression("d1", 1)], run_id="r1", trace_id="t1")
    recs = {r.qid: r for r in log.records()}
    assert recs["old"].run_id is None and recs["old"].trace_id is None
    assert (recs[qid].run_id, recs[qid].trace_id) == ("r1", "t1")
    assert log.query_ids_for_run("t1") == [qid] and log.query_ids_for_run("r2") == []
