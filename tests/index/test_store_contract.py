"""One contract suite for every vector store backend (faiss, chroma)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragtune.config import IndexConfig
from ragtune.errors import VectorIndexError
from ragtune.index import VectorStore, create_store, open_store
from ragtune.index.base import row_blocks
from ragtune.memory import release_pages

BACKENDS = ["faiss", "chroma"]


def _vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest) -> IndexConfig:
    return IndexConfig(backend=request.param, use_gpu=False)


@pytest.fixture()
def version_dir(tmp_path: Path) -> Path:
    """Mimic a workspace layout: ROOT/versions/<staging dir>."""
    d = tmp_path / "ws" / "versions" / ".tmp-contract"
    d.mkdir(parents=True)
    return d


def _name(tmp_path: Path, tag: str) -> str:
    return f"contract-{abs(hash(str(tmp_path))) % 10**8}-{tag}"


def test_create_open_round_trip(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    vecs = _vectors(40)
    name = _name(tmp_path, "rt")
    store = create_store(version_dir, vecs, config, name=name)
    assert isinstance(store, VectorStore) and store.backend == config.backend
    assert len(store) == 40
    s1, p1 = store.search(vecs[:5], 3)
    reopened = open_store(version_dir, config, name=name)
    assert len(reopened) == 40
    s2, p2 = reopened.search(vecs[:5], 3)
    assert np.array_equal(p1, p2)
    assert np.allclose(s1, s2, atol=1e-5)


def test_exact_top1_for_stored_vectors(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    vecs = _vectors(300, seed=1)
    store = create_store(version_dir, vecs, config, name=_name(tmp_path, "top1"))
    rows = np.arange(0, 300, 7)
    scores, pos = store.search(vecs[rows], 5)
    assert scores.shape == pos.shape == (len(rows), 5)
    assert scores.dtype == np.float32 and pos.dtype == np.int64
    assert np.array_equal(pos[:, 0], rows)
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
    # scores are inner products (= cosine similarity of normalised vectors)
    for r, (srow, prow) in enumerate(zip(scores, pos)):
        assert np.allclose(srow, vecs[prow] @ vecs[rows[r]], atol=1e-4)


def test_scores_descending_and_match_brute_force(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    vecs = _vectors(60, seed=2)
    queries = _vectors(10, seed=3)
    store = create_store(version_dir, vecs, config, name=_name(tmp_path, "desc"))
    scores, pos = store.search(queries, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    want = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    assert np.array_equal(pos[:, 0], want[:, 0])
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pos, want)]) >= 0.9


def test_k_larger_than_n(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    vecs = _vectors(4, seed=4)
    store = create_store(version_dir, vecs, config, name=_name(tmp_path, "bigk"))
    scores, pos = store.search(vecs[:2], 50)
    assert scores.shape == pos.shape == (2, 4)
    assert all(sorted(row.tolist()) == [0, 1, 2, 3] for row in pos)


def test_empty_query_batch(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    vecs = _vectors(10, seed=5)
    store = create_store(version_dir, vecs, config, name=_name(tmp_path, "empty"))
    scores, pos = store.search(np.zeros((0, vecs.shape[1]), np.float32), 3)
    assert scores.shape[0] == pos.shape[0] == 0
    assert pos.dtype == np.int64


def test_single_vector_store(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    vecs = _vectors(1, seed=6)
    store = create_store(version_dir, vecs, config, name=_name(tmp_path, "one"))
    scores, pos = store.search(vecs, 3)
    assert pos.tolist() == [[0]] and scores[0, 0] == pytest.approx(1.0, abs=1e-4)


def test_open_missing_store_raises(config: IndexConfig, tmp_path: Path) -> None:
    d = tmp_path / "ws" / "versions" / "v0042"
    d.mkdir(parents=True)
    with pytest.raises(VectorIndexError):
        open_store(d, config, name=_name(tmp_path, "missing"))


def test_drop_is_safe(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    name = _name(tmp_path, "drop")
    store = create_store(version_dir, _vectors(5, seed=7), config, name=name)
    store.drop()
    store.drop()  # idempotent
    if config.backend == "chroma":
        with pytest.raises(VectorIndexError):
            open_store(version_dir, config, name=name)


def test_faiss_names_the_gpu_extra_when_a_gpu_is_present_without_faiss_gpu(tmp_path, monkeypatch, caplog):
    import sys
    import types

    from ragtune.index import faiss_store

    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(faiss_store, "_hinted", False)
    monkeypatch.delattr(faiss_store._faiss(), "StandardGpuResources", raising=False)  # a faiss-cpu build
    vecs = np.eye(4, dtype=np.float32)
    with caplog.at_level("WARNING", logger="ragtune.index.faiss_store"):
        store = faiss_store.FaissStore.create(tmp_path, vecs, IndexConfig(use_gpu=True), name="t")
    assert "pip install 'ragtune[gpu]'" in caplog.text
    assert store.search(vecs[:1], 1)[1][0][0] == 0


def test_built_from_a_memory_map_as_from_memory(config: IndexConfig, version_dir: Path, tmp_path: Path) -> None:
    """A store built from a memory-mapped vectors.npy (how a re-index builds it) answers as one built from the matrix."""
    vecs = _vectors(300)
    np.save(tmp_path / "v.npy", vecs)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    a = create_store(version_dir, vecs, config, name=_name(tmp_path, "mem"))
    other = version_dir.parent / ".tmp-mapped"
    other.mkdir()
    b = create_store(other, mapped, config, name=_name(tmp_path, "map"))
    qa, pa = a.search(vecs[:5], 5)
    qb, pb = b.search(vecs[:5], 5)
    assert np.array_equal(pa, pb) and np.allclose(qa, qb, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_row_blocks_cover_every_row_once(rows: int, tmp_path: Path) -> None:
    vecs = _vectors(50)
    np.save(tmp_path / "v.npy", vecs)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    got = np.concatenate([block for _, block in row_blocks(mapped, rows)])
    assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, vecs)
    assert [s for s, _ in row_blocks(vecs, rows)] == list(range(0, 50, rows))


def _rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux /proc only")
def test_release_pages_drops_a_memory_map_from_the_resident_set(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.ones((16_384, 1024), dtype=np.float32))  # 64 MiB
    mapped = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = _rss_file_kb()
    assert float(mapped.sum()) > 0  # read every page: the file becomes resident
    touched = _rss_file_kb()
    release_pages(mapped[10:20])  # a view of the map releases the whole map
    after = _rss_file_kb()
    assert touched - before > 30_000, (before, touched)
    assert touched - after > 30_000, (touched, after)
    release_pages(np.ones(3))  # an in-memory array: nothing to do
    private = np.load(tmp_path / "big.npy", mmap_mode="c")
    private[0, 0] = 5.0
    release_pages(private)  # a copy-on-write map keeps its edits
    assert private[0, 0] == 5.0
