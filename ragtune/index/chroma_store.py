"""chromadb backend: one cosine-space collection per index version.

``index.chroma_url`` unset keeps the collections in ``<workspace>/chroma`` (a
``chromadb.PersistentClient``); ``"http://HOST:PORT"`` talks to a Chroma server there (a
``chromadb.HttpClient``). Row ``i`` of a version is stored under
the id ``str(i)``; scores are cosine similarities (``1 - cosine distance``), so results match the
faiss backend's inner products over the same normalised vectors.

Version directories live at ``ROOT/versions/NAME`` (and are staged at ``ROOT/versions/.tmp-*``),
so the workspace root is ``directory.parent.parent`` in both cases.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.errors import MissingDependencyError, VectorIndexError
from ragtune.index.base import HNSW_EF_CONSTRUCTION, HNSW_M, VectorStore, row_blocks

if TYPE_CHECKING:
    from ragtune.config import IndexConfig

__all__ = ["ChromaStore", "chroma_client", "collection_name"]

logger = logging.getLogger(__name__)

FILENAME = "chroma.json"
#: Query vectors sent per request.
QUERY_BATCH = 256
_MAX_NAME = 63  # chromadb: 3-63 chars, [a-zA-Z0-9._-], alphanumeric at both ends, no ".."
_VERSION_NAME = re.compile(r"ragtune-[0-9a-f]{10}-(v\d+)")

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _chromadb() -> Any:
    try:
        import chromadb
    except ImportError as exc:  # pragma: no cover - chromadb is a hard dependency
        raise MissingDependencyError("the chroma backend needs chromadb (pip install chromadb)") from exc
    return chromadb


def collection_name(name: str) -> str:
    """Map ``name`` to a valid chroma collection name (stable; hashed when it has to be shortened)."""
    clean = re.sub(r"[^a-zA-Z0-9._-]", "-", name)
    clean = re.sub(r"\.{2,}", ".", clean).strip("._-")
    if len(clean) > _MAX_NAME or len(clean) < 3 or clean != name:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        clean = f"{clean[: _MAX_NAME - 9].rstrip('._-')}-{digest}".lstrip("._-")
    if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", clean):  # chroma rejects names that look like IPv4 addresses
        clean = f"c-{clean}"
    return clean


def chroma_client(config: IndexConfig, root: Path) -> Any:
    """The (cached) chroma client for ``config``: persistent under ``root/chroma`` or HTTP."""
    chromadb = _chromadb()
    from chromadb.config import Settings

    server = config.chroma_server()
    if server is not None:
        key: tuple[Any, ...] = ("http", server[0], server[1])
    else:
        key = ("persistent", str((root / "chroma").resolve()))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            settings = Settings(anonymized_telemetry=False)
            try:
                if key[0] == "http":
                    client = chromadb.HttpClient(host=key[1], port=key[2], settings=settings)
                else:
                    Path(key[1]).mkdir(parents=True, exist_ok=True)
                    client = chromadb.PersistentClient(path=key[1], settings=settings)
            except Exception as exc:
                where = f"the Chroma server at {key[1]}:{key[2]}" if key[0] == "http" else key[1]
                raise VectorIndexError(f"cannot connect to {where} ({type(exc).__name__}: {exc}); is it running and reachable?") from exc
            _CLIENTS[key] = client
        return client


def _forget_client(config: IndexConfig, root: Path) -> None:
    server = config.chroma_server()
    key: tuple[Any, ...] = ("http", *server) if server is not None else ("persistent", str((root / "chroma").resolve()))
    with _CLIENTS_LOCK:
        _CLIENTS.pop(key, None)


def _is_not_found(exc: Exception) -> bool:
    return type(exc).__name__ == "NotFoundError" or "does not exist" in str(exc)


class ChromaStore(VectorStore):
    """A chroma collection holding one version's vectors (id = position as a string)."""

    backend = "chroma"
    kind = "hnsw"

    def __init__(self, client: Any, collection: Any, name: str, count: int, config: IndexConfig) -> None:
        self._client = client
        self._collection = collection
        self._name = name
        self._count = count
        self._config = config

    @property
    def collection_name(self) -> str:
        """The chroma collection's name."""
        return self._name

    @staticmethod
    def _root(directory: Path) -> Path:
        return Path(directory).resolve().parent.parent

    @classmethod
    def create(cls, directory: Path, vectors: np.ndarray, config: IndexConfig, *, name: str) -> ChromaStore:
        if vectors.ndim != 2:
            raise VectorIndexError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        root = cls._root(directory)
        client = chroma_client(config, root)
        cname = collection_name(name)
        if config.chroma_server() is None:
            _collect_orphans(client, root, keep=cname)
        with contextlib.suppress(Exception):  # a stale collection left by an earlier failed attempt at this version
            client.delete_collection(cname)
        hnsw = {
            "space": "cosine",
            "ef_search": config.ef_search(len(vectors)),
            "max_neighbors": HNSW_M,
            "ef_construction": HNSW_EF_CONSTRUCTION,
        }
        try:
            collection = client.create_collection(
                cname,
                configuration={"hnsw": hnsw},
                metadata={"ragtune_version": name, "dim": int(vectors.shape[1]) if len(vectors) else 0},
                embedding_function=None,
            )
            batch = max(1, int(client.get_max_batch_size()) - 1)
            for start, chunk in row_blocks(vectors, batch):
                collection.add(ids=[str(i) for i in range(start, start + len(chunk))], embeddings=chunk)
        except Exception as exc:
            with contextlib.suppress(Exception):
                client.delete_collection(cname)
            raise VectorIndexError(f"cannot write chroma collection {cname!r} ({type(exc).__name__}: {exc})") from exc
        meta = {"collection": cname, "mode": "http" if config.chroma_server() else "persistent", "n": len(vectors), "dim": int(vectors.shape[1])}
        (Path(directory) / FILENAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        logger.info("chroma collection %s: %d vectors", cname, len(vectors))
        return cls(client, collection, cname, len(vectors), config)

    @classmethod
    def open(cls, directory: Path, config: IndexConfig, *, name: str) -> ChromaStore:
        path = Path(directory) / FILENAME
        meta: dict[str, Any] = {}
        if path.is_file():
            meta = json.loads(path.read_text(encoding="utf-8"))
        cname = meta.get("collection") or collection_name(name)
        root = cls._root(directory)
        client = chroma_client(config, root)
        try:
            collection = client.get_collection(cname, embedding_function=None)
            count = int(collection.count())
        except Exception as exc:
            if _is_not_found(exc):
                where = f"the Chroma server at {config.chroma_url}" if config.chroma_server() else str(root / "chroma")
                raise VectorIndexError(f"chroma collection {cname!r} is missing from {where}; `ragtune doctor --repair` rebuilds it from the version's vectors.npy") from exc
            _forget_client(config, root)
            raise VectorIndexError(f"cannot open chroma collection {cname!r} ({type(exc).__name__}: {exc})") from exc
        if "n" in meta and count != meta["n"]:
            raise VectorIndexError(f"chroma collection {cname!r} holds {count} vectors but the version has {meta['n']}; `ragtune doctor --repair` rebuilds it from the version's vectors.npy")
        return cls(client, collection, cname, count, config)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float32)
        nq = len(queries)
        k = min(int(k), self._count)
        if k <= 0 or nq == 0:
            return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        positions = np.full((nq, k), -1, dtype=np.int64)
        for start in range(0, nq, QUERY_BATCH):
            chunk = np.ascontiguousarray(queries[start : start + QUERY_BATCH])
            res = self._collection.query(query_embeddings=chunk, n_results=k, include=["distances"])
            for row, (ids, dists) in enumerate(zip(res["ids"], res["distances"]), start):
                m = min(len(ids), k)
                positions[row, :m] = [int(i) for i in ids[:m]]
                scores[row, :m] = 1.0 - np.asarray(dists[:m], dtype=np.float32)
        return scores, positions

    def __len__(self) -> int:
        return self._count

    def drop(self) -> None:
        """Delete this version's collection (no error when it is already gone)."""
        try:
            self._client.delete_collection(self._name)
        except Exception as exc:
            if not _is_not_found(exc):
                raise


def _collect_orphans(client: Any, root: Path, keep: str) -> None:
    """Delete ragtune collections of versions that no longer exist on disk (persistent mode only).

    The persistent chroma directory belongs to one workspace, so a collection named for version
    ``vNNNN`` whose ``ROOT/versions/vNNNN`` was pruned is garbage.
    """
    try:
        names = [getattr(c, "name", c) for c in client.list_collections()]
    except Exception:  # pragma: no cover - best effort
        return
    for cname in names:
        m = _VERSION_NAME.fullmatch(str(cname))
        if m and cname != keep and not (root / "versions" / m.group(1) / "manifest.json").is_file():
            with contextlib.suppress(Exception):
                client.delete_collection(cname)
                logger.info("dropped chroma collection %s of a pruned version", cname)
