"""Serving: open a version, follow the workspace's pointers, answer searches, interleave during a trial.

:class:`ServingVersion` is everything loaded for one version (manifest, doc store, vector store,
embedder). :class:`Server` follows ``CURRENT`` and ``TRIAL`` across processes (a refresh in another
process swaps them; the next search here picks the change up) and answers a search: from the
serving version, or, for a share of logged searches while a trial is live, by team-draft
interleaving of the serving and the trial rankings (:mod:`ragtune.interleave`), each impression
logged with its team. A trial that cannot be loaded or searched never fails a search: it is
answered by the serving version alone, and the problem is logged once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

import numpy as np

from ragtune.config import RagtuneConfig
from ragtune.docstore import DocStore
from ragtune.embedder import Embedder, ModelSpec
from ragtune.errors import FeedbackLogError, InputError, WorkspaceError
from ragtune.feedback import FeedbackLog, Impression
from ragtune.index import VectorStore, open_store
from ragtune.interleave import team_draft
from ragtune.records import Hit, SearchResults
from ragtune.trial import TrialState
from ragtune.workspace import Workspace, store_name

__all__ = ["Server", "ServingVersion"]

logger = logging.getLogger(__name__)

#: Seconds between tries to open a version that failed to open (a stand-in serves meanwhile).
RETRY_S = 30.0

#: Feedback log path -> the kind of write failure already warned about: one warning per failure, per process.
_LOG_FAILURES: dict[str, str] = {}


def _log_search(log: FeedbackLog, query: str, imps: list[Impression], **kwargs: object) -> str | None:
    """Log a search; ``None`` when the log cannot be written (warned once, never raised: logging is off the critical path)."""
    key = str(log.path)
    try:
        qid = log.log_query(query, imps, **kwargs)  # type: ignore[arg-type]
    except FeedbackLogError as exc:
        if _LOG_FAILURES.get(key) != exc.kind:
            _LOG_FAILURES[key] = exc.kind
            what = "searches are answered but not logged (no query ids, so no clicks)"
            logger.warning("%s: %s", what, exc, extra={"ragtune_cli": f"{what}: {exc.cli_message()}"})
        return None
    if _LOG_FAILURES.pop(key, None) is not None:
        logger.warning("the feedback log %s is writable again: searches are logged", key)
    return qid


class ServingVersion:
    """Everything loaded for one version: manifest, doc store, vector store, embedder.

    Args:
        ws: The workspace.
        config: The workspace config (device, batch size, index settings).
        name: The version to open.
        share_with: A loaded version; when it searches the same index (a query tier over it, or
            the index version itself), its doc store, vector store and vectors are shared rather
            than opened again (at a million documents an HNSW index is about 2 GB).

    Attributes:
        name: The version's name.
        info: Its manifest.
        index_info: The manifest of the version whose index it searches (itself, or the one a
            query tier sits on).
        docs: The doc store (row ``i`` = row ``i`` of the vectors).
        store: The vector store.
        spec: The model spec.
        embedder: Encodes queries (query tier applied) and documents.
    """

    def __init__(self, ws: Workspace, config: RagtuneConfig, name: str, share_with: ServingVersion | None = None) -> None:
        self.name = name
        self.info = ws.read_version(name)
        if self.info.discarded:
            raise WorkspaceError(f"version {name} is a dropped trial whose files were discarded")
        self.index_info = self.info if self.info.index_version == name else ws.read_version(self.info.index_version)
        self.index_dir = ws.version_dir(self.info.index_version)
        self._vectors: np.ndarray | None = None
        self.docs: DocStore
        self.store: VectorStore
        if share_with is not None and share_with.index_dir == self.index_dir:
            self.docs, self.store, self._vectors = share_with.docs, share_with.store, share_with._vectors
        else:
            self.docs = DocStore(self.index_dir)
            backend = self.index_info.model.get("_backend")
            self.store = open_store(self.index_dir, config.index, name=store_name(ws, self.info.index_version), backend=backend)
        self.spec = ModelSpec.from_dict(self.info.model)
        self.embedder = Embedder(self.spec, ws.root, config.model.device, config.model.batch_size)
        # the query tier's files are small: load them now, so a version whose files are removed
        # later (a dropped trial) keeps answering from memory
        _ = self.embedder.query_map, self.embedder.query_memory

    def vectors(self) -> np.ndarray:
        """The document vectors (memory-mapped, read-only; opened once: a version never changes)."""
        if self._vectors is None:
            self._vectors = np.load(self.index_dir / "vectors.npy", mmap_mode="r")
        return self._vectors

    def ranking(self, query_vector: np.ndarray, k: int) -> tuple[list[str], list[float]]:
        """The top ``k`` doc ids and scores of one encoded query."""
        scores, pos = self.store.search(query_vector.reshape(1, -1), k)
        keep = pos[0] >= 0
        positions = [int(p) for p in pos[0][keep]]
        ids = self.docs.ids
        return [ids[p] for p in positions], [float(s) for s in scores[0][keep]]

    def hits(self, doc_ids: list[str], scores: list[float], fallback: ServingVersion | None = None) -> list[Hit]:
        """Hits ranked as given, with texts from this version's doc store (else ``fallback``'s); unknown ids are left out."""
        pmap = self.docs.positions(doc_ids)
        docs = {d.id: d for d in self.docs.get([pmap[d] for d in doc_ids if d in pmap])}
        missing = [d for d in doc_ids if d not in docs]
        if missing and fallback is not None:
            fmap = fallback.docs.positions(missing)
            docs.update({d.id: d for d in fallback.docs.get(list(fmap.values()))})
        found = [(d, s) for d, s in zip(doc_ids, scores) if d in docs]
        return [Hit(d, s, r, docs[d].text, docs[d].title, docs[d].metadata) for r, (d, s) in enumerate(found, 1)]


class Server:
    """The serving side of a workspace: follows ``CURRENT`` and ``TRIAL`` and answers searches.

    Args:
        ws: The workspace.
        config: Its config.
    """

    def __init__(self, ws: Workspace, config: RagtuneConfig) -> None:
        self.ws = ws
        self.config = config
        self._lock = threading.Lock()
        self._current: ServingVersion | None = None
        self._token: tuple[int, int] | None = None  # None while a stand-in serves for a version that failed to open
        self._trial: tuple[TrialState, ServingVersion] | None = None
        self._trial_token: tuple[int, int] | None = None
        self._trial_failed: set[str] = set()
        self._trial_loading = False
        self._open_failed: set[str] = set()  # versions that failed to open (warned about once)
        self._opened_at = 0.0
        self._standin_for: tuple[int, int] | None = None  # CURRENT's token while a stand-in serves for the version it names
        #: The coins of interleaving and of the RandPair intervention (seed it for reproducible runs).
        self.rng = random.Random()
        self._rng_pid, self._rng_id = os.getpid(), id(self.rng)

    def _coins(self) -> random.Random:
        """:attr:`rng`, fresh in a process forked from the one that made it (gunicorn ``--preload``, a
        multiprocessing pool): a copied generator would flip the same coins in every worker, so one
        flip would decide many searches of a trial at once."""
        pid = os.getpid()
        if pid != self._rng_pid:
            if id(self.rng) == self._rng_id:  # the parent's generator, copied (one the app set after the fork is its own)
                self.rng = random.Random()
            self._rng_pid = pid
        self._rng_id = id(self.rng)
        return self.rng

    def current(self) -> ServingVersion:
        """The loaded current version, reloaded when another process swapped ``CURRENT``.

        A damaged workspace never stops searches while an intact version is left: a ``CURRENT``
        that is missing, unreadable or names a version that is gone, and a version whose files
        cannot be opened, are answered by the version already loaded, else by a stand-in
        (:meth:`Workspace.stand_ins`: the nearest ancestor that served); the log says once what
        happened and what fixes it (``ragtune doctor --repair``). A version that failed to open is
        tried again after :data:`RETRY_S` seconds, and at once when ``CURRENT`` changes.

        Raises:
            WorkspaceError: nothing was indexed yet, or no version can be opened (one line naming
                the version, what failed and the fix).
        """
        with self._lock:
            token = self.ws.current_token()  # read under the lock: a thread with an older token cannot mark the wrong one
            loaded = self._current
            retry = token != self._standin_for or time.monotonic() - self._opened_at >= RETRY_S
            if loaded is None or (token != self._token and retry):  # a stand-in serves on while the version CURRENT names failed to open moments ago
                name = self._pointer()
                if loaded is None or loaded.name != name:
                    loaded = self._current = self._open(name)
                self._token, self._standin_for = (token, None) if loaded.name == name else (None, token)
            return loaded

    def current_to_build_on(self) -> ServingVersion:
        """:meth:`current`, for a command that builds a version on it: never a stand-in.

        Raises:
            WorkspaceError: ``CURRENT`` is damaged, or names a version that cannot be opened (a
                version built on a stand-in would silently lose what the named one holds).
        """
        if pointer := self.ws.pointer_problem():
            raise WorkspaceError(pointer)
        with self._lock:
            self._opened_at = -RETRY_S  # a stand-in serving: try the named version again now (a repair may have fixed it)
        serving = self.current()
        named = self.ws.current_version()
        if serving.name != named:
            raise WorkspaceError(
                f"version {named} (CURRENT) cannot be opened, so searches are answered by {serving.name}; `ragtune doctor` says what is "
                f"damaged, and `ragtune doctor --repair` or `ragtune rollback VERSION` makes an intact version current"
            )
        return serving

    def _pointer(self) -> str:
        """``CURRENT``'s version; when ``CURRENT`` is missing (versions exist) or unreadable, the loaded version, else :meth:`Workspace.last_good_version`."""
        try:
            name = self.ws.current_version()
        except WorkspaceError as exc:
            problem = exc
        else:
            if name is not None:
                return name  # one that is gone is handled by _open
            missing = self.ws.pointer_problem()
            if missing is None or (self._current is None and self.ws.lock_holder() is not None and not self.ws.served_versions()):
                # nothing indexed, or a first index still running (its version in place, CURRENT not written yet)
                raise WorkspaceError(
                    f"workspace {self.ws.root} has no index yet; call index(SOURCES) first",
                    cli=f"workspace {self.ws.root} has no index yet; run `ragtune index SOURCE` first",
                )
            problem = WorkspaceError(missing)
        fallback = self._current.name if self._current is not None else self.ws.last_good_version()
        if fallback is None:
            raise problem
        logger.warning("%s; searches are answered by version %s meanwhile", problem, fallback)  # once per change of CURRENT
        return fallback

    def _open(self, name: str) -> ServingVersion:
        """Version ``name``, loaded (a loaded trial of that name is reused; one over the same index shares it).

        A version that cannot be opened (gone, or a file missing or damaged) leaves the loaded
        version serving, else the first of :meth:`Workspace.stand_ins` that opens; warned about once.
        """
        trial = self._trial[1] if self._trial is not None else None
        if trial is not None and trial.name == name:
            logger.info("serving version %s", name)
            return trial
        self._opened_at = time.monotonic()
        try:
            opened = ServingVersion(self.ws, self.config, name, self._current)
            logger.info("serving version %s", name)
            return opened
        except Exception as exc:  # a damaged version must not break search while another can serve
            why = f"version {name} cannot be opened ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})"
            error = exc
        fix = "`ragtune doctor` says what is damaged; `ragtune doctor --repair` or `ragtune rollback VERSION` makes an intact version current"
        for other in self.ws.stand_ins(name):  # the loaded version only where it comes in that order (not the one a rollback left)
            if self._current is not None and other == self._current.name:
                opened = self._current
            else:
                try:
                    opened = ServingVersion(self.ws, self.config, other, self._current)
                except Exception:  # try the next one
                    continue
            if name not in self._open_failed:  # once per version, though it is retried every RETRY_S seconds
                logger.warning("%s; searches are answered by version %s meanwhile; %s", why, other, fix)
                self._open_failed.add(name)
            return opened
        if self._current is not None:  # nothing that served opens: keep answering with what is loaded
            logger.warning("%s; searches are answered by version %s meanwhile; %s", why, self._current.name, fix)
            return self._current
        raise WorkspaceError(f"{why}; {fix}") from error

    def trial(self) -> tuple[TrialState, ServingVersion] | None:
        """The live trial and its loaded version, or ``None`` (also when it cannot be loaded: logged once).

        A new trial version is loaded outside the serving lock (a LoRA one takes seconds): while one
        thread loads it, other threads' searches are answered by the serving version alone.
        """
        token = self.ws.trial_token()
        with self._lock:
            if token == self._trial_token:
                return self._trial
            if self._trial_loading:
                return None
            self._trial_loading = True
        loaded: tuple[TrialState, ServingVersion] | None = None
        try:
            loaded = self._load_trial()
        finally:
            with self._lock:
                self._trial_loading = False
                self._trial_token, self._trial = token, loaded
        return loaded

    def _load_trial(self) -> tuple[TrialState, ServingVersion] | None:
        try:
            record = self.ws.read_trial()
        except WorkspaceError as exc:
            logger.warning("searches are not interleaved: %s", exc)
            return None
        if not record:
            return None
        state = TrialState.from_dict(record)
        try:
            return state, ServingVersion(self.ws, self.config, state.version, self._current)
        except Exception as exc:  # a trial must never break search
            if state.id not in self._trial_failed:
                logger.warning("trial %s: cannot open version %s (%s); searches are answered by the serving version", state.id, state.version, exc)
                self._trial_failed.add(state.id)
            return None

    def search(self, query: str, k: int, *, log: FeedbackLog | None, run_id: str | None = None, trace_id: str | None = None) -> SearchResults:
        """The top ``k`` for ``query``; logged to ``log`` when given (interleaved for a share while a trial is live).

        ``run_id`` / ``trace_id`` (the app's run that searched, and its trace) are logged with the query.

        A log that cannot be written (corrupt, read-only, disk full, locked too long) never fails
        the search: it is answered with ``query_id`` ``None`` and the failure is warned about once.

        Raises:
            InputError: an empty query or a ``k`` that is not a positive integer.
        """
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"query must be a non-empty string, got {query!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        serving = self.current()
        raw = serving.embedder.encode_raw_queries([query])
        qv = serving.embedder.transform_queries(raw)[0]
        coins = self._coins()
        if log is not None:
            live = self.trial()
            if live is not None and live[0].baseline == serving.name and live[1].name != serving.name and coins.random() < live[0].share:
                try:
                    return self._interleaved(query, raw, qv, k, serving, live, log, run_id=run_id, trace_id=trace_id)
                except Exception as exc:  # a trial must never break search
                    state = live[0]
                    if state.id not in self._trial_failed:
                        logger.warning("trial %s: interleaving failed (%s); searches are answered by the serving version", state.id, exc)
                        self._trial_failed.add(state.id)
        ids, scores = serving.ranking(qv, k)
        orig_ranks = list(range(1, len(ids) + 1))
        randomized = False
        prob = self.config.feedback.randomize_prob
        if log is not None and prob > 0 and len(ids) > 1 and coins.random() < prob:
            # RandPair intervention: swap rank 1 with a random rank in 2..5 (lets the log estimate propensities)
            j = coins.randrange(1, min(5, len(ids)))
            ids[0], ids[j] = ids[j], ids[0]
            scores[0], scores[j] = scores[j], scores[0]
            orig_ranks[0], orig_ranks[j] = orig_ranks[j], orig_ranks[0]
            randomized = True
        hits = serving.hits(ids, scores)
        qid = None
        if log is not None:
            orig = dict(zip(ids, orig_ranks))
            imps = [Impression(h.doc_id, h.rank, h.score, orig[h.doc_id]) for h in hits]
            qid = _log_search(log, query, imps, version=serving.name, randomized=randomized, run_id=run_id, trace_id=trace_id)
        return SearchResults(hits, qid, serving.name)

    def _interleaved(
        self, query: str, raw: np.ndarray, qv: np.ndarray, k: int, serving: ServingVersion, live: tuple[TrialState, ServingVersion], log: FeedbackLog,
        **runs: str | None,
    ) -> SearchResults:  # fmt: skip
        state, trial = live
        a_ids, a_scores = serving.ranking(qv, k)
        same_model = trial.spec.document_side() == serving.spec.document_side()  # a query-tier trial: one forward pass serves both
        tv = (trial.embedder.transform_queries(raw) if same_model else trial.embedder.encode_queries([query]))[0]
        b_ids, _ = trial.ranking(tv, k)
        n = min(len(a_ids), len(b_ids))  # equal lengths: a ranking that returns more cannot win by it
        merged = team_draft(a_ids[:n], b_ids[:n], k, self._coins())
        # every hit is scored by the serving model, so the scores an app sees (and may threshold or
        # re-rank by) do not tell the teams apart
        ids = [d for d, _ in merged]
        pmap = serving.docs.positions(ids)
        vecs = serving.vectors()
        known = {**dict(zip(a_ids, a_scores)), **{d: float(vecs[p] @ qv) for d, p in pmap.items() if d not in a_ids}}
        hits = serving.hits(ids, [known.get(d, 0.0) for d in ids], fallback=trial)
        team_of = dict(merged)
        imps = [Impression(h.doc_id, h.rank, h.score, None, team_of[h.doc_id]) for h in hits]
        qid = _log_search(log, query, imps, version=serving.name, trial=state.id, **runs)
        return SearchResults(hits, qid, serving.name, trial=state.id)
