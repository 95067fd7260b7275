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
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import FeedbackError, InputError

__all__ = ["FeedbackLog", "Impression", "QueryRecord", "new_query_id"]

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

#: Columns added after the first release: a log written before them gains them on open.
MIGRATIONS = (("queries", "trial", "TEXT"), ("impressions", "team", "TEXT"))
POST_MIGRATION = "CREATE INDEX IF NOT EXISTS queries_trial ON queries(trial);"


def new_query_id() -> str:
    """A fresh random query id."""
    return uuid.uuid4().hex[:16]


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
    """A logged query with everything users did about it (as mining reads it)."""

    qid: str
    text: str
    ts: float
    version: str | None
    randomized: bool
    impressions: list[Impression] = field(default_factory=list)
    trial: str | None = None
    clicks: list[tuple[str, float | None]] = field(default_factory=list)
    ratings: list[tuple[str, int]] = field(default_factory=list)


class FeedbackLog:
    """The workspace's feedback log.

    Args:
        path: The SQLite file (created on first use).
        timeout: Seconds a write waits for the lock other writers hold (SQLite's busy timeout).
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()  # one connection per thread: transactions never interleave
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            _migrate(conn)
            self._local.conn = conn
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
    ) -> str:
        """Record a query and what was shown; returns its query id (``trial``: the live trial it was interleaved for)."""
        qid = qid or new_query_id()
        with self._tx() as conn:
            self._insert_query(conn, qid, text, impressions, version, randomized, ts, source, trial)
        return qid

    @staticmethod
    def _insert_query(
        conn: sqlite3.Connection, qid: str, text: str, impressions: Sequence[Impression], version: str | None, randomized: bool, ts: float | None, source: str, trial: str | None = None
    ) -> None:
        try:
            conn.execute(
                "INSERT INTO queries(qid, text, ts, version, randomized, source, trial) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (qid, text, ts if ts is not None else time.time(), version, int(randomized), source, trial),
            )
        except sqlite3.IntegrityError as exc:
            raise FeedbackError(f"query id {qid!r} is already in the feedback log") from exc
        conn.executemany(
            "INSERT OR REPLACE INTO impressions(qid, doc_id, rank, score, orig_rank, team) VALUES (?, ?, ?, ?, ?, ?)",
            [(qid, im.doc_id, im.rank, im.score, im.orig_rank if im.orig_rank is not None else im.rank, im.team) for im in impressions],
        )

    def _require_query(self, conn: sqlite3.Connection, qid: str) -> None:
        if conn.execute("SELECT 1 FROM queries WHERE qid = ?", (qid,)).fetchone() is None:
            raise FeedbackError(f"unknown query id {qid!r}: log the query first (search(..., log=True) returns its id)")

    def click(self, qid: str, doc_id: str, *, dwell: float | None = None, ts: float | None = None) -> None:
        """Record a click on ``doc_id`` for query ``qid``."""
        conn = self._connect()
        cur = conn.execute(
            "INSERT INTO clicks(qid, doc_id, ts, dwell) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM queries WHERE qid = ?)",
            (qid, doc_id, ts if ts is not None else time.time(), dwell, qid),
        )
        if cur.rowcount != 1:
            self._require_query(conn, qid)

    def rate(self, qid: str, doc_id: str, value: int, *, ts: float | None = None) -> None:
        """Record an explicit rating (+1 or -1)."""
        if value not in (1, -1):
            raise FeedbackError(f"a rating must be +1 or -1, got {value!r}")
        conn = self._connect()
        cur = conn.execute(
            "INSERT INTO ratings(qid, doc_id, value, ts) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM queries WHERE qid = ?)",
            (qid, doc_id, value, ts if ts is not None else time.time(), qid),
        )
        if cur.rowcount != 1:
            self._require_query(conn, qid)

    # -- reads ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counts: ``queries``, ``impressions``, ``clicks``, ``ratings``, ``queries_with_positive``."""
        conn = self._connect()
        one = lambda q: int(conn.execute(q).fetchone()[0])  # noqa: E731
        return {
            "queries": one("SELECT COUNT(*) FROM queries"),
            "impressions": one("SELECT COUNT(*) FROM impressions"),
            "clicks": one("SELECT COUNT(*) FROM clicks"),
            "ratings": one("SELECT COUNT(*) FROM ratings"),
            "queries_with_positive": one(
                "SELECT COUNT(*) FROM (SELECT qid FROM clicks UNION SELECT qid FROM ratings WHERE value > 0)"
            ),
        }

    def event_mark(self) -> tuple[int, int]:
        """``(max click id, max rating id)``: a watermark of the log."""
        conn = self._connect()
        c = conn.execute("SELECT COALESCE(MAX(id), 0) FROM clicks").fetchone()[0]
        r = conn.execute("SELECT COALESCE(MAX(id), 0) FROM ratings").fetchone()[0]
        return int(c), int(r)

    def events_since(self, mark: tuple[int, int]) -> int:
        """Clicks and ratings logged after ``mark``."""
        conn = self._connect()
        c = conn.execute("SELECT COUNT(*) FROM clicks WHERE id > ?", (mark[0],)).fetchone()[0]
        r = conn.execute("SELECT COUNT(*) FROM ratings WHERE id > ?", (mark[1],)).fetchone()[0]
        return int(c) + int(r)

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._connect().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def records(self, *, only_with_feedback: bool = False) -> list[QueryRecord]:
        """Every logged query with its impressions, clicks and ratings (oldest first)."""
        conn = self._connect()
        recs: dict[str, QueryRecord] = {}
        for qid, text, ts, version, randomized, trial in conn.execute("SELECT qid, text, ts, version, randomized, trial FROM queries ORDER BY ts, qid"):
            recs[qid] = QueryRecord(qid, text, ts, version, bool(randomized), trial=trial)
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

    def trial_searches(self, trial: str) -> list[tuple[dict[str, str], set[str]]]:
        """Each search interleaved for ``trial``: its shown documents' teams and the documents chosen (clicked or rated up)."""
        conn = self._connect()
        teams: dict[str, dict[str, str]] = {}
        for qid, doc_id, team in conn.execute(
            "SELECT i.qid, i.doc_id, i.team FROM impressions i JOIN queries q ON q.qid = i.qid WHERE q.trial = ?", (trial,)
        ):
            teams.setdefault(qid, {})[doc_id] = team
        for (qid,) in conn.execute("SELECT qid FROM queries WHERE trial = ?", (trial,)):
            teams.setdefault(qid, {})
        chosen: dict[str, set[str]] = {}
        for qid, doc_id in conn.execute(
            "SELECT c.qid, c.doc_id FROM clicks c JOIN queries q ON q.qid = c.qid WHERE q.trial = ? "
            "UNION SELECT r.qid, r.doc_id FROM ratings r JOIN queries q ON q.qid = r.qid WHERE q.trial = ? AND r.value > 0",
            (trial, trial),
        ):
            chosen.setdefault(qid, set()).add(doc_id)
        return [(t, chosen.get(qid, set())) for qid, t in teams.items()]

    # -- import / export --------------------------------------------------------------------------
    def export_events(self) -> Iterator[dict[str, Any]]:
        """Yield the whole log as event dicts (queries first, then clicks, then ratings)."""
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
            yield event
        conn = self._connect()
        for qid, doc_id, ts, dwell in conn.execute("SELECT qid, doc_id, ts, dwell FROM clicks ORDER BY id"):
            yield {"type": "click", "query_id": qid, "doc_id": doc_id, "ts": ts, "dwell": dwell}
        for qid, doc_id, value, ts in conn.execute("SELECT qid, doc_id, value, ts FROM ratings ORDER BY id"):
            yield {"type": "rating", "query_id": qid, "doc_id": doc_id, "value": value, "ts": ts}

    def import_file(
        self,
        path: str | Path,
        *,
        doc_exists: Callable[[Sequence[str]], set[str]],
        text_to_id: Callable[[str], str | None],
    ) -> dict[str, int]:
        """Import an event or triplet JSONL file, all-or-nothing.

        Args:
            path: The file.
            doc_exists: Returns which of the given doc ids exist in the current index.
            text_to_id: Maps a document text to its doc id (for triplets given as texts), or ``None``.

        Returns:
            Counts of what was imported.

        Raises:
            InputError: naming ``file:line`` for a malformed line, an unknown doc id or query id;
                nothing of the file is imported then.
        """
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise InputError(f"{path}: no such file") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        ops: list[tuple[str, tuple[Any, ...]]] = []
        file_qids: set[str] = set()
        doc_refs: list[tuple[int, str]] = []
        counts = {"queries": 0, "clicks": 0, "ratings": 0}
        conn = self._connect()
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object")
            kind = obj.get("type")
            if kind is None and "query" in obj:
                kind = "triplet"
            if kind == "query":
                qid, text = obj.get("query_id"), obj.get("text")
                imps = obj.get("impressions", [])
                if not isinstance(qid, str) or not qid or not isinstance(text, str) or not text.strip() or not isinstance(imps, list):
                    raise InputError(f"{where}: a query event needs a string 'query_id', non-empty 'text' and a list 'impressions'")
                if qid in file_qids or conn.execute("SELECT 1 FROM queries WHERE qid = ?", (qid,)).fetchone():
                    raise InputError(f"{where}: query id {qid!r} already exists")
                randomized = obj.get("randomized", False)
                if not isinstance(randomized, bool):
                    raise InputError(f"{where}: 'randomized' must be true or false, got {randomized!r}")
                parsed = []
                for im in imps:
                    if not isinstance(im, dict) or not isinstance(im.get("doc_id"), str) or not _is_rank(im.get("rank")):
                        raise InputError(f"{where}: each impression needs a string 'doc_id' and an integer 'rank' >= 1")
                    orig = im.get("orig_rank")
                    if orig is not None and not _is_rank(orig):
                        raise InputError(f"{where}: an impression's 'orig_rank' must be an integer >= 1, got {orig!r}")
                    team = im.get("team")
                    if team is not None and team not in ("serving", "trial", "shared"):
                        raise InputError(f"{where}: an impression's 'team' must be 'serving', 'trial' or 'shared', got {team!r}")
                    doc_refs.append((lineno, im["doc_id"]))
                    parsed.append(Impression(im["doc_id"], im["rank"], im.get("score"), orig, team))
                # a search's "trial" is not imported: imported events must never count in a live trial
                file_qids.add(qid)
                ops.append(("query", (qid, text, parsed, obj.get("version"), float(obj.get("ts") or time.time()), "import", randomized, None)))
                counts["queries"] += 1
            elif kind in ("click", "rating"):
                qid, doc_id = obj.get("query_id"), obj.get("doc_id")
                if not isinstance(qid, str) or not isinstance(doc_id, str):
                    raise InputError(f"{where}: a {kind} event needs string 'query_id' and 'doc_id'")
                if qid not in file_qids and not conn.execute("SELECT 1 FROM queries WHERE qid = ?", (qid,)).fetchone():
                    raise InputError(f"{where}: unknown query id {qid!r} (not in the log nor earlier in this file)")
                doc_refs.append((lineno, doc_id))
                ts = float(obj.get("ts") or time.time())
                if kind == "click":
                    ops.append(("click", (qid, doc_id, ts, obj.get("dwell"))))
                    counts["clicks"] += 1
                else:
                    value = obj.get("value")
                    if value not in (1, -1):
                        raise InputError(f"{where}: a rating's 'value' must be 1 or -1, got {value!r}")
                    ops.append(("rating", (qid, doc_id, value, ts)))
                    counts["ratings"] += 1
            elif kind == "triplet":
                query = obj.get("query")
                if not isinstance(query, str) or not query.strip():
                    raise InputError(f"{where}: a triplet needs a non-empty 'query'")
                ids: dict[str, str | None] = {}
                for side in ("positive", "negative"):
                    if f"{side}_id" in obj:
                        ref = obj[f"{side}_id"]
                        if not isinstance(ref, str):
                            raise InputError(f"{where}: '{side}_id' must be a string")
                        doc_refs.append((lineno, ref))
                        ids[side] = ref
                    elif side in obj:
                        text = obj[side]
                        found = text_to_id(text) if isinstance(text, str) else None
                        if found is None:
                            raise InputError(f"{where}: the {side} text matches no document in the index (give '{side}_id' instead)")
                        ids[side] = found
                    elif side == "positive":
                        raise InputError(f"{where}: a triplet needs 'positive' (text) or 'positive_id'")
                qid = new_query_id()
                imps = [Impression(d, r) for r, d in enumerate([ids.get("positive"), ids.get("negative")], 1) if d]
                ops.append(("query", (qid, query, imps, None, time.time(), "import", False, None)))
                ops.append(("rating", (qid, ids["positive"], 1, time.time())))
                counts["queries"] += 1
                counts["ratings"] += 1
                if ids.get("negative"):
                    ops.append(("rating", (qid, ids["negative"], -1, time.time())))
                    counts["ratings"] += 1
            else:
                raise InputError(f"{where}: unknown line: expected an event with 'type' query/click/rating, or a triplet with 'query'")
        if not ops:
            raise InputError(f"{path}: no events found")
        known = doc_exists(sorted({d for _, d in doc_refs}))
        for lineno, doc_id in doc_refs:
            if doc_id not in known:
                raise InputError(f"{path}:{lineno}: unknown doc id {doc_id!r} (not in the current index)")
        with self._tx() as tx:
            for kind, args in ops:
                if kind == "query":
                    qid, text, imps, version, ts, source, randomized, trial = args
                    self._insert_query(tx, qid, text, imps, version, randomized, ts, source, trial)
                elif kind == "click":
                    tx.execute("INSERT INTO clicks(qid, doc_id, ts, dwell) VALUES (?, ?, ?, ?)", args)
                else:
                    tx.execute("INSERT INTO ratings(qid, doc_id, value, ts) VALUES (?, ?, ?, ?)", args)
        return counts


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


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
