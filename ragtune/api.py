"""The ``Ragtune`` facade: the one Python API that the CLI, the integrations and apps call."""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.config import RagtuneConfig
from ragtune.corpus import Document, is_beir_dir, load_beir_corpus, load_sources
from ragtune.docstore import DocStore
from ragtune.embedder import Embedder, ModelSpec
from ragtune.errors import FeedbackError, InputError, WorkspaceError
from ragtune.feedback import FeedbackLog, Impression
from ragtune.index.base import VectorStore, create_store, open_store
from ragtune.workspace import VersionInfo, Workspace, default_workspace_path

if TYPE_CHECKING:
    from ragtune.mining import MinedSet

__all__ = ["Hit", "Ragtune", "SearchResults"]

logger = logging.getLogger(__name__)


@dataclass
class Hit:
    """One search result.

    Attributes:
        doc_id: The document id.
        score: Cosine similarity to the query.
        rank: 1-based rank as shown.
        text: Document text.
        title: Document title ('' if none).
        metadata: Document metadata.
    """

    doc_id: str
    score: float
    rank: int
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SearchResults(list[Hit]):
    """A list of :class:`Hit` that also carries the feedback ``query_id`` (``None`` if not logged)."""

    def __init__(self, hits: Iterable[Hit] = (), query_id: str | None = None, version: str | None = None) -> None:
        super().__init__(hits)
        self.query_id = query_id
        self.version = version


class _Serving:
    """Everything loaded for one version: manifest, doc store, vector store, embedder."""

    def __init__(self, ws: Workspace, config: RagtuneConfig, name: str) -> None:
        self.name = name
        self.info = ws.read_version(name)
        self.index_info = self.info if self.info.index_version == name else ws.read_version(self.info.index_version)
        index_dir = ws.version_dir(self.info.index_version)
        self.docs = DocStore(index_dir)
        self.store: VectorStore = open_store(index_dir, config.index, name=_store_name(ws, self.info.index_version), backend=self.index_info.model.get("_backend"))
        self.spec = ModelSpec.from_dict(self.info.model)
        self.embedder = Embedder(self.spec, ws.root, config.model.device, config.model.batch_size)
        self.index_dir = index_dir

    def vectors(self) -> np.ndarray:
        return np.load(self.index_dir / "vectors.npy", mmap_mode="r")


def _store_name(ws: Workspace, version: str) -> str:
    import hashlib

    return f"ragtune-{hashlib.sha1(str(ws.root).encode()).hexdigest()[:10]}-{version}"


class Ragtune:
    """A ragtune workspace: index, search, feedback, evaluation, refresh.

    Args:
        workspace: The workspace directory (default ``$RAGTUNE_WORKSPACE`` or ``./.ragtune``).
        create: Create the workspace if it does not exist.
        config: Config for a newly created workspace (ignored for an existing one unless ``create``).
        progress: Show progress bars on long work.

    Example:
        >>> rt = Ragtune("my-ws", create=True)           # doctest: +SKIP
        >>> rt.index(["docs/"])                           # doctest: +SKIP
        >>> hits = rt.search("how do I reset it?", k=5)  # doctest: +SKIP
        >>> rt.click(hits.query_id, hits[0].doc_id)      # doctest: +SKIP
    """

    def __init__(self, workspace: str | Path | None = None, *, create: bool = False, config: RagtuneConfig | None = None, progress: bool = True) -> None:
        path = Path(workspace) if workspace is not None else default_workspace_path()
        self.ws = Workspace.create(path, config) if create else Workspace.open(path)
        self.config = self.ws.load_config()
        self.progress = progress
        self._serving: _Serving | None = None
        self._token: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._feedback: FeedbackLog | None = None
        self._rng = random.Random()

    @classmethod
    def init(cls, workspace: str | Path | None = None, config: RagtuneConfig | None = None, **kwargs: Any) -> Ragtune:
        """Create (or open) a workspace."""
        return cls(workspace, create=True, config=config, **kwargs)

    # -- serving state ----------------------------------------------------------------------------
    def serving(self) -> _Serving:
        """The loaded current version, reloaded when another process swapped ``CURRENT``."""
        token = self.ws.current_token()
        with self._lock:
            if self._serving is None or token != self._token:
                name = self.ws.current_version()
                if name is None:
                    raise WorkspaceError(f"workspace {self.ws.root} has no index yet; run `ragtune index SOURCE` first")
                if self._serving is None or self._serving.name != name:
                    self._serving = _Serving(self.ws, self.config, name)
                    logger.info("serving version %s", name)
                self._token = token
            return self._serving

    @property
    def current_version(self) -> str | None:
        """The serving version's name."""
        return self.ws.current_version()

    def embedder(self) -> Embedder:
        """The current version's embedder (or the configured model when nothing is indexed)."""
        if self.ws.current_version() is None:
            return Embedder(self._config_spec(), self.ws.root, self.config.model.device, self.config.model.batch_size)
        return self.serving().embedder

    def _config_spec(self) -> ModelSpec:
        m = self.config.model
        return ModelSpec(base=m.name, query_prefix=m.query_prefix, document_prefix=m.document_prefix, max_seq_length=m.max_seq_length)

    @property
    def feedback(self) -> FeedbackLog:
        """The workspace's feedback log."""
        if self._feedback is None:
            self._feedback = FeedbackLog(self.ws.feedback_path)
        return self._feedback

    # -- indexing ---------------------------------------------------------------------------------
    def index(self, sources: Sequence[str | Path]) -> dict[str, Any]:
        """Make the index hold exactly the documents of ``sources`` (idempotent, incremental).

        Unchanged documents keep their vectors, changed and new ones are embedded, missing ones are
        dropped. Everything is validated before anything is written; the new index becomes current
        atomically.

        Args:
            sources: Directories of .txt/.md files, JSONL files, BEIR folders.

        Returns:
            Counts: ``added``, ``changed``, ``unchanged``, ``removed``, ``embedded``, ``n_docs``,
            ``version``, ``seconds``.
        """
        t0 = time.perf_counter()
        current = self.ws.current_version()
        spec = ModelSpec.from_dict(self.ws.read_version(current).model) if current else self._config_spec()
        embedder = self.serving().embedder if current else Embedder(spec, self.ws.root, self.config.model.device, self.config.model.batch_size)
        tokenize = embedder.token_offsets if any(Path(s).is_dir() and not is_beir_dir(Path(s)) for s in sources) else None
        docs = load_sources(sources, tokenize, self.config.chunk.chunk_tokens, self.config.chunk.overlap_tokens)
        with self.ws.lock("index"):
            return self._write_index(docs, spec, embedder, current, t0)

    def _write_index(self, docs: list[Document], spec: ModelSpec, embedder: Embedder, current: str | None, t0: float) -> dict[str, Any]:
        old: dict[str, tuple[int, str]] = {}
        old_vecs: np.ndarray | None = None
        if current is not None:
            serving = self.serving()
            old = serving.docs.hashes()
            old_vecs = serving.vectors()
        hashes = [d.content_hash for d in docs]
        reuse = [i for i, (d, h) in enumerate(zip(docs, hashes)) if d.id in old and old[d.id][1] == h]
        todo = [i for i in range(len(docs)) if i not in set(reuse)]
        counts = {
            "added": sum(1 for d in docs if d.id not in old),
            "changed": sum(1 for d, h in zip(docs, hashes) if d.id in old and old[d.id][1] != h),
            "unchanged": len(reuse),
            "removed": len(set(old) - {d.id for d in docs}),
        }
        if current is not None and not todo and counts["removed"] == 0 and [d.id for d in docs] == self.serving().docs.ids:
            logger.info("index unchanged (%d docs)", len(docs))
            return {**counts, "embedded": 0, "n_docs": len(docs), "version": current, "seconds": time.perf_counter() - t0}
        dim = embedder.dim
        vectors = np.zeros((len(docs), dim), dtype=np.float32)
        if reuse and old_vecs is not None:
            vectors[reuse] = old_vecs[[old[docs[i].id][0] for i in reuse]]
        if todo:
            vectors[todo] = embedder.encode_documents([docs[i].embed_text for i in todo], progress=self.progress)
        name = self._write_version(docs, vectors, spec, kind="index", parent=current, note=f"indexed {len(docs)} docs", write_files=lambda staging, rel: self._carry_feedback_files(current, spec, staging))
        return {**counts, "embedded": len(todo), "n_docs": len(docs), "version": name, "seconds": time.perf_counter() - t0}

    def _carry_feedback_files(self, current: str | None, spec: ModelSpec, staging: Path) -> ModelSpec:
        """A re-index keeps the model: keep its record of the feedback it was trained on (and its out-of-fold vectors)."""
        from ragtune.refresh import OOF_FILE, TRAINED_FILE

        if current is not None and spec == self.serving().spec:
            for fname in (TRAINED_FILE, OOF_FILE):
                src = self.ws.version_dir(current) / fname
                if src.is_file():
                    shutil.copy2(src, staging / fname)
        return spec

    def _write_version(
        self,
        docs: Sequence[Document] | None,
        vectors: np.ndarray | None,
        spec: ModelSpec,
        *,
        kind: str,
        parent: str | None,
        note: str = "",
        metrics: dict[str, Any] | None = None,
        feedback: dict[str, Any] | None = None,
        index_version: str | None = None,
        write_files: Callable[[Path, str], ModelSpec] | None = None,
    ) -> str:
        """Write a complete version into staging, rename it into place, make it current, prune.

        Must be called under the workspace lock. ``write_files(staging_dir, version_dir_rel)`` may save
        model files into the staging dir and return the spec that points at their final location.
        """
        with self.ws.stage_version() as (staging, name):
            if write_files is not None:
                spec = write_files(staging, f"versions/{name}")
            model = spec.to_dict()
            if docs is not None and vectors is not None:
                DocStore.write(staging, docs)
                np.save(staging / "vectors.npy", vectors)
                create_store(staging, vectors, self.config.index, name=_store_name(self.ws, name))
                model["_backend"] = self.config.index.backend
                index_version = name
            if not index_version:
                raise WorkspaceError("a version needs its own index or an index_version to search")
            info = VersionInfo(name=name, kind=kind, index_version=index_version, model=model, parent=parent, n_docs=len(docs) if docs is not None else 0, metrics=metrics or {}, feedback=feedback or {}, note=note)
            self.config.save(staging / "config.json")
            self.ws.write_manifest(staging, info)
        self.ws.set_current(name)
        self._prune()
        return name

    def _prune(self) -> None:
        """Delete versions beyond ``index.keep_versions`` and release their server-side collections."""
        before = {v.name: v for v in self.ws.list_versions()}
        removed = self.ws.prune(self.config.index.keep_versions)
        for old in removed:
            info = before.get(old)
            backend = info.model.get("_backend") if info is not None else None
            if info is not None and info.index_version == old and backend not in (None, "faiss"):
                try:
                    open_store(self.ws.version_dir(old), self.config.index, name=_store_name(self.ws, old), backend=backend).drop()
                except Exception as exc:  # best effort: the version's files are already gone
                    logger.warning("could not drop the vector store of pruned version %s: %s", old, exc)
        if removed:
            logger.info("pruned versions %s", ", ".join(removed))

    # -- search -----------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, *, log: bool | None = None) -> SearchResults:
        """Retrieve the top ``k`` documents for ``query``.

        Args:
            query: The query text.
            k: Number of results.
            log: Record the query and what was shown in the feedback log (default from config).

        Returns:
            :class:`SearchResults`, a list of :class:`Hit` with ``.query_id`` set when logged.
        """
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query must be a non-empty string, got {query!r}")
        if not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        serving = self.serving()
        qv = serving.embedder.encode_queries([query])
        scores, pos = serving.store.search(qv, k)
        keep = pos[0] >= 0
        positions, sc = pos[0][keep].tolist(), scores[0][keep].tolist()
        orig_ranks = list(range(1, len(positions) + 1))
        do_log = self.config.feedback.log_queries if log is None else log
        fb = self.config.feedback
        randomized = False
        if do_log and fb.randomize_top > 1 and len(positions) > 1 and self._rng.random() < fb.randomize_prob:
            # RandPair intervention: swap rank 1 with a random rank in 2..N (lets the log estimate propensities)
            j = self._rng.randrange(1, min(fb.randomize_top, len(positions)))
            for lst in (positions, sc, orig_ranks):
                lst[0], lst[j] = lst[j], lst[0]
            randomized = True
        docs = serving.docs.get(positions)
        hits = [Hit(d.id, float(s), r, d.text, d.title, d.metadata) for r, (d, s) in enumerate(zip(docs, sc), 1)]
        qid = None
        if do_log:
            imps = [Impression(h.doc_id, h.rank, h.score, o) for h, o in zip(hits, orig_ranks)]
            qid = self.feedback.log_query(query, imps, version=serving.name, randomized=randomized)
        return SearchResults(hits, qid, serving.name)

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """Rank ``k`` docs for many queries at once (no logging); ``[(doc_id, score), ...]`` per query."""
        serving = self.serving()
        qv = serving.embedder.encode_queries(list(queries), progress=self.progress and len(queries) > 256)
        scores, pos = serving.store.search(qv, k)
        ids = serving.docs.ids
        return [[(ids[p], float(s)) for p, s in zip(prow, srow) if p >= 0] for prow, srow in zip(pos, scores)]

    # -- feedback ---------------------------------------------------------------------------------
    def _check_doc(self, doc_id: str) -> None:
        if not self.serving().docs.positions([doc_id]):
            raise FeedbackError(f"unknown doc id {doc_id!r}: it is not in the current index")

    def click(self, query_id: str, doc_id: str, *, dwell: float | None = None) -> None:
        """Record that the user opened ``doc_id`` from the results of ``query_id``."""
        self._check_doc(doc_id)
        self.feedback.click(query_id, doc_id, dwell=dwell)

    def rate(self, query_id: str, doc_id: str, value: int) -> None:
        """Record an explicit thumbs-up (+1) or thumbs-down (-1)."""
        self._check_doc(doc_id)
        self.feedback.rate(query_id, doc_id, value)

    def import_feedback(self, path: str | Path) -> dict[str, int]:
        """Import an event or triplet JSONL file (all-or-nothing); see :meth:`FeedbackLog.import_file`."""
        serving = self.serving()

        def exists(ids: Sequence[str]) -> set[str]:
            return set(serving.docs.positions(ids))

        by_text: dict[str, str] | None = None

        def text_to_id(text: str) -> str | None:
            nonlocal by_text
            if by_text is None:
                by_text = {}
                for d in serving.docs.all_documents():
                    by_text.setdefault(d.text.strip(), d.id)
                    by_text.setdefault(d.embed_text.strip(), d.id)
            return by_text.get(text.strip())

        return self.feedback.import_file(path, doc_exists=exists, text_to_id=text_to_id)

    # -- evaluation -------------------------------------------------------------------------------
    def ensure_beir_corpus(self, beir_dir: str | Path) -> None:
        """Index a BEIR corpus into an empty workspace; error if the workspace holds another corpus."""
        root = Path(beir_dir)
        if not is_beir_dir(root):
            raise InputError(f"{root}: not a BEIR folder (no corpus.jsonl)")
        if self.ws.current_version() is None:
            self.index([root])
            return
        want = {d.id: d.content_hash for d in load_beir_corpus(root)}
        have = {k: v[1] for k, v in self.serving().docs.hashes().items()}
        if want != have:
            missing = len(set(want) - set(have))
            extra = len(set(have) - set(want))
            changed = sum(1 for k in set(want) & set(have) if want[k] != have[k])
            raise WorkspaceError(
                f"workspace {self.ws.root} holds a different corpus than {root} ({missing} docs missing, {extra} extra, "
                f"{changed} changed); use a fresh --workspace for this evaluation or `ragtune index {root}` to replace its corpus"
            )

    def evaluate_beir(self, beir_dir: str | Path, split: str = "test", *, k: int = 100) -> dict[str, Any]:
        """nDCG@10, MRR@10, Recall@10/100 on a BEIR split, indexing the corpus first if needed."""
        from ragtune.evaluate import evaluate_run, load_beir_qrels, load_beir_queries

        root = Path(beir_dir)
        qrels = load_beir_qrels(root, split)
        queries = load_beir_queries(root)
        self.ensure_beir_corpus(root)
        qids = [q for q in qrels if q in queries]
        if not qids:
            raise InputError(f"{root}: none of the {split} qrels' query ids is in queries.jsonl")
        ranked = self.search_batch([queries[q] for q in qids], k)
        run = {q: [d for d, _ in r] for q, r in zip(qids, ranked)}
        metrics: dict[str, Any] = evaluate_run(run, {q: qrels[q] for q in qids})
        serving = self.serving()
        metrics.update({"n_queries": len(qids), "n_docs": len(serving.docs), "model": serving.spec.label(), "version": serving.name, "split": split})
        return metrics

    # -- the learning loop ------------------------------------------------------------------------
    def mine(self) -> MinedSet:
        """Mine training pairs, negatives, click weights and the held-out split from the log."""
        from ragtune.mining import mine

        return mine(self.feedback.records(), self.serving(), self.config.mining, self.config.feedback)

    def refresh(self, *, mode: str | None = None, force: bool = False, min_new_events: int | None = None) -> dict[str, Any]:
        """Mine → fine-tune → gate → re-embed → swap, under the workspace lock.

        Args:
            mode: ``"lora"``, ``"full"``, ``"query"`` or ``"auto"`` (default from config).
            force: Refresh even with fewer than ``min_new_events`` new events.
            min_new_events: Override ``refresh.min_new_events``.

        Returns:
            A report with ``status`` (``"skipped"``, ``"refused"`` or ``"promoted"``), ``reason``,
            the gate figures, ``version`` when promoted, and timings (``train_s``, ``reembed_s``,
            ``refresh_s``).

        Raises:
            RefreshLockedError: another refresh or index run holds the workspace.
        """
        from ragtune.errors import ConfigError
        from ragtune.refresh import run_refresh

        if mode is not None and mode not in ("lora", "full", "query", "auto"):
            raise ConfigError(f"refresh mode must be one of lora, full, query, auto; got {mode!r}")
        return run_refresh(self, mode=mode, force=force, min_new_events=min_new_events)

    def versions(self) -> list[dict[str, Any]]:
        """Every version on disk (oldest first) with kind, model, metrics, feedback counts, dates."""
        cur = self.ws.current_version()
        return [{**v.to_dict(), "current": v.name == cur} for v in self.ws.list_versions()]

    def rollback(self, version: str | None = None) -> str:
        """Make ``version`` (default: the current one's parent) current, instantly."""
        with self.ws.lock("rollback"):
            cur = self.ws.current_version()
            if version is None:
                if cur is None:
                    raise WorkspaceError("nothing to roll back: no version is current")
                parent = self.ws.read_version(cur).parent
                if parent is None or not (self.ws.version_dir(parent) / "manifest.json").is_file():
                    raise WorkspaceError(f"version {cur} has no earlier version on disk to roll back to; name one (see `ragtune versions`)")
                version = parent
            info = self.ws.read_version(version)
            if not (self.ws.version_dir(info.index_version) / "manifest.json").is_file():
                raise WorkspaceError(f"version {version} searches index {info.index_version}, which was pruned")
            self.ws.set_current(version)
        return version

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Workspace, model, current version, doc count, sizes, feedback counts."""
        cur = self.ws.current_version()
        out: dict[str, Any] = {"workspace": str(self.ws.root), "current_version": cur, "model": self._config_spec().label(), "n_docs": 0, "backend": self.config.index.backend, "index_kind": self.config.index.kind}
        if cur is not None:
            serving = self.serving()
            out["model"] = serving.spec.label()
            out["n_docs"] = len(serving.docs)
            out["kind"] = serving.info.kind
            out["index_version"] = serving.info.index_version
        out["versions"] = len(self.ws.list_versions())
        out["size_bytes"] = sum(p.stat().st_size for p in self.ws.root.rglob("*") if p.is_file())
        out["feedback"] = self.feedback.stats() if self.ws.feedback_path.exists() else {"queries": 0, "impressions": 0, "clicks": 0, "ratings": 0, "queries_with_positive": 0}
        return out

