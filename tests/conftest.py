"""Shared fixtures: a tiny in-process sentence-transformers model and small workspaces.

The tiny model is a 2-layer, 32-wide BERT with random (seeded) weights and the bundled MiniLM
tokenizer: it loads in well under a second, needs no network, and exercises the real code paths
(sentence-transformers encode/train, peft LoRA, faiss, SQLite). Tests that need *meaningful*
embeddings use the real default model and are marked ``slow``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"
MINI = ROOT / "examples" / "data" / "scifact-mini"


def make_tiny_model(path: Path, dim: int = 32, seed: int = 0) -> Path:
    """Write a tiny random BERT sentence-transformer (mean pooling) to ``path``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from ragtune.embedder import resolve_model_path

    torch.manual_seed(seed)
    tok = BertTokenizerFast.from_pretrained(resolve_model_path("default"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=dim, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * dim, max_position_embeddings=128)
    hf = path / "hf"
    BertModel(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    st = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=64), Pooling(dim, "mean")], device="cpu")
    out = path / "st"
    st.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a tiny sentence-transformers model made in-process."""
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-model")))


DOCS = [
    {"id": "d1", "title": "Factory reset", "text": "Hold the reset button for ten seconds to restore factory settings."},
    {"id": "d2", "title": "Wi-Fi password", "text": "Change the wireless password under Settings, Wireless, Security."},
    {"id": "d3", "title": "Firmware", "text": "The router installs firmware updates every night at three."},
    {"id": "d4", "title": "Parental controls", "text": "Profiles pause the internet and set bedtime schedules."},
    {"id": "d5", "title": "Status light", "text": "A solid green light means the router is online."},
    {"id": "d6", "title": "Guest network", "text": "Turn on a guest network to keep visitors off your devices."},
    {"id": "d7", "title": "Port forwarding", "text": "Forward a port to a device to host a game server."},
    {"id": "d8", "title": "Time zone", "text": "Set the time zone under Settings, System, Time."},
]


@pytest.fixture()
def docs_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_config(tiny_model: str):  # type: ignore[no-untyped-def]
    from ragtune import RagtuneConfig

    return RagtuneConfig().with_overrides(
        {
            "model.name": tiny_model,
            "model.batch_size": 8,
            "train.epochs": 1,
            "train.batch_size": 4,
            "train.query_epochs": 10,
            "refresh.min_new_events": 3,
            "refresh.min_pairs": 2,
            "mining.min_heldout": 1,
            "mining.heldout_fraction": 0.3,
            "mining.range_min": 0,
            "mining.range_max": 5,
            # tiny fixtures hold a handful of held-out queries; the noise check is tested in test_gate.py
            "gate.min_queries": 1,
        }
    )


@pytest.fixture()
def workspace(tmp_path: Path, tiny_config, docs_jsonl: Path):  # type: ignore[no-untyped-def]
    """An indexed workspace over DOCS with the tiny model."""
    from ragtune import Ragtune

    rt = Ragtune.init(tmp_path / "ws", tiny_config, progress=False)
    rt.index([docs_jsonl])
    return rt
