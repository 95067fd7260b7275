"""Texts, titles, metadata and content hashes of one index version, in SQLite.

Row ``pos`` of the doc store is row ``pos`` of the version's vectors. Each row records the source its
document was loaded from (:attr:`ragtune.corpus.Document.source`); doc stores written before sources
were tracked have no ``source`` column and read as source ``""``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ragtune.corpus import Document

__all__ = ["DocStore"]

FILENAME = "docs.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    pos INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    hash TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DocStore:
    """Read access to a version's documents (thread-safe for reads).

    Args:
        path: The version directory (or the ``docs.sqlite`` file itself).
    """

    def __init__(self, path: Path) -> None:
        self.path = path / FILENAME if path.is_dir() else path
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._ids: list[str] | None = None
        # doc stores written before sources were tracked have no source column: their docs' source is ""
        cols = {r[1] for r in self._conn.execute("PRAGMA table_info(docs)")}
        self._source = "source" if "source" in cols else "''"

    @staticmethod
    def write(directory: Path, docs: Iterable[Document], meta: dict[str, Any] | None = None) -> None:
        """Create ``docs.sqlite`` in ``directory`` holding ``docs`` in order (pos = 0, 1, ...)."""
        DocStore.write_file(directory / FILENAME, docs, meta)

    @staticmethod
    def write_file(path: Path, docs: Iterable[Document], meta: dict[str, Any] | None = None) -> None:
        """Create the doc store file ``path`` holding ``docs`` in order (pos = 0, 1, ...)."""
        conn = sqlite3.connect(path)
        try:
            conn.executescript(SCHEMA)
            conn.executemany(
                "INSERT INTO docs(pos, id, title, text, metadata, hash, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((i, d.id, d.title, d.text, json.dumps(d.metadata, ensure_ascii=False), d.content_hash, d.source) for i, d in enumerate(docs)),
            )
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", ((k, json.dumps(v)) for k, v in (meta or {}).items()))
            conn.commit()
        finally:
            conn.close()

    def close(self) -> None:
        self._conn.close()

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    @property
    def ids(self) -> list[str]:
        """Doc ids by position (cached)."""
        if self._ids is None:
            self._ids = [r[0] for r in self._conn.execute("SELECT id FROM docs ORDER BY pos")]
        return self._ids

    def hashes(self) -> dict[str, tuple[int, str]]:
        """``{doc_id: (pos, content_hash)}``."""
        return {r[0]: (r[1], r[2]) for r in self._conn.execute("SELECT id, pos, hash FROM docs")}

    def entries(self) -> list[tuple[str, str, str]]:
        """``(doc_id, content_hash, source)`` of every document, by position."""
        return [(r[0], r[1], r[2]) for r in self._conn.execute(f"SELECT id, hash, {self._source} FROM docs ORDER BY pos")]

    def source_counts(self) -> list[tuple[str, int]]:
        """``(source, n_docs)`` for each source, in index order (``""``: indexed before sources were tracked)."""
        q = f"SELECT {self._source} AS s, COUNT(*), MIN(pos) FROM docs GROUP BY s ORDER BY MIN(pos)"
        return [(r[0], int(r[1])) for r in self._conn.execute(q)]

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    def get(self, positions: Sequence[int]) -> list[Document]:
        """Documents at ``positions`` (in that order)."""
        if not positions:
            return []
        rows: dict[int, Document] = {}
        plist = [int(p) for p in positions]
        for start in range(0, len(plist), 900):
            chunk = plist[start : start + 900]
            q = f"SELECT pos, id, title, text, metadata, {self._source} FROM docs WHERE pos IN ({','.join('?' * len(chunk))})"
            for pos, did, title, text, md, src in self._conn.execute(q, chunk):
                rows[pos] = Document(id=did, text=text, title=title, metadata=json.loads(md), source=src)
        return [rows[p] for p in plist]

    def positions(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """``{doc_id: pos}`` for the ids that exist."""
        out: dict[str, int] = {}
        ids = list(doc_ids)
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            q = f"SELECT id, pos FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r[0]: r[1] for r in self._conn.execute(q, chunk)})
        return out

    def all_documents(self) -> list[Document]:
        """Every document (with its source), by position."""
        return [
            Document(id=did, text=text, title=title, metadata=json.loads(md), source=src)
            for did, title, text, md, src in self._conn.execute(f"SELECT id, title, text, metadata, {self._source} FROM docs ORDER BY pos")
        ]
