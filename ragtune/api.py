"""The ``Ragtune`` facade: the one Python API that the CLI, the integrations and apps call."""

from __future__ import annotations

import logging
import os
import shutil
import time
import unicodedata
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.config import RagtuneConfig
from ragtune.corpus import Document, is_beir_dir, load_beir_corpus, load_sources, nested_source, source_key, source_list
from ragtune.embedder import Embedder, ModelSpec
from ragtune.engines import encode_corpus
from ragtune.errors import FeedbackLogError, InputError, RagtuneError, RefreshLockedError, UnknownIdError, WorkspaceError
from ragtune.faults import checkpoint
from ragtune.feedback import FeedbackLog, ImportReport, validate_click, validate_rating
from ragtune.indexing import (
    IndexedDoc,
    IndexPlan,
    IndexReport,
    ModelChange,
    SourceReport,
    config_with_model,
    model_changes,
    plan_index,
    spec_from_config,
)
from ragtune.memory import release_heap, release_pages
from ragtune.records import Hit, SearchResults
from ragtune.recovery import new_decision
from ragtune.serving import Server, ServingVersion
from ragtune.workspace import MODEL_FILE_KEYS, OOF_FILE, TRAINED_FILE, Workspace, default_workspace_path, version_file

if TYPE_CHECKING:
    from ragtune.doctor import DoctorReport
    from ragtune.mining import MinedSet
    from ragtune.refresh import RefreshReport

__all__ = ["Hit", "Ragtune", "SearchResults"]

logger = logging.getLogger(__name__)

#: (workspace, version, differences) already warned about in this process: a hand-edited model is logged once.
_MODEL_WARNED: set[tuple[str, str, tuple[ModelChange, ...]]] = set()

#: The command that re-embeds every document with the configured model.
REINDEX_COMMAND = "ragtune index --reindex"


def _run_id(name: str, value: str | uuid.UUID | None) -> str | None:
    """A run id as logged: a UUID as its string form; ``None`` stays ``None``."""
    if value is None or isinstance(value, uuid.UUID):
        return None if value is None else str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string or UUID (or None), got {value!r}")
    return value


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """A hard link where the filesystem allows (a version's files never change once written), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
        self.server = Server(self.ws, self.config)
        self._feedback: FeedbackLog | None = None
        self._warn_model_changes()

    @property
    def config(self) -> RagtuneConfig:
        """The workspace's config; assigning another one reconfigures serving too (RandPair, logging)."""
        return self._config

    @config.setter
    def config(self, value: RagtuneConfig) -> None:
        self._config = value
        server: Server | None = getattr(self, "server", None)
        if server is not None:
            server.config = value

    @classmethod
    def init(cls, workspace: str | Path | None = None, config: RagtuneConfig | None = None, **kwargs: Any) -> Ragtune:
        """Create (or open) a workspace."""
        return cls(workspace, create=True, config=config, **kwargs)

    # -- serving state ----------------------------------------------------------------------------
    def serving(self) -> ServingVersion:
        """The loaded current version, reloaded when another process swapped ``CURRENT``."""
        return self.server.current()

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
        return spec_from_config(self.config)

    def model_changes(self) -> list[ModelChange]:
        """The model settings of ``config.json`` that differ from the serving version's model (empty when none, or nothing is indexed).

        Searches always use the serving version's model; :meth:`reindex` re-embeds every document
        with the configured one.
        """
        try:
            cur = self.ws.current_version()
            return model_changes(self.config, ModelSpec.from_dict(self.ws.read_version(cur).model)) if cur else []
        except WorkspaceError:  # a corrupt pointer or manifest: `status` and `doctor` report it
            return []

    def _warn_model_changes(self) -> None:
        try:  # opening a workspace must not fail on what `doctor` reports (a corrupt CURRENT or manifest)
            changes = self.model_changes()
            cur = self.ws.current_version()
        except RagtuneError:
            return
        key = (str(self.ws.root), str(cur), tuple(changes))
        if changes and key not in _MODEL_WARNED:
            _MODEL_WARNED.add(key)
            logger.warning(
                "%s: %s; searches keep using the model of version %s: run `%s` to re-embed every document with the configured model, or undo the edit",
                self.ws.config_path, "; ".join(c.describe() for c in changes), cur, REINDEX_COMMAND,
            )  # fmt: skip

    @property
    def feedback(self) -> FeedbackLog:
        """The workspace's feedback log."""
        if self._feedback is None:
            self._feedback = FeedbackLog(self.ws.feedback_path)
        return self._feedback

    # -- indexing ---------------------------------------------------------------------------------
    def index(
        self, sources: str | Path | Sequence[str | Path], *, replace: bool = False, reindex: bool = False, remove: str | Path | Sequence[str | Path] = ()
    ) -> IndexReport:
        """Index ``sources``: each one's documents are added, changed or removed; other sources' stay.

        Re-indexing is incremental per source: unchanged documents keep their vectors, changed and
        new ones are embedded, documents a source no longer has are dropped; documents of sources
        not given stay as they are. Everything is validated before anything is written; the new
        index becomes current atomically (nothing is written when nothing changed). A new version
        ends a live trial.

        Args:
            sources: A directory of .txt/.md files, a JSONL file or a BEIR folder, or a list of them
                (a source is named by its resolved path). May be empty with ``reindex``.
            replace: Make the index hold exactly the documents of ``sources`` (other sources' go).
            reindex: Re-embed every document with the model configured in ``config.json`` when it
                differs from the serving version's (see :meth:`reindex`).
            remove: Indexed sources whose documents leave the index (the paths need not exist any
                more: a folder that was deleted). ``status()["sources"]`` lists the indexed ones.

        Returns:
            An :class:`~ragtune.indexing.IndexReport` (``.to_dict()`` for JSON; ``report["version"]`` works too).

        Raises:
            InputError: a missing or malformed source, or a doc id that two sources produce.
        """
        from ragtune.recovery import recover

        paths = source_list(sources)
        gone = [str(p.expanduser().resolve()) for p in source_list(remove, "remove")]
        if not paths and not reindex and not gone:
            raise InputError("no source given; pass a directory of .txt/.md files, a .jsonl file or a BEIR folder")
        t0 = time.perf_counter()
        with self.ws.lock("index"):  # the version read here is the one the new index is built from
            recover(self.ws, self.feedback, self.config.trial)
            if pointer := self.ws.pointer_problem():  # not "nothing indexed yet": this index would serve only the sources given
                raise WorkspaceError(f"{pointer}; then index again")
            current = self.ws.current_version()
            if current is not None:  # built on the version CURRENT names, never on a stand-in for it
                try:
                    self.server.current_to_build_on()
                except WorkspaceError as exc:
                    raise WorkspaceError(f"{exc}; then index again") from None
            if reindex and current is None and not paths:
                raise WorkspaceError(f"workspace {self.ws.root} has no index yet; run `ragtune index SOURCE` first")
            served = ModelSpec.from_dict(self.ws.read_version(current).model) if current else None
            switch = served is None or (reindex and bool(model_changes(self.config, served)))
            spec = self._config_spec() if switch or served is None else served
            embedder = self.serving().embedder if current and not switch else Embedder(spec, self.ws.root, self.config.model.device, self.config.model.batch_size)
            tokenize = embedder.token_offsets if any(p.is_dir() and not is_beir_dir(p) for p in paths) else None
            entries = self.serving().docs.entries() if current else []
            old = [IndexedDoc(i, h, src, pos) for pos, (i, h, src) in enumerate(entries)]  # no old text: kept docs are read when written
            keys = list(dict.fromkeys(source_key(p) for p in paths))
            nested = nested_source(keys, set() if replace else {d.source for d in old if d.source and d.source not in gone})
            if nested:
                src, other = nested
                inner, outer = (src, other) if Path(src).is_relative_to(other) else (other, src)
                why = f"{outer} holds {inner} ({other}: {'also given' if other in keys else 'already indexed'}): the files inside would be indexed twice, under two ids"
                raise InputError(
                    f"{why}; index one of them (remove=[...] drops an indexed source)",
                    cli=f"{why}; index one of them (`ragtune index --remove SOURCE` drops an indexed source)",
                )
            new = load_sources(paths, tokenize, self.config.chunk.chunk_tokens, self.config.chunk.overlap_tokens) if paths else []
            given = list(dict.fromkeys(d.source for d in new)) if paths else []
            if gone:
                indexed = {d.source for d in old}
                unknown = [g for g in gone if g not in indexed]
                if unknown:
                    raise InputError(
                        f"{unknown[0]} is not an indexed source; status()['sources'] lists them",
                        cli=f"{unknown[0]} is not an indexed source; `ragtune status` lists them",
                    )
                removed_counts = {g: sum(1 for d in old if d.source == g) for g in gone}
                old = [d for d in old if d.source not in set(gone)]
            plan = plan_index(old, new, given, replace=replace or current is None)
            if gone:
                plan.sources.extend(SourceReport(source=g, status="removed", removed=n) for g, n in removed_counts.items())
            if not plan.docs:
                raise InputError("the index would hold no documents; give a source that has some")
            untracked = sum(1 for d in plan.docs if d.source == "")
            if untracked and not replace:
                logger.warning(
                    "%d documents indexed before sources were tracked are kept: ragtune cannot tell which source they came from, "
                    "so a document deleted from its source stays; index every source once with replace=True "
                    "(`ragtune index --replace SOURCE...`) to adopt or drop them", untracked,
                )  # fmt: skip
            checkpoint("index.loaded")
            del old, new
            report = self._write_index(plan, entries, spec, embedder, current, t0, reindexed=current is not None and switch)
            report.sources = plan.sources
            if not report.written:
                logger.info("index unchanged (%d docs)", report.n_docs)
            return report

    def reindex(self) -> IndexReport:
        """Re-embed every current document with the model configured in ``config.json``, as a new version.

        Use it after changing the model settings (``model.name``, prefixes, ``max_seq_length``): the
        serving version keeps its model until then. The new version has no fine-tuning (it is a new
        base model) and ends a live trial; documents keep their ids, sources and chunks. When the
        config's model already is the serving one, nothing is written.

        Returns:
            An :class:`~ragtune.indexing.IndexReport`.

        Raises:
            WorkspaceError: nothing is indexed yet.
        """
        return self.index([], reindex=True)

    def _resolve_kept(self, planned: list[Document | IndexedDoc]) -> list[Document]:
        """The plan's documents with each kept one (an :class:`IndexedDoc`) read back from the serving doc store."""
        kept = [d.pos for d in planned if isinstance(d, IndexedDoc)]
        if not kept:
            return [d for d in planned if isinstance(d, Document)]
        texts = dict(zip(kept, self.serving().docs.get(kept)))  # get() reads them a few hundred at a time
        return [texts[d.pos] if isinstance(d, IndexedDoc) else d for d in planned]

    def _write_index(
        self, plan: IndexPlan, old_rows: list[tuple[str, str, str]], spec: ModelSpec, embedder: Embedder, current: str | None, t0: float,
        *, reindexed: bool = False,
    ) -> IndexReport:  # fmt: skip
        """Embed what changed, reuse the other vectors, write the version. ``old_rows``: the serving doc store's entries.

        The plan's documents are taken from it (``plan.docs`` is emptied), so that once they and the
        vectors are saved to scratch files nothing holds them while the vector store is built. Kept
        documents are references; their texts are read back only when a version is written.
        """
        planned, plan.docs = plan.docs, []
        timings = {"load": 0.0, "embed": 0.0, "write": 0.0}
        old: dict[str, tuple[int, str]] = {}
        old_vecs: np.ndarray | None = None
        if current is not None:
            serving = self.serving()
            if spec.document_side() == serving.spec.document_side():  # same model: unchanged docs keep their vectors
                old = {i: (pos, h) for pos, (i, h, _) in enumerate(old_rows)}
                old_vecs = serving.vectors()
        before = {i: h for i, h, _ in old_rows}
        hashes = [d.content_hash for d in planned]  # an IndexedDoc carries its hash: no old text is read
        reuse = [i for i, (d, h) in enumerate(zip(planned, hashes)) if d.id in old and old[d.id][1] == h]
        reused = set(reuse)
        todo = [i for i in range(len(planned)) if i not in reused]
        added = sum(1 for d in planned if d.id not in before)
        unchanged = sum(1 for d, h in zip(planned, hashes) if before.get(d.id) == h)
        removed = len(set(before) - {d.id for d in planned})

        n_docs = len(planned)

        truncated = 0

        def report(version: str, written: bool, embedded: int) -> IndexReport:
            return IndexReport(
                version=version, written=written, n_docs=n_docs, added=added, changed=n_docs - added - unchanged, unchanged=unchanged,
                removed=removed, embedded=embedded, seconds=time.perf_counter() - t0, model=spec.label(), reindexed=reindexed and written,
                timings={k: round(v, 3) for k, v in timings.items()}, truncated=truncated,
            )  # fmt: skip

        if current is not None and not todo and old_rows == [(d.id, h, d.source) for d, h in zip(planned, hashes)]:
            return report(current, False, 0)
        docs = self._resolve_kept(planned)
        over = embedder.over_limit([docs[i].embed_text for i in todo])
        truncated = len(over)
        if over:
            i, n = over[0]
            limit = getattr(embedder.model, "max_seq_length", 0)
            logger.warning(
                "%d of the %d documents embedded are longer than the model's %d-token limit (e.g. %r, %d tokens): only their start is "
                "embedded, so searches cannot find what the rest says; .txt/.md files are chunked (chunk.chunk_tokens), JSONL rows "
                "and BEIR documents are not: split long ones before indexing", len(over), len(todo), limit, docs[todo[i]].id, n,
            )  # fmt: skip
        t1 = time.perf_counter()
        timings["load"] = t1 - t0
        if len(todo) == len(docs):  # every doc embedded: the encoder's matrix is the version's (one corpus-sized matrix, not two)
            vectors = encode_corpus(embedder, [d.embed_text for d in docs], self.config.model, progress=self.progress)
        else:
            vectors = np.zeros((len(docs), embedder.dim), dtype=np.float32)
            if reuse and old_vecs is not None:  # copied a block at a time: no second corpus-sized temporary
                src = np.fromiter((old[docs[i].id][0] for i in reuse), dtype=np.int64, count=len(reuse))
                dst = np.asarray(reuse, dtype=np.int64)
                for a in range(0, len(dst), 65_536):
                    vectors[dst[a : a + 65_536]] = old_vecs[src[a : a + 65_536]]
                    release_pages(old_vecs)
            if todo:
                vectors[todo] = encode_corpus(embedder, [docs[i].embed_text for i in todo], self.config.model, progress=self.progress)
        t2 = time.perf_counter()
        timings["embed"] = t2 - t1
        note = f"re-embedded {len(docs)} docs with {spec.label()}" if reindexed else f"indexed {len(docs)} docs"
        decision = new_decision("indexed", previous=current, n_docs=len(docs), added=added, removed=removed, embedded=len(todo))
        # saved and let go: the vector store is built from the files, with neither the documents nor the matrix held
        saved = self.ws.save_vectors(vectors)
        del vectors
        saved_docs: Path | None = None
        try:
            saved_docs = self.ws.save_docs(docs)
            del docs, planned
            release_heap()
            checkpoint("index.embedded")
            name = self.ws.write_version(
                config_with_model(self.config, spec), spec, kind="index", parent=current, docs=saved_docs, vectors=saved, note=note,
                write_files=lambda staging, rel: self._carry_model_files(current, spec, staging, rel), decision=decision, stage="index.staged",
            )  # fmt: skip
        finally:
            for path in (saved, saved_docs):  # moved into the version by then, unless something failed first
                if path is not None:
                    path.unlink(missing_ok=True)
        checkpoint("index.swapped")
        self.ws.append_log({**decision, "version": name})
        ended = self._end_trial(f"`index` made a new serving version, {name}", announce=True)
        timings["write"] = time.perf_counter() - t2
        done = report(name, True, len(todo))
        done.trial_ended = ended
        return done

    def _carry_model_files(self, current: str | None, spec: ModelSpec, staging: Path, rel: str) -> ModelSpec:
        """A re-index keeps the model: the new version gets its own copy of the model's files (adapter,
        query tier), so that pruning the version they came from never breaks it, and its record of
        the feedback it was trained on (and its out-of-fold vectors)."""
        if current is not None and spec == self.serving().spec:
            for fname in (TRAINED_FILE, OOF_FILE):
                src = self.ws.version_dir(current) / fname
                if src.is_file():
                    shutil.copy2(src, staging / fname)
        fields = spec.to_dict()
        for key in MODEL_FILE_KEYS:
            owner = version_file(fields.get(key))
            if owner is not None and owner[1].parts:  # a file of an earlier version
                src, inside = self.ws.root / fields[key], owner[1]
                (staging / inside).parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, staging / inside, copy_function=_link_or_copy)
                else:
                    _link_or_copy(src, staging / inside)
                fields[key] = f"{rel}/{inside.as_posix()}"
        return ModelSpec(**fields)

    # -- search -----------------------------------------------------------------------------------
    def search(
        self, query: str, k: int = 10, *, log: bool | None = None, run_id: str | uuid.UUID | None = None, trace_id: str | uuid.UUID | None = None
    ) -> SearchResults:
        """Retrieve the top ``k`` documents for ``query``.

        While a trial is live, a share (``trial.share``) of logged searches is answered by
        team-draft interleaving of the serving and the trial rankings (``SearchResults.trial`` is
        then set); users' clicks on them decide the trial.

        Args:
            query: The query text.
            k: Number of results (a positive int).
            log: Record the query and what was shown in the feedback log (default from config).
                A log that cannot be written never fails the search: the results come back with
                ``query_id`` ``None``, the problem is logged once (``logging``), and :meth:`status`
                reports it under ``feedback_health``.
            run_id: The app's id for the run that searched (e.g. a LangChain / LangSmith run id),
                logged with the query: feedback can then be given by it (:meth:`query_id_for_run`).
            trace_id: The id of the trace (root run) that run belongs to, logged likewise.

        Returns:
            :class:`SearchResults`, a list of :class:`Hit` with ``.query_id`` set when logged.

        Raises:
            InputError: an empty query, or ``k`` not a positive int.
        """
        if log is not None and not isinstance(log, bool):  # "false" would be truthy: it would log
            raise InputError(f"log must be True, False or None (the config's feedback.log_queries), got {log!r}")
        do_log = self.config.feedback.log_queries if log is None else log
        runs = {name: _run_id(name, value) for name, value in (("run_id", run_id), ("trace_id", trace_id))}
        return self.server.search(query, k, log=self.feedback if do_log else None, **runs)

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """Rank ``k`` docs for many queries at once (no logging); ``[(doc_id, score), ...]`` per query."""
        serving = self.serving()
        qv = serving.embedder.encode_queries(list(queries), progress=self.progress and len(queries) > 256)
        scores, pos = serving.store.search(qv, k)
        ids = serving.docs.ids
        return [[(ids[p], float(s)) for p, s in zip(prow, srow) if p >= 0] for prow, srow in zip(pos, scores)]

    # -- feedback ---------------------------------------------------------------------------------
    def _check_doc(self, query_id: str, doc_id: str) -> str:
        """The id to record: a document the search showed, or one in the current index (a shown one may have left it since: late feedback stays valid).

        An id that differs from a known one only in how its accents are composed (Unicode NFC/NFD:
        a browser, a file system or a copy-paste may change it) is that id.
        """
        serving = self.serving()

        def known(candidate: str) -> bool:
            return bool(serving.docs.positions([candidate])) or self.feedback.was_shown(query_id, candidate)

        for candidate in dict.fromkeys([doc_id, unicodedata.normalize("NFC", doc_id), unicodedata.normalize("NFD", doc_id)]):
            if known(candidate):
                return candidate
        self.feedback.require_query(query_id)  # both unknown: name the query first (the doc's message presumes it)
        raise UnknownIdError(
            f"unknown doc id {doc_id!r}: it is not in the current index ({serving.name}, {len(serving.docs)} docs) and was not shown for query {query_id}"
        )

    def _recorded(self, feedback_id: str | None, content: tuple[str, str, str, float | int | None]) -> bool:
        """``feedback_id`` is already recorded with this content (other content: the log's insert raises the conflict)."""
        return feedback_id is not None and self.feedback.feedback_by_id(feedback_id) == content

    def click(self, query_id: str, doc_id: str, *, dwell: float | None = None, feedback_id: str | None = None) -> bool:
        """Record that the user opened ``doc_id`` from the results of ``query_id``.

        Feedback may come late: a query id stays valid after the serving version changed.

        Args:
            query_id: ``SearchResults.query_id`` of the logged search.
            doc_id: The document opened: one the search showed, or one in the current index.
            dwell: Seconds spent on it: a finite number >= 0, or ``None``.
            feedback_id: The caller's id for this click (e.g. a UUID made by the front end):
                sending it again is a no-op, so a retry never counts twice.

        Returns:
            ``True`` when recorded; ``False`` when ``feedback_id`` was already recorded with the same content.

        Raises:
            FeedbackError: an empty id or a bad dwell.
            UnknownIdError: an unknown query id or doc id (a ``FeedbackError`` too).
            FeedbackConflictError: ``feedback_id`` was already recorded with other content.
            FeedbackLogError: the feedback log cannot be written (the message names the file and the fix).
        """
        validate_click(query_id, doc_id, dwell)
        if self._recorded(feedback_id, ("click", query_id, doc_id, None if dwell is None else float(dwell))):
            return False  # a retry: a duplicate even when the doc has left the index since
        doc_id = self._check_doc(query_id, doc_id)
        return self.feedback.click(query_id, doc_id, dwell=dwell, feedback_id=feedback_id)

    def rate(self, query_id: str, doc_id: str, value: int, *, feedback_id: str | None = None) -> bool:
        """Record an explicit thumbs-up (+1) or thumbs-down (-1).

        Args:
            query_id: ``SearchResults.query_id`` of the logged search.
            doc_id: The document rated: one the search showed, or one in the current index.
            value: The int ``1`` or ``-1`` (not ``True``/``False``).
            feedback_id: The caller's id for this rating: sending it again is a no-op.

        Returns:
            ``True`` when recorded; ``False`` when ``feedback_id`` was already recorded with the same content.

        Raises:
            FeedbackError: an empty id or a value other than +1/-1.
            UnknownIdError: an unknown query id or doc id (a ``FeedbackError`` too).
            FeedbackConflictError: ``feedback_id`` was already recorded with other content.
            FeedbackLogError: the feedback log cannot be written.
        """
        value = validate_rating(query_id, doc_id, value)
        if self._recorded(feedback_id, ("rating", query_id, doc_id, value)):
            return False  # a retry: a duplicate even when the doc has left the index since
        doc_id = self._check_doc(query_id, doc_id)
        return self.feedback.rate(query_id, doc_id, value, feedback_id=feedback_id)

    def query_id_for_run(self, run_id: str | uuid.UUID, doc_id: str | None = None) -> str:
        """The query id logged for a run id given to :meth:`search` (as ``run_id`` or ``trace_id``).

        A run that searched more than once (an agent, a multi-query retriever) gives its newest
        search; with ``doc_id``, its newest search that showed that document.

        Example:
            >>> rt.rate(rt.query_id_for_run(run_id, doc_id), doc_id, 1)   # doctest: +SKIP

        Raises:
            InputError: ``run_id`` is not a non-empty string or UUID.
            UnknownIdError: no logged search has that run id, or (with ``doc_id``) none of its
                searches showed that document (a ``FeedbackError`` too).
        """
        rid = _run_id("run_id", run_id)
        if rid is None:
            raise InputError("run_id must be a non-empty string or UUID, got None")
        qids = self.feedback.query_ids_for_run(rid, doc_id)
        if not qids and doc_id is not None and self.feedback.query_ids_for_run(rid):
            raise UnknownIdError(
                f"doc id {doc_id!r} was not shown by any search of run id {rid!r}: feedback on a run is about a document its "
                "searches returned; pass the doc id of one of its results"
            )
        if not qids:
            raise UnknownIdError(
                f"unknown run id {rid!r}: no logged search was made with it; pass run_id= (or trace_id=) to search(), "
                "as the LangChain retriever does for each retrieval run"
            )
        return qids[0]

    def import_feedback(self, path: str | Path) -> ImportReport:
        """Import an event or triplet JSONL file (all-or-nothing, idempotent); see :meth:`FeedbackLog.import_file`.

        Returns:
            An :class:`~ragtune.feedback.ImportReport`: what was added, and what the log already held
            (importing the same file twice adds nothing the second time).

        Raises:
            InputError: a missing file, a directory, or a bad line (named ``file:line`` with the field).
            FeedbackLogError: the feedback log cannot be written.
        """
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
                f"{changed} changed); use a fresh --workspace for this evaluation or `ragtune index --replace {root}` to replace its corpus"
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

    def refresh(
        self,
        *,
        mode: str | None = None,
        force: bool = False,
        trial: bool = True,
        eval_beir: str | Path | None = None,
        eval_split: str = "test",
        min_new_events: int | None = None,
    ) -> RefreshReport:
        """Settle the live trial, then mine → train one candidate → offline check → stage it as a trial.

        Args:
            mode: ``"query"``, ``"lora"``, ``"full"`` or ``"auto"`` (default ``train.mode``).
            force: Train even with fewer than ``refresh.min_new_events`` new events, and a LoRA/full
                candidate even soon after one was refused (a trial is still required).
            trial: ``False`` promotes a candidate that passes the offline check at once, without a
                trial: an explicit operator choice (a LoRA/full candidate must then be ahead of the
                serving model offline, not only not behind it).
            eval_beir: A labelled BEIR folder: promote a candidate that passes the offline check only
                if it also beats the serving model on its ``eval_split`` (no trial then).
            eval_split: The split of ``eval_beir``.
            min_new_events: Override ``refresh.min_new_events``.

        Returns:
            A :class:`~ragtune.refresh.RefreshReport` (``status``: ``"skipped"``, ``"trial_running"``,
            ``"refused"``, ``"trial_started"`` or ``"promoted"``; ``.to_dict()`` for JSON).

        Raises:
            RefreshLockedError: another refresh or index run holds the workspace.
        """
        from ragtune.errors import ConfigError
        from ragtune.refresh import run_refresh

        if mode is not None and mode not in ("lora", "full", "query", "auto"):
            raise ConfigError(f"refresh mode must be one of lora, full, query, auto; got {mode!r}")
        return run_refresh(
            self.ws, self.config, self.server, self.feedback, mode=mode, force=force, trial=trial,
            eval_beir=eval_beir, eval_split=eval_split, min_new_events=min_new_events, progress=self.progress,
        )  # fmt: skip

    def trial(self) -> dict[str, Any] | None:
        """The live trial with what the test says now (wins, losses, ties, p-value, verdict), or ``None``."""
        from ragtune.trial import trial_status

        live = trial_status(self.ws, self.feedback, self.config.trial)
        if live is None:
            return None
        state, decision = live
        return {**state.to_dict(), **decision.to_dict()}

    def decide_trial(self) -> dict[str, Any] | None:
        """Act on the live trial's test now (promote, drop, or leave it running), under the workspace lock."""
        from ragtune.recovery import replay_decisions
        from ragtune.trial import settle

        with self.ws.lock("trial"):
            replay_decisions(self.ws, self.feedback, self.config.trial)
            done = settle(self.ws, self.feedback, self.config.trial)
            if done is not None and done[1].verdict != "continue":
                self.ws.prune_versions(self.config)
        return None if done is None else {**done[0].to_dict(), **done[1].to_dict()}

    def stop_trial(self, reason: str = "stopped by the operator") -> dict[str, Any] | None:
        """Drop the live trial now (its version's files are discarded); ``None`` when none is live."""
        from ragtune.recovery import replay_decisions

        with self.ws.lock("trial"):
            replay_decisions(self.ws, self.feedback, self.config.trial)
            return self._end_trial(reason)

    def _end_trial(self, reason: str, *, announce: bool = False) -> dict[str, Any] | None:
        """Drop the live trial, if any; ``announce``: say so (a warning), for commands whose own output is about something else."""
        from ragtune.trial import stop_trial

        done = stop_trial(self.ws, self.feedback, self.config.trial, reason)
        if done is None:
            return None
        state, decision = done
        if announce:
            logger.warning("trial %s (%s) dropped: %s (%d wins, %d losses in %d interleaved searches)", state.id, state.version, reason,
                           decision.counts.wins, decision.counts.losses, decision.counts.searches)  # fmt: skip
        return {**state.to_dict(), **decision.to_dict()}

    def versions(self) -> list[dict[str, Any]]:
        """Every version on disk (oldest first) with kind, model, metrics, trial, feedback counts, dates."""
        try:
            cur = self.ws.current_version()
        except WorkspaceError as exc:  # still list them: the listing is how one picks a version to roll back to
            logger.warning("%s", exc)
            cur = None
        try:
            live = (self.ws.read_trial() or {}).get("version")
        except WorkspaceError as exc:
            logger.warning("%s", exc)
            live = None
        served = self.ws.served_versions()
        return [{**v.to_dict(), "current": v.name == cur, "trial_live": v.name == live, "never_served": v.name not in served} for v in self.ws.list_versions()]

    def rollback(self, version: str | None = None) -> str:
        """Make ``version`` (default: the current one's parent) current, instantly; a live trial is then dropped.

        Raises:
            RefreshLockedError: a refresh or index run holds the workspace; the message names its pid
                (stopping it leaves the serving version as it was).
            WorkspaceError: ``version`` does not exist, or there is no earlier version.
        """
        try:
            with self.ws.lock("rollback"):
                return self._rollback_locked(version)
        except RefreshLockedError as exc:  # the operator's lever must say how to pull it now
            pid = self.ws.lock_holder_pid()
            if pid is None or pid == os.getpid():  # this process's own refresh (a service's POST /refresh): nothing to kill
                raise
            raise RefreshLockedError(
                f"{exc}; to roll back now, stop it first (kill {pid}): a stopped refresh or index leaves the workspace consistent "
                "(the version swap is atomic), then roll back"
            ) from None

    def _rollback_locked(self, version: str | None) -> str:
        from ragtune.recovery import recover

        recover(self.ws, self.feedback, self.config.trial)
        try:
            previous = self.ws.current_version()
        except WorkspaceError:  # a corrupt CURRENT: naming a version rewrites it
            previous = None
        name = self.ws.rollback(version)  # validates before anything changes
        self.ws.append_log({"event": "rolled_back", "version": name, "previous": previous})
        self._end_trial(f"rollback to {name}", announce=True)
        return name

    def doctor(self, *, repair: bool = False) -> DoctorReport:
        """Check the workspace and, with ``repair``, fix what can be fixed safely; see :mod:`ragtune.doctor`."""
        from ragtune.doctor import diagnose

        report = diagnose(self.ws.root, repair=repair)
        self._feedback = None  # a repaired log is a new file
        return report

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Workspace, model, current version, doc count, sources, sizes, feedback counts.

        ``sources`` lists ``{"source", "n_docs"}`` in index order (source ``""``: documents indexed
        before sources were tracked). ``model_changes`` lists the model settings of ``config.json``
        that differ from the serving model (``{"key", "configured", "serving"}``), with
        ``model_fix`` the command that applies them (``None`` when there are none).

        ``feedback`` holds the log's counts (``None`` when it cannot be read) and ``feedback_health``
        a :class:`~ragtune.feedback.FeedbackCheck` dict: ``ok``, ``state`` (``"ok"``, ``"absent"``,
        ``"corrupt"``, ``"unwritable"``, ...), ``message`` and ``fix``. A broken log never fails status.
        """
        problems: list[str] = []  # what else keeps the workspace from working (`ragtune doctor` says more)
        try:
            cur = self.ws.current_version()
        except WorkspaceError as exc:
            problems.append(str(exc))
            cur = None
        if not problems and (pointer := self.ws.pointer_problem()):
            problems.append(pointer)
        out: dict[str, Any] = {"workspace": str(self.ws.root), "current_version": cur, "model": self._config_spec().label(), "n_docs": 0, "backend": self.config.index.backend, "index_kind": self.config.index.kind}
        out["sources"] = []
        changes = self.model_changes()
        out["model_changes"] = [c.to_dict() for c in changes]
        out["model_fix"] = (
            f"searches use the serving model; run `{REINDEX_COMMAND}` to re-embed every document with the configured one, or undo the edit to config.json"
            if changes else None
        )  # fmt: skip
        try:
            serving = self.serving() if cur is not None or problems else None
        except RagtuneError as exc:
            problems.append(str(exc))
            serving = None
        if serving is not None:
            if cur is not None and serving.name != cur and not problems:
                problems.append(f"version {cur} cannot be opened; searches are answered by version {serving.name}; `ragtune doctor` says what is damaged")
            out["current_version"] = serving.name
            out["model"] = serving.spec.label()
            out["n_docs"] = len(serving.docs)
            out["kind"] = serving.info.kind
            out["index_built"] = serving.store.kind
            out["index_version"] = serving.info.index_version
            out["sources"] = [{"source": src, "n_docs": n} for src, n in serving.docs.source_counts()]
        health = self.feedback.check(thorough=False)  # never raises: a broken log is reported, not fatal
        try:
            out["trial"] = self.trial() if self.ws.feedback_path.exists() or self.ws.trial_path.exists() else None
        except FeedbackLogError as exc:  # the trial's wins and losses are in the log
            logger.warning("cannot read the live trial's results: %s", exc)
            out["trial"] = None
        except WorkspaceError as exc:  # an unreadable TRIAL
            problems.append(str(exc))
            out["trial"] = None
        out["problems"] = problems
        out["versions"] = len(self.ws.list_versions())
        out["size_bytes"] = sum(p.stat().st_size for p in self.ws.root.rglob("*") if p.is_file())
        out["feedback"] = health.counts  # None when the log cannot be read
        out["feedback_health"] = health.to_dict()
        return out

