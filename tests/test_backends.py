"""model.backend = "onnx": the int8 ONNX Runtime export of a version's model (ragtune.backends)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ragtune import Ragtune, RagtuneConfig
from ragtune.backends import QUANT_PRESETS, quantization_preset
from ragtune.embedder import Embedder, ModelSpec
from ragtune.errors import ConfigError, MissingDependencyError

TEXTS = [
    "Hold the reset button for ten seconds to restore factory settings.",
    "Change the wireless password under Settings, Wireless, Security, then reconnect every device that used the old one.",
    "Firmware",
    "A solid green light means the router is online; a blinking amber light means it is still starting up.",
    "guest network",
]

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)  # both L2-normalised


@pytest.fixture()
def lora_adapter(tiny_model: str, tmp_path: Path) -> Path:
    """A LoRA adapter on the tiny model whose weights change its vectors (peft starts B at zero)."""
    import torch
    from peft import LoraConfig, TaskType
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model, device="cpu")
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=4, lora_alpha=8, target_modules=["query", "value"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model[0].auto_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = tmp_path / "adapter"
    model[0].auto_model.save_pretrained(str(out))
    return out


def test_backend_is_validated() -> None:
    assert RagtuneConfig().model.backend == "torch"
    assert RagtuneConfig().with_overrides({"model.backend": "onnx"}).model.backend == "onnx"
    with pytest.raises(ConfigError, match=r"model.backend must be one of \['torch', 'onnx'\], got 'openvino'"):
        RagtuneConfig().with_overrides({"model.backend": "openvino"})


def test_an_old_manifest_means_torch() -> None:
    spec = ModelSpec.from_dict({"base": "default", "query_prefix": "", "document_prefix": ""})
    assert (spec.backend, spec.quantization) == ("torch", None)
    assert spec.label() == "default"


@pytest.mark.parametrize(
    ("flags", "machine", "preset"),
    [
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "avx512_vnni"),
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", "avx512"),
        ({"avx2", "fma"}, "x86_64", "avx2"),
        (set(), "x86_64", "avx2"),
        (set(), "aarch64", "arm64"),
        ({"avx2"}, "arm64", "arm64"),
    ],
)
def test_quantization_preset_follows_the_cpu(flags: set[str], machine: str, preset: str) -> None:
    assert quantization_preset(flags, machine) == preset
    assert preset in QUANT_PRESETS


def test_onnx_int8_vectors_are_close_to_torch(tiny_model: str, tmp_path: Path) -> None:
    torch_vecs = Embedder(ModelSpec(base=tiny_model), tmp_path, "cpu", 2).encode_documents(TEXTS)
    emb = Embedder(ModelSpec(base=tiny_model, backend="onnx", quantization="avx2"), tmp_path, "cpu", 2)
    onnx_vecs = emb.encode_documents(TEXTS)
    assert onnx_vecs.shape == torch_vecs.shape and onnx_vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(onnx_vecs, axis=1), 1.0, atol=1e-5)
    # int8 is not exact: identical vectors would mean the ONNX model is not the one running
    assert _cosines(onnx_vecs, torch_vecs).min() >= 0.995
    assert not np.allclose(onnx_vecs, torch_vecs, atol=1e-6)
    path = emb.onnx_path()
    assert path.is_file() and path.is_relative_to(tmp_path / "onnx") and path.name == "model_qint8_avx2.onnx"
    assert emb.encode_queries(["reset"]).shape == (1, torch_vecs.shape[1])


def test_a_lora_adapter_is_merged_before_export_and_the_export_travels_with_it(tiny_model: str, lora_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(base=tiny_model, adapter=str(lora_adapter), adapter_kind="lora", backend="onnx", quantization="avx2")
    base_vecs = Embedder(ModelSpec(base=tiny_model), tmp_path, "cpu", 2).encode_documents(TEXTS)
    tuned_vecs = Embedder(ModelSpec(**{**spec.to_dict(), "backend": "torch", "quantization": None}), tmp_path, "cpu", 2).encode_documents(TEXTS)
    assert _cosines(tuned_vecs, base_vecs).min() < 0.99  # the adapter matters
    first = Embedder(spec, tmp_path, "cpu", 2).encode_documents(TEXTS)
    assert _cosines(first, tuned_vecs).min() >= 0.995
    assert (lora_adapter / "onnx" / "model_qint8_avx2.onnx").is_file()

    # a version's folder is a copy of the candidate's: its export comes along and is not made again
    copied = tmp_path / "versions" / "v0002" / "model"
    shutil.copytree(lora_adapter, copied)
    import torch

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = Embedder(ModelSpec(**{**spec.to_dict(), "adapter": str(copied)}), tmp_path, "cpu", 2).encode_documents(TEXTS)
    assert np.allclose(again, first, atol=1e-6)


def test_wise_ft_ratio_gets_its_own_export(tiny_model: str, lora_adapter: Path, tmp_path: Path) -> None:
    half = ModelSpec(base=tiny_model, adapter=str(lora_adapter), adapter_kind="lora", interpolation=0.5, backend="onnx", quantization="avx2")
    Embedder(half, tmp_path, "cpu", 2).encode_documents(TEXTS[:2])
    assert sorted(p.name for p in (lora_adapter / "onnx").glob("*.onnx")) == ["model_qint8_avx2_wise0.5.onnx"]


def test_missing_extra_names_it(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    emb = Embedder(ModelSpec(base=tiny_model, backend="onnx", quantization="avx2"), tmp_path / "fresh", "cpu", 2)
    with pytest.raises(MissingDependencyError) as info:
        emb.encode_documents(TEXTS)
    msg = str(info.value)
    assert "\n" not in msg and "onnxruntime" in msg and "pip install 'ragtune[onnx]'" in msg and "model.backend" in msg


def test_a_workspace_on_onnx_records_it_and_searches_through_it(tiny_config: RagtuneConfig, docs_jsonl: Path, tmp_path: Path) -> None:
    config = tiny_config.with_overrides({"model.backend": "onnx"})
    rt = Ragtune.init(tmp_path / "ws", config, progress=False)
    rt.index([docs_jsonl])
    manifest = json.loads((rt.ws.version_dir(rt.current_version) / "manifest.json").read_text())
    assert manifest["model"]["backend"] == "onnx" and manifest["model"]["quantization"] == quantization_preset()
    assert list((tmp_path / "ws" / "onnx").glob("*/model_qint8_*.onnx"))
    assert rt.embedder().spec.backend == "onnx"
    hits = rt.search("reset the router to factory settings", k=3, log=False)
    assert len(hits) == 3
    # the stored vectors are the onnx model's: a document searched by its own text comes first
    doc = "Hold the reset button for ten seconds to restore factory settings."
    assert rt.search(doc, k=1, log=False)[0].doc_id == "d1"


def test_switching_backend_is_a_model_change(workspace: Ragtune) -> None:
    workspace.config = workspace.config.with_overrides({"model.backend": "onnx"})
    changes = workspace.model_changes()
    assert [(c.key, c.configured, c.serving) for c in changes] == [("model.backend", "onnx", "torch")]
    report = workspace.reindex()
    assert report.reindexed and workspace.embedder().spec.backend == "onnx"
