"""The chroma backend inside a workspace (persistent and a real server) and the chroma embedding function."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ragtune import Ragtune
from ragtune.index.chroma_store import ChromaStore, chroma_client, collection_name

CHROMA = Path(sys.executable).with_name("chroma")


def _changed_docs(tmp_path: Path) -> Path:
    from tests.conftest import DOCS

    docs = [dict(d) for d in DOCS]
    docs[0]["text"] = "Press and hold reset for thirty seconds to wipe every setting."
    docs.append({"id": "d9", "title": "Mesh", "text": "Add a mesh satellite to extend coverage."})
    path = tmp_path / "docs2.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _index_search_swap(rt: Ragtune, docs_jsonl: Path, tmp_path: Path) -> None:
    report = rt.index([docs_jsonl])
    assert report["n_docs"] == 8
    v1 = rt.current_version
    assert rt.serving().store.backend == "chroma"
    hits = rt.search("reset the router", k=3)
    assert len(hits) == 3 and hits.query_id and hits.version == v1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the stored vector of every doc finds that doc first
    serving = rt.serving()
    _, pos = serving.store.search(np.asarray(serving.vectors()), 1)
    assert pos[:, 0].tolist() == list(range(8))
    rt.click(hits.query_id, hits[0].doc_id)

    report = rt.index([_changed_docs(tmp_path)], replace=True)  # a changed copy in another file replaces the corpus
    assert report["changed"] == 1 and report["added"] == 1 and report["embedded"] == 2
    v2 = rt.current_version
    assert v2 != v1
    hits = rt.search("mesh coverage", k=9)
    assert len(hits) == 9 and hits.version == v2
    d1 = next(h for h in hits if h.doc_id == "d1")
    assert "thirty seconds" in d1.text
    # a second facade (another process's view) answers from the new version too
    other = Ragtune(rt.ws.root, progress=False)
    assert len(other.search("guest network", k=2, log=False)) == 2
    # the old version is still searchable (rollback is instant)
    assert rt.rollback(v1) == v1
    assert len(rt.search("reset", k=9)) == 8


def test_workspace_with_chroma_backend(tmp_path: Path, tiny_config, docs_jsonl: Path) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config.with_overrides({"index.backend": "chroma"})
    rt = Ragtune.init(tmp_path / "ws", config, progress=False)
    _index_search_swap(rt, docs_jsonl, tmp_path)
    assert (rt.ws.root / "chroma").is_dir()
    assert rt.status()["backend"] == "chroma"


def test_pruned_versions_collections_are_collected(tmp_path: Path, tiny_config, docs_jsonl: Path) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config.with_overrides({"index.backend": "chroma", "index.keep_versions": 1})
    rt = Ragtune.init(tmp_path / "ws", config, progress=False)
    rt.index([docs_jsonl])
    rt.index([_changed_docs(tmp_path)], replace=True)  # prunes v0001's directory
    rt.index([docs_jsonl], replace=True)  # creating v0003 drops v0001's orphaned collection
    client = chroma_client(config.index, rt.ws.root)
    names = {c.name for c in client.list_collections()}
    suffixes = sorted(n.rsplit("-", 1)[1] for n in names)
    assert "v0001" not in suffixes and "v0003" in suffixes
    assert len(rt.search("reset", k=3)) == 3


def test_collection_names_are_valid() -> None:
    import re

    ok = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]$")
    for raw in ["ragtune-0123456789-v0001", "a", "my index/v 1", "x" * 200, "..weird..name..", "1.2.3.4", "ünïcode-名前"]:
        name = collection_name(raw)
        assert ok.match(name) and ".." not in name, (raw, name)
    assert collection_name("ragtune-0123456789-v0001") == "ragtune-0123456789-v0001"
    assert collection_name("x" * 200) != collection_name("x" * 199 + "y")


def test_recreate_replaces_a_stale_collection(tmp_path: Path) -> None:
    from ragtune.config import IndexConfig

    cfg = IndexConfig(backend="chroma")
    d = tmp_path / "ws" / "versions" / ".tmp-a"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 8)).astype(np.float32)
    ChromaStore.create(d, a / np.linalg.norm(a, axis=1, keepdims=True), cfg, name="stale-test")
    b = rng.normal(size=(3, 8)).astype(np.float32)
    store = ChromaStore.create(d, b / np.linalg.norm(b, axis=1, keepdims=True), cfg, name="stale-test")
    assert len(store) == 3 and len(ChromaStore.open(d, cfg, name="stale-test")) == 3


def test_chroma_embedding_function(tmp_path: Path, tiny_model: str, workspace: Ragtune) -> None:
    import chromadb
    from chromadb.config import Settings

    from ragtune.integrations.chroma import RagtuneEmbeddingFunction

    ef = RagtuneEmbeddingFunction(model=tiny_model, device="cpu")
    assert RagtuneEmbeddingFunction.name() == "ragtune" and not ef.is_legacy()
    vecs = ef(["reset the router", "guest network"])
    assert len(vecs) == 2 and np.allclose(np.linalg.norm(np.array(vecs), axis=1), 1.0, atol=1e-4)
    assert np.allclose(ef.embed_query(["reset the router"])[0], vecs[0], atol=1e-5)
    rebuilt = RagtuneEmbeddingFunction.build_from_config(ef.get_config())
    assert rebuilt.get_config() == ef.get_config()

    ws_ef = RagtuneEmbeddingFunction(workspace=workspace.ws.root)
    want = workspace.serving().embedder.encode_queries(["reset the router"])[0]
    assert np.allclose(ws_ef.embed_query(["reset the router"])[0], want, atol=1e-5)
    assert RagtuneEmbeddingFunction.build_from_config(ws_ef.get_config()).workspace == str(workspace.ws.root)

    client = chromadb.PersistentClient(path=str(tmp_path / "own-chroma"), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection("notes", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})
    col.add(ids=["a", "b", "c"], documents=["reset the router", "guest network", "time zone settings"])
    res = col.query(query_texts=["reset the router"], n_results=1)
    assert res["ids"] == [["a"]]
    again = client.get_collection("notes")  # chroma rebuilds the function from its stored config
    assert again.query(query_texts=["guest network"], n_results=1)["ids"] == [["b"]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_server(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:  # type: ignore[type-arg]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chroma server exited with code {proc.returncode}")
        try:
            with opener.open(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"chroma server on 127.0.0.1:{port} did not answer within {timeout:.0f}s")


@pytest.mark.server
@pytest.mark.timeout(120)
def test_chroma_http_server(tmp_path: Path, tiny_config, docs_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    if not CHROMA.exists() and shutil.which("chroma") is None:
        pytest.skip("the chroma CLI is not installed")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    port = _free_port()
    cmd = [str(CHROMA if CHROMA.exists() else shutil.which("chroma")), "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)]
    log = open(tmp_path / "chroma-server.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for_server(port, proc)
        config = tiny_config.with_overrides({"index.backend": "chroma", "index.chroma_url": f"http://127.0.0.1:{port}"})
        rt = Ragtune.init(tmp_path / "ws", config, progress=False)
        _index_search_swap(rt, docs_jsonl, tmp_path)
        assert not (rt.ws.root / "chroma").exists()  # everything lives on the server
        client = chroma_client(config.index, rt.ws.root)
        names = {c.name for c in client.list_collections()}
        assert {rt.serving().store.collection_name} <= names  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
