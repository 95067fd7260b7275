"""``model.engine = "ray"`` against a real local Ray cluster the tests start: the same vectors and version layout as the local engine.

One small cluster for the module (2 CPUs, a small object store, no dashboard); the tiny model is a
folder on this machine's disk, so every Ray run also ships it to the actors.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragtune import ConfigError, ModelError, Ragtune, RagtuneConfig
from ragtune.cli import main
from ragtune.embedder import Embedder, ModelSpec
from ragtune.engines import LocalEngine, RayEngine, encode_corpus, make_engine
from tests.conftest import play

TOPICS = ["router", "firmware", "password", "guest network", "printer", "battery", "update", "backup"]
DOCS = [{"id": f"doc-{i:02d}", "text": f"note {i} on the {TOPICS[i % len(TOPICS)]}: " + "word " * (i % 7) + f"ends with {i * 13}"} for i in range(40)]
TOL = 1e-5


@pytest.fixture(scope="module")
def ray_cluster():  # type: ignore[no-untyped-def]
    import ray

    assert not ray.is_initialized()
    ray.init(num_cpus=2, num_gpus=0, object_store_memory=96 * 2**20, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    return path


def _layout(rt: Ragtune, version: str) -> tuple[list[str], dict, dict]:
    """A version's files, its manifest without timings or decision ids, and its config without the engine settings."""
    vdir = rt.ws.version_dir(version)
    files = sorted(str(p.relative_to(vdir)) for p in vdir.rglob("*"))
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest.pop("created")
    manifest["decision"].pop("decision")
    config = json.loads((vdir / "config.json").read_text())
    assert config["model"].pop("engine") in ("local", "ray")
    return files, manifest, config


def _vectors(rt: Ragtune, version: str) -> np.ndarray:
    return np.load(rt.ws.version_dir(version) / "vectors.npy")


def test_an_unreachable_cluster_is_a_one_line_error(tiny_config, corpus, tmp_path):
    """Runs before the module's cluster starts: the engine has to connect itself, and nothing answers there."""
    import ray

    assert not ray.is_initialized()
    with socket.socket() as sock:  # a loopback port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ws = tmp_path / "ws"
    Ragtune.init(ws, tiny_config, progress=False)
    res = CliRunner().invoke(main, ["-w", str(ws), "index", str(corpus), "--ray-address", f"127.0.0.1:{port}"])
    assert res.exit_code == 1 and f"cannot connect to the Ray cluster at 127.0.0.1:{port}" in res.stderr and "--ray-address" in res.stderr, res.output
    assert "Traceback" not in res.output and Ragtune(ws, progress=False).current_version is None
    assert not ray.is_initialized()


def test_ray_index_matches_the_local_index(ray_cluster, tiny_config, corpus, tmp_path):
    """`ragtune index --engine ray` writes the version the local engine writes: the same vectors, files, manifest and config."""
    # batches of 2 * 16 rows: the 40 docs make 2 batches of unequal size, on 2 actors
    cfg = tiny_config.with_overrides({"model.batch_size": 2, "model.document_prefix": "passage: "})
    local = Ragtune.init(tmp_path / "local", cfg, progress=False)
    v_local = local.index([corpus]).version
    ws = tmp_path / "ray"
    Ragtune.init(ws, cfg, progress=False)
    res = CliRunner().invoke(main, ["-w", str(ws), "-q", "index", str(corpus), "--engine", "ray", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)  # Ray Data logs on stderr
    assert rep["written"] and rep["embedded"] == len(DOCS)
    remote = Ragtune(ws, progress=False)
    assert remote.config.model.engine == "local"  # a flag for this run: config.json keeps its setting
    a, b = _vectors(local, v_local), _vectors(remote, rep["version"])
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (len(DOCS), 32)
    np.testing.assert_allclose(b, a, atol=TOL)
    assert not np.allclose(a[0], a[1], atol=1e-3)  # distinct docs: a row out of order would show
    assert _layout(remote, rep["version"]) == _layout(local, v_local)
    assert json.loads((remote.ws.version_dir(rep["version"]) / "config.json").read_text())["model"]["engine"] == "ray"
    assert [d.id for d in remote.serving().docs.all_documents()] == [d["id"] for d in DOCS]
    q = "the guest network"
    assert [h.doc_id for h in remote.search(q, k=5, log=False)] == [h.doc_id for h in local.search(q, k=5, log=False)]


def test_the_engines_without_a_cluster(tiny_model, tmp_path):
    emb = Embedder(ModelSpec(base=tiny_model, document_prefix="doc: "), None, "cpu", batch_size=4)
    texts = [d["text"] for d in DOCS[:6]]
    np.testing.assert_allclose(LocalEngine().encode(emb, texts), emb.encode_documents(texts), atol=0)
    assert RayEngine().encode(emb, []).shape == (0, 32)  # nothing to embed: no cluster is touched


def test_a_lora_refresh_reembeds_on_the_cluster(ray_cluster, workspace, tiny_config, docs_jsonl, tmp_path):
    """The refresh's candidate (a LoRA adapter in the refresh's temporary folder) is shipped to the actors;
    the version it writes holds the vectors the local engine makes with that model, laid out as a local refresh's."""
    overrides = {"train.lr": 5e-3, "train.epochs": 1, "gate.confidence": 0.0}
    local = workspace
    remote = Ragtune.init(tmp_path / "ray-ws", tiny_config, progress=False)
    remote.index([docs_jsonl])
    for rt in (local, remote):
        play(rt)
        rt.config = rt.config.with_overrides(overrides)
    remote.config = remote.config.with_overrides({"model.engine": "ray"})
    rep_local = local.refresh(mode="lora", trial=False)
    rep = remote.refresh(mode="lora", trial=False)
    assert rep_local.status == rep.status == "promoted", (rep_local.reason, rep.reason)
    v = rep.version
    info = remote.ws.read_version(v)
    assert info.model["adapter"] == f"versions/{v}/model"
    docs = remote.serving().docs.all_documents()
    want = Embedder(ModelSpec.from_dict(info.model), remote.ws.root, "cpu", 8).encode_documents([d.embed_text for d in docs])
    np.testing.assert_allclose(_vectors(remote, v), want, atol=TOL)
    assert not np.allclose(_vectors(remote, v), _vectors(remote, "v0001"), atol=1e-4)  # the candidate's vectors, not the base model's
    files, manifest, config = _layout(remote, v)
    files_l, manifest_l, config_l = _layout(local, rep_local.version)
    assert files == files_l
    assert manifest.keys() == manifest_l.keys() and manifest["model"] == manifest_l["model"] and manifest["kind"] == manifest_l["kind"] == "index"
    assert config == config_l


def test_cli_engine_flags_are_checked(tiny_config, corpus, tmp_path):
    ws = tmp_path / "cli-ws"
    Ragtune.init(ws, tiny_config, progress=False)
    runner = CliRunner()
    res = runner.invoke(main, ["-w", str(ws), "index", str(corpus), "--engine", "local", "--ray-address", "auto"])
    assert res.exit_code == 2 and "--ray-address is for --engine ray" in res.output
    res = runner.invoke(main, ["-w", str(ws), "refresh", "--engine", "spark"])
    assert res.exit_code == 2 and "'spark'" in res.output
    res = runner.invoke(main, ["-w", str(ws), "index", str(corpus), "--ray-address", "auto"])
    assert res.exit_code == 2 and "--ray-address" in res.output and "RAY_ADDRESS=auto" in res.output
    assert json.loads((ws / "config.json").read_text())["model"]["engine"] == "local"  # a flag never writes config.json


def test_engine_settings_are_validated(tiny_config):
    assert isinstance(make_engine(tiny_config.model), LocalEngine)
    engine = make_engine(tiny_config.with_overrides({"model.engine": "ray"}).model)
    assert isinstance(engine, RayEngine) and engine.address is None and engine.batch_size == 8
    for address in ("ray://head:10001", "10.0.0.5:6379"):
        engine = make_engine(tiny_config.with_overrides({"model.engine": address}).model)
        assert isinstance(engine, RayEngine) and engine.address == address
    for bad in ("spark", "", "auto", "head", "ray://"):
        with pytest.raises(ConfigError, match=r"model.engine must be 'local', 'ray' or a Ray address .*, got "):
            tiny_config.with_overrides({"model.engine": bad})


def test_an_older_config_with_ray_address_keeps_its_cluster(tiny_config, tmp_path):
    data = tiny_config.to_dict()
    data["model"].update(engine="ray", ray_address="ray://head:10001")
    assert RagtuneConfig.from_dict(data).model.engine == "ray://head:10001"
    data["model"].update(engine="local")
    assert RagtuneConfig.from_dict(data).model.engine == "local"  # the address of an unused engine is dropped


def test_cuda_on_a_cluster_without_gpus_is_refused(ray_cluster, tiny_model, tiny_config):
    emb = Embedder(ModelSpec(base=tiny_model), None, "cpu")
    config = tiny_config.with_overrides({"model.engine": "ray", "model.device": "cuda"}).model
    with pytest.raises(ConfigError, match=r"model.device is 'cuda' but the Ray cluster has no GPU"):
        encode_corpus(emb, ["a text"], config)


def test_a_model_the_actors_cannot_load_is_a_model_error(ray_cluster, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelError, match=re.escape(f"the Ray engine could not embed the corpus with {broken}: ") + ".*cannot load sentence-transformers model"):
        RayEngine(batch_size=2).encode(Embedder(ModelSpec(base=str(broken)), None, "cpu"), ["a text", "another"])
