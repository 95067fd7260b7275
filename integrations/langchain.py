"""LangChain adapters: :class:`RagtuneEmbeddings` and :class:`RagtuneRetriever`.

``RagtuneRetriever`` is a drop-in retriever over a ragtune workspace that logs what it showed, so
an app's "this answer helped" handler is one line (``retriever.record_click(doc)``) and the next
``ragtune refresh`` learns from it. Both adapters follow the workspace's *current* version: after a
refresh promotes a new model they use it on the next call, without being rebuilt.

Example:
    >>> from ragtune.integrations.langchain import RagtuneRetriever   # doctest: +SKIP
    >>> retriever = RagtuneRetriever(workspace=".ragtune", k=4)         # doctest: +SKIP
    >>> docs = retriever.invoke("how do I reset the router?")           # doctest: +SKIP
    >>> retriever.record_click(docs[0])                                 # doctest: +SKIP

Each retrieval is logged with its LangChain run id (and the id of the trace it belongs to, see
:meth:`RagtuneRetriever.record_feedback`), so an app that sends LangSmith feedback per run forwards
it in one line::

    client.create_feedback(run_id, key="user-score", score=score)   # LangSmith, as before
    retriever.record_feedback(run_id, doc_id, score)                 # the same verdict, to ragtune
"""

from __future__ import annotations

import math
import numbers
import uuid
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr

from ragtune.api import Ragtune, SearchResults
from ragtune.config import DEFAULT_MODEL
from ragtune.embedder import Embedder, ModelSpec
from ragtune.errors import ConfigError, FeedbackError

__all__ = ["RagtuneEmbeddings", "RagtuneRetriever", "hits_to_documents", "rating_from_score"]


class RagtuneEmbeddings(Embeddings):
    """LangChain ``Embeddings`` backed by a ragtune workspace or a local sentence-transformers model.

    Args:
        workspace: A ragtune workspace: every call uses its *current* version's embedder (including the
            query-side map for queries), so refreshed versions are picked up automatically. When the
            workspace has no index yet, its configured model is used.
        model: ``"default"`` (the bundled all-MiniLM-L6-v2) or a sentence-transformers path / cached hub
            name, used as a plain local embedder. Used when ``workspace`` is not given (default ``"default"``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (model mode).
        batch_size: Encoding batch size (model mode).
        query_prefix: Prepended to queries (model mode).
        document_prefix: Prepended to documents (model mode).

    Vectors are L2-normalised, returned as plain lists of Python floats.
    """

    def __init__(
        self,
        workspace: str | Path | Ragtune | None = None,
        model: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        if workspace is not None and model is not None:
            raise ConfigError("give RagtuneEmbeddings either workspace= (follows the workspace's current version) or model=, not both")
        self.workspace = None if workspace is None else str(workspace.ws.root if isinstance(workspace, Ragtune) else workspace)
        self.model = None if workspace is not None else (model or DEFAULT_MODEL)
        self.device = device
        self.batch_size = batch_size
        self._rt: Ragtune | None = None
        self._embedder: Embedder | None = None
        if isinstance(workspace, Ragtune):
            self._rt = workspace
        elif workspace is not None:
            self._rt = Ragtune(workspace, progress=False)
        else:
            spec = ModelSpec(base=self.model or DEFAULT_MODEL, query_prefix=query_prefix, document_prefix=document_prefix)
            self._embedder = Embedder(spec, None, device, batch_size)

    def __repr__(self) -> str:
        src = f"workspace={self.workspace!r}" if self.workspace is not None else f"model={self.model!r}"
        return f"RagtuneEmbeddings({src})"

    def embedder(self) -> Embedder:
        """The embedder used right now (the workspace's current version's, or the fixed local one)."""
        if self._rt is not None:
            return self._rt.embedder()
        assert self._embedder is not None
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (document side: no query map)."""
        return self.embedder().encode_documents(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (query side: prefix and query map of the current version)."""
        return self.embedder().encode_queries([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents` (runs in the default executor)."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query` (runs in the default executor)."""
        return await run_in_executor(None, self.embed_query, text)


def hits_to_documents(results: SearchResults) -> list[Document]:
    """Turn ragtune search results into LangChain ``Document`` objects (metadata carries the ids)."""
    docs = []
    for h in results:
        meta: dict[str, Any] = {
            **h.metadata,
            "title": h.title,
            "doc_id": h.doc_id,
            "score": h.score,
            "rank": h.rank,
            "ragtune_query_id": results.query_id,
            "ragtune_version": results.version,
            "ragtune_trial": results.trial,
        }
        docs.append(Document(page_content=h.text, metadata=meta, id=h.doc_id))
    return docs


def rating_from_score(score: Any) -> int:
    """A LangSmith-style feedback score as a ragtune rating: ``1``/``True`` -> ``+1``; ``0``, ``-1``/``False`` -> ``-1``.

    Raises:
        FeedbackError: any other score (a fractional score has no thumbs direction: map it to 1 or 0 first).
    """
    if isinstance(score, bool):
        return 1 if score else -1
    if isinstance(score, numbers.Real) and math.isfinite(float(score)) and float(score) in (1.0, 0.0, -1.0):
        return 1 if float(score) == 1.0 else -1
    raise FeedbackError(f"score must be 1 (thumbs up), 0 or -1 (thumbs down), or a bool; got {score!r}")


def _run_ids(run_manager: CallbackManagerForRetrieverRun | AsyncCallbackManagerForRetrieverRun) -> dict[str, str | None]:
    """The retrieval's own run id, and its trace's (root run's) id when known.

    The trace id is the run's own id for a retriever invoked on its own; inside a chain, LangChain's
    run manager only knows the parent, so it is read from a tracer attached to the run (LangSmith
    tracing or ``collect_runs()`` attach one). Without a tracer it is the parent run's id: the root's
    in a chain one level deep (``(retriever | llm).invoke(q, config={"run_id": rid})``), where
    ``rid`` then finds the retrieval; deeper, only a tracer knows the root.
    """
    run_id = run_manager.run_id
    trace: uuid.UUID | None = run_id if run_manager.parent_run_id is None else None
    handlers = () if trace is not None else (*run_manager.handlers, *run_manager.inheritable_handlers)
    for handler in handlers:  # a tracer (BaseTracer) maps each run it saw to its trace
        run_map = getattr(handler, "run_map", None)
        trace = getattr(run_map.get(str(run_id)) if isinstance(run_map, dict) else None, "trace_id", None)
        if trace is not None:
            break
    if trace is None:
        trace = run_manager.parent_run_id
    return {"run_id": str(run_id), "trace_id": None if trace is None else str(trace)}


def _run_id_from_config(config: RunnableConfig | None, kwargs: dict[str, Any]) -> tuple[RunnableConfig | None, dict[str, Any]]:
    """``config["run_id"]`` as the ``run_id`` keyword: langchain-core's ``BaseRetriever.invoke`` reads only the keyword."""
    if not config or config.get("run_id") is None or "run_id" in kwargs:
        return config, kwargs
    rest = RunnableConfig(**{k: v for k, v in config.items() if k != "run_id"})  # type: ignore[typeddict-item]
    return rest, {**kwargs, "run_id": config["run_id"]}


class RagtuneRetriever(BaseRetriever):
    """A LangChain retriever over a ragtune workspace that logs impressions for learning.

    Attributes:
        workspace: The workspace directory (default ``$RAGTUNE_WORKSPACE`` or ``./.ragtune``).
        k: Documents returned per query (override per call: ``retriever.invoke(q, k=10)``).
        log: Record each query and what it showed in the feedback log, so clicks and ratings on the
            returned documents can be recorded (``record_click`` / ``record_rating``).

    Every returned ``Document`` has metadata ``doc_id``, ``score``, ``rank``, ``title``,
    ``ragtune_query_id`` (``None`` when not logged), ``ragtune_version`` and ``ragtune_trial`` (the
    live trial whose interleaved ranking this is, else ``None``), plus the document's own
    metadata. The retriever follows the workspace's current version: a refresh that promotes a new
    model is used on the next query.

    Each logged retrieval records its LangChain run id and its trace id (the root run's: what
    ``collect_runs()`` or ``config={"run_id": ...}`` give an app for LangSmith feedback), so feedback
    can be given by either: :meth:`record_feedback`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workspace: Path | None = None
    k: int = Field(default=4, ge=1)
    log: bool = True

    _rt: Ragtune | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._rt = Ragtune(self.workspace, progress=False)
        self.workspace = self._rt.ws.root

    @classmethod
    def from_ragtune(cls, rt: Ragtune, **kwargs: Any) -> RagtuneRetriever:
        """A retriever sharing an existing :class:`~ragtune.Ragtune` instance."""
        retriever = cls(workspace=rt.ws.root, **kwargs)
        retriever._rt = rt
        return retriever

    @property
    def ragtune(self) -> Ragtune:
        """The underlying :class:`~ragtune.Ragtune` facade."""
        assert self._rt is not None
        return self._rt

    # -- retrieval --------------------------------------------------------------------------------
    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """:meth:`BaseRetriever.invoke`, with ``config={"run_id": ...}`` naming this retrieval's run too."""
        config, kwargs = _run_id_from_config(config, kwargs)
        return super().invoke(input, config, **kwargs)

    async def ainvoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        """:meth:`BaseRetriever.ainvoke`, with ``config={"run_id": ...}`` naming this retrieval's run too."""
        config, kwargs = _run_id_from_config(config, kwargs)
        return await super().ainvoke(input, config, **kwargs)

    def search(self, query: str, k: int | None = None, log: bool | None = None, *, run_id: str | None = None, trace_id: str | None = None) -> SearchResults:
        """Raw ragtune results (with ``.query_id``) for ``query`` (``run_id``/``trace_id`` are logged with it)."""
        return self.ragtune.search(query, k=self.k if k is None else k, log=self.log if log is None else log, run_id=run_id, trace_id=trace_id)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, log: bool | None = None) -> list[Document]:
        return hits_to_documents(self.search(query, k, log, **_run_ids(run_manager)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None, log: bool | None = None
    ) -> list[Document]:
        runs = _run_ids(run_manager)
        results = await run_in_executor(None, lambda: self.search(query, k, log, **runs))
        return hits_to_documents(results)

    # -- feedback ---------------------------------------------------------------------------------
    @staticmethod
    def _ids(doc_or_query_id: Document | str, doc_id: str | None) -> tuple[str, str]:
        if isinstance(doc_or_query_id, Document):
            meta = doc_or_query_id.metadata
            qid, did = meta.get("ragtune_query_id"), doc_id or meta.get("doc_id")
            if "ragtune_query_id" not in meta:
                raise FeedbackError("this document has no ragtune metadata (ragtune_query_id, doc_id); pass a Document returned by a RagtuneRetriever")
            if not qid:
                raise FeedbackError("this document was retrieved without logging (log=False), so feedback cannot be tied to a query; retrieve with log=True")
            if not did:
                raise FeedbackError("this document has no 'doc_id' metadata; was it returned by a RagtuneRetriever?")
            return str(qid), str(did)
        if not isinstance(doc_or_query_id, str) or doc_id is None:
            raise FeedbackError("pass a Document returned by the retriever, or a query id and a doc_id")
        return doc_or_query_id, doc_id

    def record_click(
        self, doc_or_query_id: Document | str, doc_id: str | None = None, *, dwell: float | None = None, feedback_id: str | None = None
    ) -> bool:
        """Record that the user used/opened a retrieved document.

        Args:
            doc_or_query_id: A ``Document`` returned by this retriever, or a ``ragtune_query_id``.
            doc_id: The doc id (needed with a query id; ignored with a Document unless given).
            dwell: Optional seconds spent on the document.
            feedback_id: The app's id for this click (e.g. a UUID made by the front end): sending it
                again is a no-op, so a retry never counts twice.

        Returns:
            ``True`` when recorded; ``False`` when ``feedback_id`` was already recorded with the same content.

        Raises:
            FeedbackError: no query id or doc id to tie the click to, an unknown id, or a bad dwell.
            FeedbackConflictError: ``feedback_id`` was already recorded with other content.
        """
        qid, did = self._ids(doc_or_query_id, doc_id)
        return self.ragtune.click(qid, did, dwell=dwell, feedback_id=feedback_id)

    def record_rating(self, doc_or_query_id: Document | str, value: int, doc_id: str | None = None, *, feedback_id: str | None = None) -> bool:
        """Record an explicit thumbs-up (``+1``) or thumbs-down (``-1``) on a retrieved document.

        ``feedback_id`` as for :meth:`record_click`; returns ``False`` for a retry already recorded.

        Raises:
            FeedbackError: no query id or doc id to tie the rating to, an unknown id, or a value other than +1/-1.
            FeedbackConflictError: ``feedback_id`` was already recorded with other content.
        """
        qid, did = self._ids(doc_or_query_id, doc_id)
        return self.ragtune.rate(qid, did, value, feedback_id=feedback_id)

    def record_feedback(self, run_id: str | uuid.UUID, doc_id: str, score: Any) -> bool:
        """Record a LangSmith-style feedback score, given by run id, as a rating of ``doc_id``.

        Forward the feedback an app already sends LangSmith in one line::

            client.create_feedback(run_id, key="user-score", score=score)
            retriever.record_feedback(run_id, doc_id, score)

        Args:
            run_id: The retriever's own run id, or the id of the trace (root run) the retrieval ran in
                (``collect_runs()``'s ``traced_runs[0].id``, or the ``run_id`` passed in the config).
                A run that retrieved more than once rates its newest retrieval that showed ``doc_id``.
            doc_id: The document the verdict is about (e.g. the one the answer cited).
            score: ``1``/``True`` (thumbs up) or ``0``, ``-1``/``False`` (thumbs down).

        Returns:
            ``True`` (recorded), as :meth:`record_rating`.

        Raises:
            FeedbackError: an unknown run id (a retrieval logged without it, or with ``log=False``),
                an unknown doc id, or a score other than those above.
        """
        value = rating_from_score(score)
        return self.ragtune.rate(self.ragtune.query_id_for_run(run_id, doc_id), doc_id, value)
