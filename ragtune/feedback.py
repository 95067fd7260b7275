"""The feedback log: queries with their impressions, clicks and ratings, in SQLite (WAL).

Several processes (and threads: each gets its own connection) may write at once: every write is
one short transaction (a single statement, or ``BEGIN IMMEDIATE`` ... ``COMMIT`` for a query with
its impressions) and SQLite serialises them; readers never block writers. Nothing is cached in
memory, so a crash loses at most the event being written.

Event JSONL (``ragtune feedback export --format events`` / ``import``), one object per line::

    {"type": "query", "query_id": "...", "text": "...", "ts": 1700000000.0, "version": "v0001",
     "impressions": [{"doc_id": "d1", "rank": 1, "score": 0.83}, ...]}
    {"type": "click", "query_id": "...", "doc_id": "d1", "ts": ..., "dwell": 12.5}
    {"type": "rating", "query_id": "...", "doc_id": "d1", "value": 1, "ts": ...}

A query may carry ``"run_id"`` and ``"trace_id"``: the app's run that searched (a LangChain /
LangSmith run id, and the id of the trace it belongs to), so feedback can be given by run id.

A click or rating may carry a ``"feedback_id"`` (the caller's id for it, unique in the log): recording
it again with the same content is a no-op, with other content an error (HTTP clients retry safely).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import math
import numbers
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ragtune.errors import FeedbackConflictError, FeedbackError, FeedbackLogError, InputError, RagtuneError, UnknownIdError

__all__ = [
    "MAX_FEEDBACK_ID_CHARS",
    "DailyCount",
    "FeedbackCheck",
    "FeedbackLog",
    "ImportReport",
    "Impression",
    "QueryRecord",
    "RankClicks",
    "TrialSearch",
    "new_query_id",
    "normalize_query",
    "validate_click",
    "validate_rating",
]

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The id an imported triplet row gets (``"t"`` and 15 hex digits of its content's hash).
_TRIPLET_ID = re.compile(r"t[0-9a-f]{15}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    qid TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    ts REAL NOT NULL,
    version TEXT,
    randomized INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'search',
    trial TEXT
);
CREATE TABLE IF NOT EXISTS impressions (
    qid TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    score REAL,
    orig_rank INTEGER,
    team TEXT,
    PRIMARY KEY (qid, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clicks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    qid TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    ts REAL NOT NULL,
    dwell REAL
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    qid TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    value INTEGER NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS clicks_qid ON clicks(qid);
CREATE INDEX IF NOT EXISTS ratings_qid ON ratings(qid);
"""

#: The outcomes trial decisions counted (made by the first decision that keeps some, so that a log
#: of an older release opened read-only still reads).
TRIAL_OUTCOMES = """CREATE TABLE IF NOT EXISTS trial_outcomes (
    trial TEXT NOT NULL,
    qid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (trial, qid)
) WITHOUT ROWID"""

#: Columns added after the first release: a log written before them gains them on open.
MIGRATIONS = (("queries", "trial", "TEXT"), ("impressions", "team", "TEXT"), ("clicks", "feedback_id", "TEXT"), ("ratings", "feedback_id", "TEXT"),
              ("queries", "run_id", "TEXT"), ("queries", "trace_id", "TEXT"))  # fmt: skip
POST_MIGRATION = """CREATE INDEX IF NOT EXISTS queries_trial ON queries(trial);
CREATE INDEX IF NOT EXISTS queries_run_id ON queries(run_id);
CREATE INDEX IF NOT EXISTS queries_trace_id ON queries(trace_id);
CREATE UNIQUE INDEX IF NOT EXISTS clicks_feedback_id ON clicks(feedback_id);
CREATE UNIQUE INDEX IF NOT EXISTS ratings_feedback_id ON ratings(feedback_id);"""


def normalize_query(text: str) -> str:
    """Lower-case, whitespace-collapsed query text: the unit of de-duplication and splitting in mining,
    and of a trial's per-query count."""
    return " ".join(text.lower().split())


def new_query_id() -> str:
    """A fresh random query id."""
    return uuid.uuid4().hex[:16]


#: Longest feedback id a new event takes (characters), from Python, the CLI and HTTP alike;
#: ``feedback import`` keeps what an exported log holds (ids recorded before the cap included).
MAX_FEEDBACK_ID_CHARS = 200


def _check_id(name: str, value: Any, cli_name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise FeedbackError(f"{name} must be a non-empty string, got {value!r}", cli=f"{cli_name} must be a non-empty string, got {value!r}")


def _check_dwell(dwell: Any) -> None:
    if dwell is None:
        return
    if isinstance(dwell, bool) or not isinstance(dwell, numbers.Real) or not math.isfinite(float(dwell)) or float(dwell) < 0:
        raise FeedbackError(f"dwell must be a finite number of seconds >= 0 (or None), got {dwell!r}", cli=f"--dwell must be a finite number of seconds >= 0, got {dwell!r}")


def _check_rating(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) not in (1, -1):
        raise FeedbackError(f"a rating must be +1 or -1 (an int), got {value!r}", cli=f"a rating must be up, down, +1 or -1, got {value!r}")
    return int(value)


def validate_click(query_id: Any, doc_id: Any, dwell: Any = None) -> None:
    """Check a click's arguments before anything is looked up or written.

    Raises:
        FeedbackError: an id that is not a non-empty string, or a dwell that is not a finite number >= 0.
    """
    _check_id("query_id", query_id, "QUERY_ID")
    _check_id("doc_id", doc_id, "DOC_ID")
    _check_dwell(dwell)


def validate_rating(query_id: Any, doc_id: Any, value: Any) -> int:
    """Check a rating's arguments; returns the value as an int.

    Raises:
        FeedbackError: an id that is not a non-empty string, or a value that is not the int +1 or -1
            (``True`` is not a rating).
    """
    _check_id("query_id", query_id, "QUERY_ID")
    _check_id("doc_id", doc_id, "DOC_ID")
    return _check_rating(value)


def _diagnose(path: Path, exc: BaseException, timeout: float) -> tuple[str, str, str, str]:
    """``(kind, problem, fix, cli fix)`` for an error reading or writing the log at ``path``."""
    text = str(exc)
    low = text.lower()
    code = getattr(exc, "errno", None)
    corrupt_fix = "run `ragtune doctor --repair` to move it aside and start a new log"
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError) and ("not a database" in low or "malformed" in low or "encrypted" in low):
        return "corrupt", f"{path} is not a SQLite database ({text})", corrupt_fix, corrupt_fix
    if "malformed" in low:
        return "corrupt", f"{path} is damaged ({text})", corrupt_fix, corrupt_fix
    if path.is_dir():
        return "corrupt", f"{path} is a directory, not a SQLite file", f"move {path} aside: a new log is started in its place", f"move {path} aside: a new log is started in its place"
    if "full" in low or code in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full", f"the disk holding {path} is full ({text})", f"free space on it (`df {path.parent}`)", f"free space on it (`df {path.parent}`)"
    if "locked" in low or "busy" in low:
        fix = f"retry; if it persists, find the process holding it (`fuser {path}`)"
        return "locked", f"{path} stayed locked by another writer for more than {timeout:g}s", fix, fix
    if "readonly" in low or "read-only" in low or "unable to open" in low or isinstance(exc, PermissionError) or code in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = path.parent if path.parent.is_dir() else path.parent.parent
        return (
            "unwritable",
            f"{path} cannot be written ({text})",
            f"make {where} writable by this user, or search with log=False to serve without logging",
            f"make {where} writable by this user, or use `ragtune query --no-log` to search without logging",
        )
    if "i/o" in low or code == errno.EIO:
        return "io_error", f"reading or writing {path} failed ({text})", "check the disk; `ragtune doctor` checks the log", "check the disk; `ragtune doctor` checks the log"
    return "error", f"{path}: {text}", "`ragtune doctor` checks the log", "`ragtune doctor` checks the log"


def _log_failure(path: Path, exc: BaseException, timeout: float, doing: str) -> FeedbackLogError:
    kind, problem, fix, cli_fix = _diagnose(path, exc, timeout)
    return FeedbackLogError(f"cannot {doing}: {problem}; {fix}", cli=f"cannot {doing}: {problem}; {cli_fix}", path=str(path), kind=kind)


def _guard(doing: str, *, write: bool = False) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn SQLite and OS errors of a :class:`FeedbackLog` method into a :class:`FeedbackLogError` naming the file and the fix."""

    def deco(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            log = args[0]
            assert isinstance(log, FeedbackLog)
            try:
                out = fn(*args, **kwargs)
            except (sqlite3.Error, OSError) as exc:
                if isinstance(exc, RagtuneError):
                    raise
                err = _log_failure(log.path, exc, log.timeout, doing)
                if write:
                    log.write_error = err
                raise err from exc
            if write:
                log.write_error = None
            return out

        return wrapper

    return deco


@dataclass
class FeedbackCheck:
    """The health of a feedback log file (:meth:`FeedbackLog.check`).

    Attributes:
        path: The log file.
        ok: Searches can be logged and the log read.
        state: ``"ok"``, ``"absent"`` (nothing logged yet: fine), ``"corrupt"``, ``"unwritable"``,
            ``"disk_full"``, ``"locked"``, ``"io_error"`` or ``"error"``.
        message: One line: what is wrong (or the counts when nothing is).
        fix: What to do, in command-line terms (``""`` when nothing is wrong).
        counts: :meth:`FeedbackLog.stats` when the log could be read, else ``None``.
        integrity: ``"ok"``, or what SQLite's ``quick_check`` found; ``None`` when not run.
        last_write_error: The last write of this process that failed (``None`` once one succeeds again).
    """

    path: str
    ok: bool
    state: str
    message: str
    fix: str = ""
    counts: dict[str, int] | None = None
    integrity: str | None = None
    last_write_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as a JSON-able dict."""
        return asdict(self)


@dataclass
class ImportReport:
    """What :meth:`FeedbackLog.import_file` added (new) and skipped (already in the log).

    Attributes:
        path: The imported file.
        queries: New queries (a triplet is one query with its ratings).
        clicks: New clicks.
        ratings: New ratings.
        present_queries: Queries already in the log (same query id), left as they were.
        present_clicks: Clicks already in the log (same query, doc and time).
        present_ratings: Ratings already in the log (same query, doc and time).
    """

    path: str
    queries: int = 0
    clicks: int = 0
    ratings: int = 0
    present_queries: int = 0
    present_clicks: int = 0
    present_ratings: int = 0

    @property
    def new(self) -> int:
        """Events added (queries, clicks, ratings)."""
        return self.queries + self.clicks + self.ratings

    @property
    def present(self) -> int:
        """Events skipped because the log already held them."""
        return self.present_queries + self.present_clicks + self.present_ratings

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-able dict (with ``new`` and ``present`` totals)."""
        return {**asdict(self), "new": self.new, "present": self.present}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def summary(self) -> str:
        """One line: ``3 new (2 queries, 0 clicks, 1 ratings), 0 already present``."""
        return (
            f"{self.new} new ({self.queries} queries, {self.clicks} clicks, {self.ratings} ratings), "
            f"{self.present} already present ({self.present_queries} queries, {self.present_clicks} clicks, {self.present_ratings} ratings)"
        )


@dataclass
class Impression:
    """One result shown to a user.

    Attributes:
        doc_id: The document shown.
        rank: 1-based rank shown.
        score: Its score under the ranking that placed it.
        orig_rank: Its rank before a RandPair swap (``None``: as shown).
        team: In an interleaved search, the team that placed it (``"serving"``, ``"trial"``, or ``"shared"`` for
            the top results both rankings agree on).
    """

    doc_id: str
    rank: int
    score: float | None = None
    orig_rank: int | None = None
    team: str | None = None


@dataclass
class QueryRecord:
    """A logged query with everything users did about it (as mining reads it).

    ``run_id`` / ``trace_id``: the app's run that searched and its trace (e.g. LangChain run ids), or ``None``.
    ``source``: ``"search"`` (logged at serve time), ``"import"`` (an imported event) or ``"triplet"``
    (a row of an imported triplet file: a label, not a search).
    """

    qid: str
    text: str
    ts: float
    version: str | None
    randomized: bool
    impressions: list[Impression] = field(default_factory=list)
    trial: str | None = None
    clicks: list[tuple[str, float | None]] = field(default_factory=list)
    ratings: list[tuple[str, int]] = field(default_factory=list)
    run_id: str | None = None
    trace_id: str | None = None
    source: str = "search"

    @property
    def is_label(self) -> bool:
        """A row of an imported triplet file (a label, not a search); triplets imported before ``"triplet"`` was their source are known by their id."""
        return self.source == "triplet" or (self.source == "import" and _TRIPLET_ID.fullmatch(self.qid) is not None)


@dataclass
class DailyCount:
    """Feedback logged on one day (UTC), from :meth:`FeedbackLog.daily_counts`.

    Attributes:
        day: ``YYYY-MM-DD`` (UTC).
        queries: Queries logged that day.
        clicks: Clicks logged that day.
        ratings: Ratings logged that day.
    """

    day: str
    queries: int = 0
    clicks: int = 0
    ratings: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The day as a JSON-able dict."""
        return asdict(self)


@dataclass
class TrialSearch:
    """One search interleaved for a trial, from :meth:`FeedbackLog.trial_searches`.

    Attributes:
        text: The query text as logged.
        teams: Each shown document's team (:mod:`ragtune.interleave`'s ``SERVING``, ``TRIAL`` or ``SHARED``).
        chosen: The documents clicked or rated up from this search.
        first_choice: When the first of them was clicked or rated up (Unix time; ``None``: none was).
        qid: The search's query id.
        counted: The outcome a decision already counted (``"win"``, ``"loss"`` or ``"tie"``, kept by
            :meth:`FeedbackLog.keep_trial_outcomes`), or ``None``: later choices do not change it.
        counted_seq: The order in which counted outcomes were kept.
    """

    text: str
    teams: dict[str, str]
    chosen: set[str]
    first_choice: float | None = None
    qid: str = ""
    counted: str | None = None
    counted_seq: int | None = None


@dataclass
class RankClicks:
    """How often results shown at one rank were clicked, from :meth:`FeedbackLog.clicks_by_rank`.

    Attributes:
        rank: The 1-based rank shown.
        shown: Results shown at that rank.
        clicked: Of those, the ones clicked at least once.
    """

    rank: int
    shown: int
    clicked: int

    @property
    def rate(self) -> float:
        """Share of results shown at this rank that were clicked (0 when none were shown)."""
        return self.clicked / self.shown if self.shown else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The rank as a JSON-able dict (with ``rate``)."""
        return {**asdict(self), "rate": self.rate}


class FeedbackLog:
    """The workspace's feedback log.

    A file that cannot be read or written (corrupt, read-only, disk full, locked past ``timeout``)
    makes every method raise :class:`~ragtune.errors.FeedbackLogError` naming the file and the fix;
    :meth:`check` says what is wrong without raising.

    Args:
        path: The SQLite file (created on first use).
        timeout: Seconds a write waits for the lock other writers hold (SQLite's busy timeout).

    Attributes:
        write_error: The last write that failed, until one succeeds again (``None``: none failed).
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.write_error: FeedbackLogError | None = None
        self._local = threading.local()  # one connection per thread: transactions never interleave
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._pid = os.getpid()

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _connect(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked worker: SQLite connections must not cross a fork (the parent keeps its own)
            self._local, self._conns, self._conns_lock, self._pid = threading.local(), [], threading.Lock(), os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "file_id", None) != self._file_id():
            # the file was moved aside (`ragtune doctor --repair`) or replaced: follow the path, not the old file
            logger.warning("%s was replaced: reconnecting", self.path)
            with self._conns_lock:
                self._conns = [(t, c) for t, c in self._conns if c is not conn]
            conn.close()
            conn = self._local.conn = None
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
                _migrate(conn)
            except BaseException:
                conn.close()  # retried (and reported) on next use
                raise
            self._local.conn = conn
            self._local.file_id = self._file_id()
            with self._conns_lock:
                # close the connections of threads that have ended (e.g. a finished executor's)
                alive = []
                for thread, other in self._conns:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                self._conns = [*alive, (threading.current_thread(), conn)]
        return conn

    def close(self) -> None:
        """Close every connection this object opened (it reconnects on next use).

        Call it when no other thread is using the log: their connections are closed too.
        """
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            conn.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # never hide the original error
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writes -----------------------------------------------------------------------------------
    @_guard("log the search", write=True)
    def log_query(
        self,
        text: str,
        impressions: Sequence[Impression],
        *,
        version: str | None = None,
        randomized: bool = False,
        qid: str | None = None,
        ts: float | None = None,
        source: str = "search",
        trial: str | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
    ) -> str:
        """Record a query and what was shown; returns its query id.

        ``trial``: the live trial it was interleaved for; ``run_id`` / ``trace_id``: the app's run that
        searched and its trace (feedback can then be given by either, see :meth:`query_ids_for_run`).
        """
        qid = qid or new_query_id()
        with self._tx() as conn:
            self._insert_query(conn, qid, text, impressions, version, randomized, ts, source, trial, run_id, trace_id)
        return qid

    @staticmethod
    def _insert_query(
        conn: sqlite3.Connection, qid: str, text: str, impressions: Sequence[Impression], version: str | None, randomized: bool, ts: float | None, source: str, trial: str | None = None,
        run_id: str | None = None, trace_id: str | None = None,
    ) -> None:  # fmt: skip
        try:
            conn.execute(
                "INSERT INTO queries(qid, text, ts, version, randomized, source, trial, run_id, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (qid, text, ts if ts is not None else time.time(), version, int(randomized), source, trial, run_id, trace_id),
            )
        except sqlite3.IntegrityError as exc:
            raise FeedbackError(f"query id {qid!r} is already in the feedback log") from exc
        conn.executemany(
            "INSERT OR REPLACE INTO impressions(qid, doc_id, rank, score, orig_rank, team) VALUES (?, ?, ?, ?, ?, ?)",
            [(qid, im.doc_id, im.rank, im.score, im.orig_rank if im.orig_rank is not None else im.rank, im.team) for im in impressions],
        )

    def _require_query(self, conn: sqlite3.Connection, qid: str) -> None:
        if conn.execute("SELECT 1 FROM queries WHERE qid = ?", (qid,)).fetchone() is None:
            raise UnknownIdError(
                f"unknown query id {qid!r}: log the query first (search(..., log=True) returns its id in SearchResults.query_id)",
                cli=f"unknown query id {qid!r}: log the query first (`ragtune query TEXT` prints its id)",
            )

    @_guard("record the click", write=True)
    def click(self, qid: str, doc_id: str, *, dwell: float | None = None, ts: float | None = None, feedback_id: str | None = None) -> bool:
        """Record a click on ``doc_id`` for query ``qid``.

        Args:
            qid: The logged query's id.
            doc_id: The document clicked.
            dwell: Seconds spent on it, or ``None``.
            ts: When (default: now).
            feedback_id: The caller's id for this click: recording it again is a no-op.

        Returns:
            ``True`` when recorded; ``False`` when ``feedback_id`` was already recorded with the same content.

        Raises:
            FeedbackError: an empty id, a dwell that is not a finite number >= 0.
            UnknownIdError: an unknown query id.
            FeedbackConflictError: ``feedback_id`` was recorded with other content.
            FeedbackLogError: the log cannot be written.
        """
        validate_click(qid, doc_id, dwell)
        if feedback_id is not None:
            content = ("click", qid, doc_id, None if dwell is None else float(dwell))
            return self._insert_once(feedback_id, content, "INSERT INTO clicks(qid, doc_id, ts, dwell, feedback_id) VALUES (?, ?, ?, ?, ?)",
                                     (qid, doc_id, ts if ts is not None else time.time(), content[3], feedback_id))  # fmt: skip
        conn = self._connect()
        self._require_query(conn, qid)  # first: a refused insert would still write (AUTOINCREMENT's counter)
        cur = conn.execute(
            "INSERT INTO clicks(qid, doc_id, ts, dwell) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM queries WHERE qid = ?)",
            (qid, doc_id, ts if ts is not None else time.time(), dwell, qid),
        )
        if cur.rowcount != 1:  # the query vanished in between (a repaired log)
            self._require_query(conn, qid)
        return True

    @_guard("record the rating", write=True)
    def rate(self, qid: str, doc_id: str, value: int, *, ts: float | None = None, feedback_id: str | None = None) -> bool:
        """Record an explicit rating (+1 or -1).

        Args:
            qid: The logged query's id.
            doc_id: The document rated.
            value: ``1`` or ``-1``.
            ts: When (default: now).
            feedback_id: The caller's id for this rating: recording it again is a no-op.

        Returns:
            ``True`` when recorded; ``False`` when ``feedback_id`` was already recorded with the same content.

        Raises:
            FeedbackError: an empty id, a value that is not the int +1 or -1.
            UnknownIdError: an unknown query id.
            FeedbackConflictError: ``feedback_id`` was recorded with other content.
            FeedbackLogError: the log cannot be written.
        """
        value = validate_rating(qid, doc_id, value)
        if feedback_id is not None:
            return self._insert_once(feedback_id, ("rating", qid, doc_id, value), "INSERT INTO ratings(qid, doc_id, value, ts, feedback_id) VALUES (?, ?, ?, ?, ?)",
                                     (qid, doc_id, value, ts if ts is not None else time.time(), feedback_id))  # fmt: skip
        conn = self._connect()
        self._require_query(conn, qid)  # first: a refused insert would still write (AUTOINCREMENT's counter)
        cur = conn.execute(
            "INSERT INTO ratings(qid, doc_id, value, ts) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM queries WHERE qid = ?)",
            (qid, doc_id, value, ts if ts is not None else time.time(), qid),
        )
        if cur.rowcount != 1:  # the query vanished in between (a repaired log)
            self._require_query(conn, qid)
        return True

    def _insert_once(self, feedback_id: str, content: tuple[str, str, str, float | int | None], sql: str, args: tuple[Any, ...]) -> bool:
        """Insert a click or rating under ``feedback_id`` unless the log holds it (one transaction: concurrent repeats are safe)."""
        _check_id("feedback_id", feedback_id, "--feedback-id")
        if len(feedback_id) > MAX_FEEDBACK_ID_CHARS:
            why = f"must be at most {MAX_FEEDBACK_ID_CHARS} characters (e.g. a UUID), got {len(feedback_id)}: {feedback_id[:40]!r}..."
            raise FeedbackError(f"feedback_id {why}", cli=f"--feedback-id {why}")
        with self._tx() as conn:
            self._require_query(conn, content[1])
            held = _feedback_with_id(conn, feedback_id)
            if held is not None:
                if held != content:
                    raise FeedbackConflictError(
                        f"feedback id {feedback_id!r} is already recorded as a {held[0]} on doc {held[2]!r} of query {held[1]!r}"
                        f"{'' if held[3] is None else (' with dwell ' if held[0] == 'click' else ' with value ') + repr(held[3])}; "
                        f"give this {content[0]} another feedback id"
                    )
                return False
            conn.execute(sql, args)
        return True

    # -- reads ------------------------------------------------------------------------------------
    @_guard("read the feedback log")
    def feedback_by_id(self, feedback_id: str) -> tuple[str, str, str, float | int | None] | None:
        """What the log holds under ``feedback_id``: ``(kind, query id, doc id, dwell or value)``, or ``None``.

        ``kind`` is ``"click"`` (with its dwell, ``None`` when not given) or ``"rating"`` (with its value).

        Raises:
            FeedbackError: an empty id.
        """
        _check_id("feedback_id", feedback_id, "--feedback-id")
        return _feedback_with_id(self._connect(), feedback_id)

    @_guard("read the feedback log")
    def require_query(self, qid: str) -> None:
        """Raise :class:`UnknownIdError` unless the log holds the search ``qid``."""
        self._require_query(self._connect(), qid)

    @_guard("read the feedback log")
    def was_shown(self, qid: str, doc_id: str) -> bool:
        """Whether the logged search ``qid`` showed ``doc_id``."""
        row = self._connect().execute("SELECT 1 FROM impressions WHERE qid = ? AND doc_id = ?", (qid, doc_id)).fetchone()
        return row is not None

    @_guard("read the feedback log")
    def stats(self) -> dict[str, int]:
        """Counts: ``queries``, ``impressions``, ``clicks``, ``ratings``, ``queries_with_positive`` (read as on disk in a read-only folder)."""
        try:
            return _counts(self._connect())
        except sqlite3.OperationalError as exc:
            counts = self._readonly_counts() if "unable to open" in str(exc).lower() and self.path.is_file() else None
            if counts is None:
                raise
            return counts  # a WAL log in a read-only folder: read as it is on disk

    @_guard("read the feedback log")
    def event_mark(self) -> tuple[int, int]:
        """``(max click id, max rating id)``: a watermark of the log."""
        conn = self._connect()
        c = conn.execute("SELECT COALESCE(MAX(id), 0) FROM clicks").fetchone()[0]
        r = conn.execute("SELECT COALESCE(MAX(id), 0) FROM ratings").fetchone()[0]
        return int(c), int(r)

    @_guard("read the feedback log")
    def events_since(self, mark: tuple[int, int]) -> int:
        """Clicks and ratings logged after ``mark``."""
        conn = self._connect()
        c = conn.execute("SELECT COUNT(*) FROM clicks WHERE id > ?", (mark[0],)).fetchone()[0]
        r = conn.execute("SELECT COUNT(*) FROM ratings WHERE id > ?", (mark[1],)).fetchone()[0]
        return int(c) + int(r)

    @_guard("read the feedback log")
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    @_guard("write the feedback log", write=True)
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    @_guard("read the feedback log")
    def records(self, *, only_with_feedback: bool = False) -> list[QueryRecord]:
        """Every logged query with its impressions, clicks and ratings (oldest first)."""
        conn = self._connect()
        recs: dict[str, QueryRecord] = {}
        for qid, text, ts, version, randomized, trial, run_id, trace_id, source in conn.execute(
            "SELECT qid, text, ts, version, randomized, trial, run_id, trace_id, source FROM queries ORDER BY ts, qid"
        ):
            recs[qid] = QueryRecord(qid, text, ts, version, bool(randomized), trial=trial, run_id=run_id, trace_id=trace_id, source=source)
        for qid, doc_id, rank, score, orig, team in conn.execute("SELECT qid, doc_id, rank, score, orig_rank, team FROM impressions ORDER BY qid, rank"):
            if qid in recs:
                recs[qid].impressions.append(Impression(doc_id, rank, score, orig, team))
        for qid, doc_id, dwell in conn.execute("SELECT qid, doc_id, dwell FROM clicks ORDER BY id"):
            if qid in recs:
                recs[qid].clicks.append((doc_id, dwell))
        for qid, doc_id, value in conn.execute("SELECT qid, doc_id, value FROM ratings ORDER BY id"):
            if qid in recs:
                recs[qid].ratings.append((doc_id, value))
        out = list(recs.values())
        if only_with_feedback:
            out = [r for r in out if r.clicks or r.ratings]
        return out

    @_guard("read the feedback log")
    def query_ids_for_run(self, run_id: str, doc_id: str | None = None) -> list[str]:
        """The query ids logged with ``run_id`` as their run id or trace id, newest first (empty: none).

        With ``doc_id``, only the queries that showed that document.
        """
        rows = self._connect().execute(
            "SELECT q.qid FROM queries q WHERE (q.run_id = ?1 OR q.trace_id = ?1) "
            "AND (?2 IS NULL OR EXISTS (SELECT 1 FROM impressions i WHERE i.qid = q.qid AND i.doc_id = ?2)) ORDER BY q.ts DESC, q.qid DESC",
            (run_id, doc_id),
        )
        return [str(r[0]) for r in rows]

    @_guard("read the feedback log")
    def trial_searches(self, trial: str) -> list[TrialSearch]:
        """Each search interleaved for ``trial``, in the order they were logged: its query text, its shown
        documents' teams, the documents chosen (clicked or rated up) and when the first was chosen."""
        conn = self._connect()
        texts: dict[str, str] = {}
        teams: dict[str, dict[str, str]] = {}
        for qid, text in conn.execute("SELECT qid, text FROM queries WHERE trial = ? ORDER BY rowid", (trial,)):
            texts[qid], teams[qid] = text, {}
        for qid, doc_id, team in conn.execute(
            "SELECT i.qid, i.doc_id, i.team FROM impressions i JOIN queries q ON q.qid = i.qid WHERE q.trial = ?", (trial,)
        ):
            teams.setdefault(qid, {})[doc_id] = team
        chosen: dict[str, set[str]] = {}
        first: dict[str, float] = {}
        for qid, doc_id, ts in conn.execute(
            "SELECT c.qid, c.doc_id, c.ts FROM clicks c JOIN queries q ON q.qid = c.qid WHERE q.trial = ? "
            "UNION ALL SELECT r.qid, r.doc_id, r.ts FROM ratings r JOIN queries q ON q.qid = r.qid WHERE q.trial = ? AND r.value > 0",
            (trial, trial),
        ):
            chosen.setdefault(qid, set()).add(doc_id)
            first[qid] = min(float(ts), first.get(qid, math.inf))
        kept: dict[str, tuple[str, int]] = {}
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trial_outcomes'").fetchone():
            kept = {qid: (outcome, int(seq)) for qid, outcome, seq in conn.execute("SELECT qid, outcome, seq FROM trial_outcomes WHERE trial = ?", (trial,))}
        return [
            TrialSearch(texts.get(qid, ""), t, chosen.get(qid, set()), first.get(qid), qid, *kept.get(qid, (None, None)))
            for qid, t in teams.items()
        ]

    @_guard("record the trial's counted outcomes", write=True)
    def keep_trial_outcomes(self, trial: str, outcomes: Sequence[tuple[str, str]]) -> None:
        """Keep the outcomes a trial decision counted, ``(qid, outcome)`` in counting order, so that
        later clicks on those searches cannot change them (what a decision counted stays counted: the
        sequential test is valid however often it is looked at only if an outcome never changes).
        Outcomes already kept stay as they were."""
        if not outcomes:
            return
        with self._tx() as conn:
            conn.execute(TRIAL_OUTCOMES)
            row = conn.execute("SELECT MAX(seq) FROM trial_outcomes WHERE trial = ?", (trial,)).fetchone()
            start = 0 if row is None or row[0] is None else int(row[0]) + 1
            conn.executemany(
                "INSERT OR IGNORE INTO trial_outcomes(trial, qid, outcome, seq) VALUES (?, ?, ?, ?)",
                [(trial, qid, outcome, start + i) for i, (qid, outcome) in enumerate(outcomes)],
            )

    @_guard("read the feedback log")
    def daily_counts(self, *, since: float | None = None) -> list[DailyCount]:
        """Queries, clicks and ratings logged per day (UTC), oldest first; days with nothing logged are left out.

        Args:
            since: Only events at or after this Unix time (default: all).
        """
        conn = self._connect()
        lo = -math.inf if since is None else float(since)
        days: dict[str, DailyCount] = {}
        for table in ("queries", "clicks", "ratings"):
            sql = f"SELECT date(ts, 'unixepoch') AS day, COUNT(*) FROM {table} WHERE ts >= ? GROUP BY day"
            for day, n in conn.execute(sql, (lo,)):
                setattr(days.setdefault(day, DailyCount(day)), table, int(n))
        return [days[d] for d in sorted(days)]

    @_guard("read the feedback log")
    def clicks_by_rank(self, max_rank: int = 10) -> list[RankClicks]:
        """Results shown and clicked at each rank ``1..max_rank`` (the position-bias curve), over logged searches.

        A result counts as clicked when it was clicked at least once from that search; imported
        events count as well as searches logged at serve time.
        """
        conn = self._connect()
        rows = conn.execute(
            "SELECT i.rank, COUNT(*), SUM(EXISTS (SELECT 1 FROM clicks c WHERE c.qid = i.qid AND c.doc_id = i.doc_id)) "
            "FROM impressions i WHERE i.rank <= ? GROUP BY i.rank",
            (int(max_rank),),
        ).fetchall()
        seen = {int(rank): (int(shown), int(clicked or 0)) for rank, shown, clicked in rows}
        return [RankClicks(r, *seen.get(r, (0, 0))) for r in range(1, int(max_rank) + 1)]

    # -- import / export --------------------------------------------------------------------------
    def export_events(self) -> Iterator[dict[str, Any]]:
        """Yield the whole log as event dicts (queries first, then clicks, then ratings).

        Raises:
            FeedbackLogError: the log cannot be read (raised by the first ``next()``).
        """
        for rec in self.records():
            event: dict[str, Any] = {
                "type": "query",
                "query_id": rec.qid,
                "text": rec.text,
                "ts": rec.ts,
                "version": rec.version,
                "impressions": [_impression_event(i) for i in rec.impressions],
            }
            if rec.randomized:  # propensity estimation reads randomised searches and their original ranks
                event["randomized"] = True
            if rec.trial:  # an interleaved search: its impressions carry their teams
                event["trial"] = rec.trial
            event.update({k: v for k, v in (("run_id", rec.run_id), ("trace_id", rec.trace_id)) if v is not None})
            yield event
        yield from self._export_feedback()

    @_guard("read the feedback log")
    def _export_feedback(self) -> list[dict[str, Any]]:
        conn = self._connect()
        out: list[dict[str, Any]] = [
            {"type": "click", "query_id": qid, "doc_id": doc_id, "ts": ts, "dwell": dwell, **({"feedback_id": fid} if fid is not None else {})}
            for qid, doc_id, ts, dwell, fid in conn.execute("SELECT qid, doc_id, ts, dwell, feedback_id FROM clicks ORDER BY id")
        ]
        out += [
            {"type": "rating", "query_id": qid, "doc_id": doc_id, "value": value, "ts": ts, **({"feedback_id": fid} if fid is not None else {})}
            for qid, doc_id, value, ts, fid in conn.execute("SELECT qid, doc_id, value, ts, feedback_id FROM ratings ORDER BY id")
        ]
        return out

    @_guard("import into the feedback log", write=True)
    def import_file(
        self,
        path: str | Path,
        *,
        doc_exists: Callable[[Sequence[str]], set[str]],
        text_to_id: Callable[[str], str | None],
    ) -> ImportReport:
        """Import an event or triplet JSONL file, all-or-nothing and idempotent.

        Importing a file again adds nothing: a query event whose ``query_id`` is already in the log
        is skipped (with its clicks and ratings, which match on query, doc and time), and a triplet
        gets a query id derived from its content (and its occurrence in the file), so that it is
        recognised too. A click or rating without ``ts`` is dated at its query's time.

        Args:
            path: The file.
            doc_exists: Returns which of the given doc ids exist in the current index.
            text_to_id: Maps a document text to its doc id (for triplets given as texts), or ``None``.

        Returns:
            An :class:`ImportReport`: what was added, and what was already present.

        Raises:
            InputError: naming ``file:line`` (and the field) for a malformed line, an unknown query id,
                a click or rating on a doc neither in the current index nor shown by its search (a
                shown doc removed from the index since keeps its feedback, as live feedback does), a
                triplet's doc not in the index, a file none of whose doc ids is in the index, a
                directory or a missing file; nothing of the file is imported then.
            FeedbackLogError: the log cannot be written.
        """
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a directory; give one JSONL file of events or triplets")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise InputError(f"{path}: no such file") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
        ops: list[tuple[str, tuple[Any, ...]]] = []
        file_queries: dict[str, tuple[int, float]] = {}  # qid -> (line, ts)
        seen_events: set[tuple[str, str, str, float]] = set()
        file_fids: dict[str, tuple[str, str, str, float | int | None]] = {}  # feedback id -> content, of this file
        triplet_seen: dict[str, int] = {}
        # (line, doc id, how it may be vouched for): "shown" an impression (what a search showed stays
        # history after the doc leaves the index), a query id for a click/rating (in the index, or shown
        # by that search, as for live feedback), None for a triplet (in the index)
        doc_refs: list[tuple[int, str, str | None]] = []
        file_shown: dict[str, set[str]] = {}
        report = ImportReport(str(path))
        any_event = False
        conn = self._connect()

        def query_ts(qid: str) -> float | None:
            if qid in file_queries:
                return file_queries[qid][1]
            row = conn.execute("SELECT ts FROM queries WHERE qid = ?", (qid,)).fetchone()
            return None if row is None else float(row[0])

        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            any_event = True
            kind = obj.get("type")
            if kind is None and "query" in obj:
                kind = "triplet"
            if kind == "query":
                qid = _str_field(obj, "query_id", where)
                text = _str_field(obj, "text", where)
                imps = obj.get("impressions", [])
                if not isinstance(imps, list):
                    raise InputError(f"{where}: 'impressions' must be a list, got {imps!r}")
                randomized = obj.get("randomized", False)
                if not isinstance(randomized, bool):
                    raise InputError(f"{where}: 'randomized' must be true or false, got {randomized!r}")
                version = obj.get("version")
                if version is not None and not isinstance(version, str):
                    raise InputError(f"{where}: 'version' must be a string or null, got {version!r}")
                runs = [obj.get(name) for name in ("run_id", "trace_id")]
                for name, rid in zip(("run_id", "trace_id"), runs):
                    if rid is not None and (not isinstance(rid, str) or not rid):
                        raise InputError(f"{where}: {name!r} must be a non-empty string or null, got {rid!r}")
                ts = _ts_field(obj, where)
                parsed = []
                for i, im in enumerate(imps):
                    at = f"{where}: impressions[{i}]"
                    if not isinstance(im, dict):
                        raise InputError(f"{at} must be an object with 'doc_id' and 'rank', got {im!r}")
                    doc = im.get("doc_id")
                    if not isinstance(doc, str) or not doc:
                        raise InputError(f"{at}: 'doc_id' must be a non-empty string, got {doc!r}")
                    if not _is_rank(im.get("rank")):
                        raise InputError(f"{at}: 'rank' must be an integer >= 1, got {im.get('rank')!r}")
                    orig = im.get("orig_rank")
                    if orig is not None and not _is_rank(orig):
                        raise InputError(f"{at}: 'orig_rank' must be an integer >= 1, got {orig!r}")
                    score = im.get("score")
                    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)):
                        raise InputError(f"{at}: 'score' must be a finite number or null, got {score!r}")
                    team = im.get("team")
                    if team is not None and team not in ("serving", "trial", "shared"):
                        raise InputError(f"{at}: 'team' must be 'serving', 'trial' or 'shared', got {team!r}")
                    parsed.append(Impression(doc, im["rank"], score, orig, team))
                if qid in file_queries:
                    raise InputError(f"{where}: query id {qid!r} is repeated (first at line {file_queries[qid][0]})")
                row = conn.execute("SELECT text, ts FROM queries WHERE qid = ?", (qid,)).fetchone()
                if row is not None:
                    if row[0] != text:
                        raise InputError(f"{where}: query id {qid!r} is already in the log with another text ({row[0]!r})")
                    file_queries[qid] = (lineno, float(row[1]))
                    report.present_queries += 1
                    continue
                ts = time.time() if ts is None else ts
                file_queries[qid] = (lineno, ts)
                doc_refs += [(lineno, im.doc_id, "shown") for im in parsed]
                file_shown[qid] = {im.doc_id for im in parsed}
                # a search's "trial" is not imported: an imported search never counts in a trial (a click
                # imported for a search this log holds from a live trial counts there, as a late click would)
                ops.append(("query", (qid, text, parsed, version, ts, "import", randomized, None, *runs)))
                report.queries += 1
            elif kind in ("click", "rating"):
                qid = _str_field(obj, "query_id", where)
                doc_id = _str_field(obj, "doc_id", where)
                ts = _ts_field(obj, where)
                value: int | None = None
                dwell = obj.get("dwell")
                if kind == "click":
                    if dwell is not None and (isinstance(dwell, bool) or not isinstance(dwell, (int, float)) or not math.isfinite(dwell) or dwell < 0):
                        raise InputError(f"{where}: 'dwell' must be a finite number of seconds >= 0 or null, got {dwell!r}")
                else:
                    value = obj.get("value")
                    if isinstance(value, bool) or value not in (1, -1):
                        raise InputError(f"{where}: a rating's 'value' must be 1 or -1, got {value!r}")
                qts = query_ts(qid)
                if qts is None:
                    raise InputError(f"{where}: unknown query id {qid!r} (not in the log nor earlier in this file)")
                ts = qts if ts is None else ts
                key = (kind, qid, doc_id, ts)
                table = "clicks" if kind == "click" else "ratings"
                fid = obj.get("feedback_id")
                held = None  # the same feedback id already in the log or earlier in this file: present
                if fid is not None:
                    fid = _str_field(obj, "feedback_id", where)
                    said = (kind, qid, doc_id, value if kind == "rating" else (None if dwell is None else float(dwell)))
                    held = file_fids.get(fid) or _feedback_with_id(conn, fid)
                    if held is not None and held != said:
                        raise InputError(f"{where}: feedback id {fid!r} is already recorded as a {held[0]} on doc {held[2]!r} of query {held[1]!r}")
                    file_fids[fid] = said
                present = held is not None or key in seen_events
                if not present:
                    col = "dwell" if kind == "click" else "value"
                    row = conn.execute(
                        f"SELECT id, feedback_id, {col} FROM {table} WHERE qid = ? AND doc_id = ? AND ts = ? ORDER BY feedback_id IS NOT NULL, id",
                        (qid, doc_id, ts),
                    ).fetchone()
                    present = row is not None
                    if row is not None and fid is not None and row[1] is None and row[2] == said[3]:
                        ops.append(("feedback_id", (table, fid, row[0])))  # the same event logged without its id: give it the id
                if present:
                    if kind == "click":
                        report.present_clicks += 1
                    else:
                        report.present_ratings += 1
                    continue
                seen_events.add(key)
                doc_refs.append((lineno, doc_id, qid))
                if kind == "click":
                    ops.append(("click", (qid, doc_id, ts, None if dwell is None else float(dwell), fid)))
                    report.clicks += 1
                else:
                    ops.append(("rating", (qid, doc_id, value, ts, fid)))
                    report.ratings += 1
            elif kind == "triplet":
                query = obj.get("query")
                if not isinstance(query, str) or not query.strip():
                    raise InputError(f"{where}: a triplet's 'query' must be a non-empty string, got {query!r}")
                ids: dict[str, str | None] = {}
                refs: list[tuple[int, str]] = []
                for side in ("positive", "negative"):
                    if f"{side}_id" in obj:
                        ref = obj[f"{side}_id"]
                        if not isinstance(ref, str) or not ref:
                            raise InputError(f"{where}: '{side}_id' must be a non-empty string, got {ref!r}")
                        refs.append((lineno, ref))
                        ids[side] = ref
                    elif side in obj:
                        text = obj[side]
                        if not isinstance(text, str) or not text.strip():
                            raise InputError(f"{where}: '{side}' must be a document's text (a non-empty string), got {text!r}")
                        found = text_to_id(text)
                        if found is None:
                            raise InputError(f"{where}: the {side} text matches no document in the index (give '{side}_id' instead)")
                        ids[side] = found
                    elif side == "positive":
                        raise InputError(f"{where}: a triplet needs 'positive' (text) or 'positive_id'")
                content = json.dumps([query, ids.get("positive"), ids.get("negative")], ensure_ascii=False)
                nth = triplet_seen.get(content, 0)
                triplet_seen[content] = nth + 1
                qid = "t" + hashlib.sha1(f"{content}#{nth}".encode()).hexdigest()[:15]  # the same triplet imported again: the same id
                n_ratings = 2 if ids.get("negative") else 1
                if conn.execute("SELECT 1 FROM queries WHERE qid = ?", (qid,)).fetchone():
                    report.present_queries += 1
                    report.present_ratings += n_ratings
                    continue
                doc_refs += [(ln, d, None) for ln, d in refs]
                now = time.time()
                imps = [Impression(d, r) for r, d in enumerate([ids.get("positive"), ids.get("negative")], 1) if d]
                ops.append(("query", (qid, query, imps, None, now, "triplet", False, None)))
                ops.append(("rating", (qid, ids["positive"], 1, now, None)))
                if ids.get("negative"):
                    ops.append(("rating", (qid, ids["negative"], -1, now, None)))
                report.queries += 1
                report.ratings += n_ratings
            else:
                raise InputError(
                    f"{where}: unknown event type {kind!r}: expected 'type' query, click or rating (an event), or a 'query' field (a triplet)"
                )
        if not any_event:
            raise InputError(f"{path}: no events found (an empty file)")
        known = doc_exists(sorted({d for _, d, _ in doc_refs}))
        by_log = False  # a click vouched for by a search this log holds: feedback for this workspace, whatever the index holds now
        for lineno, doc_id, via in doc_refs:
            if doc_id in known or via == "shown":
                continue
            if via is not None and doc_id in file_shown.get(via, ()):
                continue  # shown by its search (in this file): a doc removed from the index since keeps its feedback
            if via is not None and self.was_shown(via, doc_id):
                by_log = True  # shown by its search (in the log), as live feedback is accepted
                continue
            shown = f" and was not shown by search {via!r}" if via is not None else ""
            raise InputError(f"{path}:{lineno}: unknown doc id {doc_id!r} (not in the current index{shown})")
        if doc_refs and not known and not by_log:  # every line vouched for by the file's own impressions: still the wrong corpus
            n = len({d for _, d, _ in doc_refs})
            raise InputError(f"{path}: none of its {n} doc ids is in the current index (feedback for another corpus or workspace?); nothing imported")
        if ops:
            with self._tx() as tx:
                for kind, args in ops:
                    if kind == "query":
                        qid, text, imps, version, ts, source, randomized, trial, *runs = args
                        self._insert_query(tx, qid, text, imps, version, randomized, ts, source, trial, *runs)
                    elif kind == "feedback_id":
                        table, fid, rowid = args
                        tx.execute(f"UPDATE {table} SET feedback_id = ? WHERE id = ? AND feedback_id IS NULL", (fid, rowid))
                    elif kind == "click":
                        tx.execute("INSERT INTO clicks(qid, doc_id, ts, dwell, feedback_id) VALUES (?, ?, ?, ?, ?)", args)
                    else:
                        tx.execute("INSERT INTO ratings(qid, doc_id, value, ts, feedback_id) VALUES (?, ?, ?, ?, ?)", args)
        logger.info("imported %s: %s", path, report.summary())
        return report

    # -- health -----------------------------------------------------------------------------------
    def check(self, *, thorough: bool = True) -> FeedbackCheck:
        """Say whether the log can be read and written, and what to do if not; never raises for a bad log.

        Opens the file on its own (never creating it), reads the counts, runs SQLite's
        ``PRAGMA quick_check`` when ``thorough``, and tries a write that it rolls back at once.

        Args:
            thorough: Run ``quick_check`` (reads the whole file: ``ragtune doctor``); ``False`` for a
                cheap check (``status``).

        Returns:
            A :class:`FeedbackCheck`.
        """
        last = None if self.write_error is None else str(self.write_error.cli_message())
        path = self.path
        if not path.exists():
            parent = path.parent
            if parent.is_dir() and not os.access(parent, os.W_OK):
                return FeedbackCheck(str(path), False, "unwritable", f"no feedback log yet, and {parent} is not writable: searches cannot be logged",
                                     f"make {parent} writable by this user", counts=None, last_write_error=last)  # fmt: skip
            return FeedbackCheck(str(path), True, "absent", "no feedback logged yet", counts=_zero_counts(), last_write_error=last)
        counts: dict[str, int] | None = None
        integrity: str | None = None
        try:
            conn = sqlite3.connect(path.as_uri() + "?mode=rw", uri=True, timeout=2.0, isolation_level=None)
        except sqlite3.Error as exc:
            return self._unhealthy(exc, counts, integrity, last)
        try:
            try:
                if thorough:
                    rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
                    integrity = "ok" if rows == ["ok"] else "; ".join(rows)
                counts = _counts(conn)
            except sqlite3.Error as exc:
                if "unable to open" not in str(exc).lower():
                    return self._unhealthy(exc, counts, integrity, last)
                counts = self._readonly_counts()  # a WAL log in a read-only folder: read it as it is on disk
                return self._unhealthy(exc, counts, integrity, last)
            if integrity not in (None, "ok"):
                fix = "run `ragtune doctor --repair` to move it aside and start a new log (export what is readable first: `ragtune feedback export`)"
                return FeedbackCheck(str(path), False, "corrupt", f"{path} is damaged: SQLite's quick_check found: {integrity}", fix, counts, integrity, last)
            try:  # can this process write? A write rolled back at once: nothing changes
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
                        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('ragtune.check', '1')")
                finally:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                return self._unhealthy(exc, counts, integrity, last)
        finally:
            conn.close()
        message = f"{counts['queries']} queries, {counts['clicks']} clicks, {counts['ratings']} ratings"
        if last is not None:
            message += f" (the last write of this process failed: {last})"
        return FeedbackCheck(str(path), True, "ok", message, "", counts, integrity, last)

    def _unhealthy(self, exc: BaseException, counts: dict[str, int] | None, integrity: str | None, last: str | None) -> FeedbackCheck:
        kind, problem, _fix, cli_fix = _diagnose(self.path, exc, 2.0)
        return FeedbackCheck(str(self.path), False, kind, problem, cli_fix, counts, integrity, last)

    def _readonly_counts(self) -> dict[str, int] | None:
        try:
            conn = sqlite3.connect(self.path.as_uri() + "?mode=ro&immutable=1", uri=True, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            return _counts(conn)
        except sqlite3.Error:
            return None
        finally:
            conn.close()


def _impression_event(im: Impression) -> dict[str, Any]:
    """An impression as exported: ``orig_rank`` only where randomisation moved it."""
    event: dict[str, Any] = {"doc_id": im.doc_id, "rank": im.rank, "score": im.score}
    if im.orig_rank is not None and im.orig_rank != im.rank:
        event["orig_rank"] = im.orig_rank
    if im.team is not None:
        event["team"] = im.team
    return event


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a log written by an older ragtune lacks (another process may race us: that is fine)."""
    for table, column, decl in MIGRATIONS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
    conn.executescript(POST_MIGRATION)


def _feedback_with_id(conn: sqlite3.Connection, feedback_id: str) -> tuple[str, str, str, float | int | None] | None:
    """``(kind, qid, doc_id, dwell or value)`` of the click or rating recorded under ``feedback_id``, or ``None``."""
    row = conn.execute("SELECT qid, doc_id, dwell FROM clicks WHERE feedback_id = ?", (feedback_id,)).fetchone()
    if row is not None:
        return ("click", row[0], row[1], row[2])
    row = conn.execute("SELECT qid, doc_id, value FROM ratings WHERE feedback_id = ?", (feedback_id,)).fetchone()
    return None if row is None else ("rating", row[0], row[1], int(row[2]))


def _str_field(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: '{name}' must be a non-empty string, got {value!r}")
    return value


def _ts_field(obj: dict[str, Any], where: str) -> float | None:
    ts = obj.get("ts")
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InputError(f"{where}: 'ts' must be a finite number (Unix seconds) or absent, got {ts!r}")
    return float(ts)


def _zero_counts() -> dict[str, int]:
    return {"queries": 0, "impressions": 0, "clicks": 0, "ratings": 0, "queries_with_positive": 0}


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    """:meth:`FeedbackLog.stats` on ``conn`` (zeros for a log whose tables were never created)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"queries", "impressions", "clicks", "ratings"} <= tables:
        return _zero_counts()
    one = lambda q: int(conn.execute(q).fetchone()[0])  # noqa: E731
    return {
        "queries": one("SELECT COUNT(*) FROM queries"),
        "impressions": one("SELECT COUNT(*) FROM impressions"),
        "clicks": one("SELECT COUNT(*) FROM clicks"),
        "ratings": one("SELECT COUNT(*) FROM ratings"),
        "queries_with_positive": one("SELECT COUNT(*) FROM (SELECT qid FROM clicks UNION SELECT qid FROM ratings WHERE value > 0)"),
    }


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
