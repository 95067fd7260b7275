"""LlamaIndex adapters: :class:`RagtuneRetriever` and :class:`RagtuneEmbedding` (``pip install 'ragtune[llamaindex]'``).

``RagtuneRetriever`` is a llama-index retriever over a ragtune workspace that logs what it showed,
so an app's "this answer helped" handler is one line (``retriever.record_click(node)``) and the
next ``ragtune refresh`` learns from it. Both adapters follow the workspace's *current* version:
after a refresh promotes a new model they use it on the next call, without being rebuilt.

Nothing here touches the network: no NLTK data, no tiktoken files, no hub downloads (the model is
the workspace's, loaded from disk).

Example:
    >>> from ragtune.integrations.llamaindex import RagtuneRetriever   # doctest: +SKIP
    >>> retriever = RagtuneRetriever(".ragtune", similarity_top_k=4)     # doctest: +SKIP
    >>> nodes = retriever.retrieve("how do I reset the router?")         # doctest: +SKIP
    >>> retriever.record_click(nodes[0])                                 # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ragtune.api import Ragtune, SearchResults
from ragtune.config import DEFAULT_MODEL
from ragtune.embedder import Embedder, ModelSpec
from ragtune.errors import ConfigError, FeedbackError, InputError, MissingDependencyError

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode
except ImportError as exc:
    raise MissingDependencyError("ragtune.integrations.llamaindex needs llama-index-core: pip install 'ragtune[llamaindex]'") from exc

__all__ = ["RagtuneEmbedding", "RagtuneRetriever", "hits_to_nodes"]

#: Metadata ragtune adds for feedback bookkeeping: kept out of what the LLM and embedders see.
BOOKKEEPING_KEYS = ["doc_id", "rank", "ragtune_query_id", "ragtune_version", "ragtune_trial"]


def _facade(workspace: str | Path | Ragtune | None) -> Ragtune:
    return workspace if isinstance(workspace, Ragtune) else Ragtune(workspace, progress=False)


class RagtuneEmbedding(BaseEmbedding):
    """A llama-index ``BaseEmbedding`` backed by a ragtune workspace or a local sentence-transformers model.

    Args:
        workspace: A ragtune workspace (a path or a :class:`~ragtune.Ragtune`): every call uses its
            *current* version's embedder (document prefix for texts; query prefix and the query-side
            map for queries), so refreshed versions are picked up automatically. When the workspace
            has no index yet, its configured model is used.
        model: ``"default"`` (the bundled all-MiniLM-L6-v2) or a sentence-transformers path / cached
            hub name, used as a plain local embedder when ``workspace`` is not given (default ``"default"``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (model mode).
        batch_size: Encoding batch size (model mode; also llama-index's ``embed_batch_size``).
        query_prefix: Prepended to queries (model mode).
        document_prefix: Prepended to texts (model mode).
        **kwargs: Other ``BaseEmbedding`` fields (``callback_manager``, ``num_workers``, ...).

    Vectors are L2-normalised lists of Python floats.

    Example:
        >>> from llama_index.core import Settings                          # doctest: +SKIP
        >>> Settings.embed_model = RagtuneEmbedding(workspace=".ragtune")   # doctest: +SKIP
    """

    workspace: str | None = None

    _rt: Ragtune | None = PrivateAttr(default=None)
    _embedder: Embedder | None = PrivateAttr(default=None)

    def __init__(
        self,
        workspace: str | Path | Ragtune | None = None,
        model: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
        query_prefix: str = "",
        document_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        if workspace is not None and model is not None:
            raise ConfigError("give RagtuneEmbedding either workspace= (follows the workspace's current version) or model=, not both")
        rt = None if workspace is None else _facade(workspace)
        name = f"ragtune:{rt.ws.root}" if rt is not None else (model or DEFAULT_MODEL)
        kwargs.setdefault("embed_batch_size", batch_size)
        super().__init__(model_name=name, **kwargs)
        self.workspace = None if rt is None else str(rt.ws.root)
        self._rt = rt
        if rt is None:
            spec = ModelSpec(base=model or DEFAULT_MODEL, query_prefix=query_prefix, document_prefix=document_prefix)
            self._embedder = Embedder(spec, None, device, batch_size)

    @classmethod
    def class_name(cls) -> str:
        return "RagtuneEmbedding"

    def embedder(self) -> Embedder:
        """The embedder used right now (the workspace's current version's, or the fixed local one)."""
        if self._rt is not None:
            return self._rt.embedder()
        assert self._embedder is not None
        return self._embedder

    def _get_query_embedding(self, query: str) -> Embedding:
        return [float(x) for x in self.embedder().encode_queries([query])[0]]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.embedder().encode_documents(list(texts)).tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def hits_to_nodes(results: SearchResults) -> list[NodeWithScore]:
    """Turn ragtune search results into llama-index ``NodeWithScore`` objects (node id = doc id).

    Each node's metadata holds the document's own metadata plus ``title``, ``doc_id``, ``rank``,
    ``ragtune_query_id``, ``ragtune_version`` and ``ragtune_trial``; the bookkeeping keys are excluded
    from what the LLM and embedders see (``excluded_llm_metadata_keys``).
    """
    nodes = []
    for h in results:
        meta: dict[str, Any] = {
            **h.metadata,
            "title": h.title,
            "doc_id": h.doc_id,
            "rank": h.rank,
            "ragtune_query_id": results.query_id,
            "ragtune_version": results.version,
            "ragtune_trial": results.trial,
        }
        node = TextNode(
            id_=h.doc_id,
            text=h.text,
            metadata=meta,
            excluded_llm_metadata_keys=list(BOOKKEEPING_KEYS),
            excluded_embed_metadata_keys=list(BOOKKEEPING_KEYS),
        )
        nodes.append(NodeWithScore(node=node, score=h.score))
    return nodes


class RagtuneRetriever(BaseRetriever):
    """A llama-index retriever over a ragtune workspace that logs impressions for learning.

    Args:
        workspace: The workspace: a path (default ``$RAGTUNE_WORKSPACE`` or ``./.ragtune``) or a
            :class:`~ragtune.Ragtune` to share.
        similarity_top_k: Nodes returned per query (a positive int).
        log: Record each query and what it showed in the feedback log, so clicks and ratings on the
            returned nodes can be recorded (``record_click`` / ``record_rating``).
        callback_manager: llama-index callback manager (default: ``Settings.callback_manager``'s behaviour).
        verbose: llama-index's verbose flag.

    Every returned ``NodeWithScore`` has the ragtune score, node id = doc id, and metadata
    ``doc_id``, ``rank``, ``title``, ``ragtune_query_id`` (``None`` when not logged),
    ``ragtune_version`` and ``ragtune_trial`` (the live trial whose interleaved ranking this is, else
    ``None``), plus the document's own metadata. The retriever follows the workspace's current
    version: a refresh that promotes a new model is used on the next query.

    Raises:
        InputError: ``similarity_top_k`` is not a positive int.
    """

    def __init__(
        self,
        workspace: str | Path | Ragtune | None = None,
        similarity_top_k: int = 4,
        *,
        log: bool = True,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(similarity_top_k, int) or isinstance(similarity_top_k, bool) or similarity_top_k < 1:
            raise InputError(f"similarity_top_k must be a positive integer, got {similarity_top_k!r}")
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self._rt = _facade(workspace)
        self.similarity_top_k = similarity_top_k
        self.log = log

    def __repr__(self) -> str:
        return f"RagtuneRetriever(workspace={str(self._rt.ws.root)!r}, similarity_top_k={self.similarity_top_k})"

    @property
    def ragtune(self) -> Ragtune:
        """The underlying :class:`~ragtune.Ragtune` facade."""
        return self._rt

    @property
    def workspace(self) -> Path:
        """The workspace directory."""
        return self._rt.ws.root

    # -- retrieval --------------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None, log: bool | None = None) -> SearchResults:
        """Raw ragtune results (with ``.query_id``) for ``query``."""
        return self._rt.search(query, k=self.similarity_top_k if k is None else k, log=self.log if log is None else log)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return hits_to_nodes(self.search(query_bundle.query_str))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    # -- feedback ---------------------------------------------------------------------------------
    @staticmethod
    def _ids(node_or_doc_id: NodeWithScore | BaseNode | str, query_id: str | None) -> tuple[str, str]:
        if isinstance(node_or_doc_id, NodeWithScore):
            node_or_doc_id = node_or_doc_id.node
        if isinstance(node_or_doc_id, BaseNode):
            meta = node_or_doc_id.metadata
            qid, did = query_id or meta.get("ragtune_query_id"), meta.get("doc_id")
            if not query_id and "ragtune_query_id" not in meta:
                raise FeedbackError("this node has no ragtune metadata (ragtune_query_id, doc_id); pass a node returned by a RagtuneRetriever")
            if not qid:
                raise FeedbackError(
                    "this node was retrieved without logging (log=False), so feedback cannot be tied to a query; "
                    "retrieve with log=True, or pass query_id="
                )
            if not did:
                raise FeedbackError("this node has no 'doc_id' metadata; was it returned by a RagtuneRetriever?")
            return str(qid), str(did)
        if not isinstance(node_or_doc_id, str) or not query_id:
            raise FeedbackError(
                f"pass a node returned by the retriever, or a doc id with query_id= (the node's metadata['ragtune_query_id']); got {node_or_doc_id!r}"
                + ("" if query_id else " without query_id")
            )
        return query_id, node_or_doc_id

    def record_click(
        self, node_or_doc_id: NodeWithScore | BaseNode | str, query_id: str | None = None, *, dwell: float | None = None, feedback_id: str | None = None
    ) -> bool:
        """Record that the user used/opened a retrieved node.

        Args:
            node_or_doc_id: A ``NodeWithScore`` (or its node) returned by this retriever, or a doc id.
            query_id: The search's ``ragtune_query_id`` (needed with a doc id; taken from the node's
                metadata otherwise).
            dwell: Optional seconds spent on the document.
            feedback_id: The app's id for this click (e.g. a UUID made by the front end): sending it
                again is a no-op, so a retry never counts twice.

        Returns:
            ``True`` when recorded; ``False`` when ``feedback_id`` was already recorded with the same content.

        Raises:
            FeedbackError: no query id to tie the click to, an unknown query or doc id, or a bad dwell.
            FeedbackConflictError: ``feedback_id`` was already recorded with other content.
        """
        qid, did = self._ids(node_or_doc_id, query_id)
        return self._rt.click(qid, did, dwell=dwell, feedback_id=feedback_id)

    def record_rating(
        self, node_or_doc_id: NodeWithScore | BaseNode | str, value: int, query_id: str | None = None, *, feedback_id: str | None = None
    ) -> bool:
        """Record an explicit thumbs-up (``+1``) or thumbs-down (``-1``) on a retrieved node.

        ``feedback_id`` as for :meth:`record_click`; returns ``False`` for a retry already recorded.

        Raises:
            FeedbackError: no query id to tie the rating to, an unknown id, or a value other than +1/-1.
            FeedbackConflictError: ``feedback_id`` was already recorded with other content.
        """
        qid, did = self._ids(node_or_doc_id, query_id)
        return self._rt.rate(qid, did, value, feedback_id=feedback_id)
