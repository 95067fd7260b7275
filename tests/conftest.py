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
# tiny tensors: one thread is faster, and spares the suite torch's thread spin-waits on a busy machine
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
            "refresh.min_new_events": 3,
            "mining.heldout_fraction": 0.3,
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


# -- playing users against a workspace (plain functions: tests import them from tests.conftest) ----
ROUTER = "please help me with my router problem number {}"


def play(rt, n: int = 24, *, k: int = 5, start: int = 0) -> str:  # type: ignore[no-untyped-def]
    """Near-identical queries whose users all click the doc the first one ranks ``k``-th: a pattern a candidate can learn.

    Returns that doc's id. Searches are logged (interleaved while a trial is live).
    """
    texts = [ROUTER.format(i) for i in range(start, start + n)]
    target = rt.search(texts[0], k=k, log=False)[k - 1].doc_id
    for t in texts:
        hits = rt.search(t, k=k)
        if target in {h.doc_id for h in hits}:
            rt.click(hits.query_id, target)
    return target


def teams_of(rt, query_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Each shown doc's team in one logged search (read back from the feedback log, as an app would)."""
    rec = next(r for r in rt.feedback.records() if r.qid == query_id)
    return {im.doc_id: im.team for im in rec.impressions}


def play_trial(rt, n: int, prefer: str | None, *, k: int = 5, seed: int = 0, text: str = "router question {}") -> dict[str, int]:  # type: ignore[no-untyped-def]
    """``n`` logged searches while a trial is live; on each interleaved one the user clicks one result:

    ``prefer`` ``"trial"`` or ``"serving"``: a result of that team (none when every shown result is
    ``"shared"``); ``"random"``: a shown result picked uniformly (a click that carries no
    information); ``None``: no click. Returns counts.
    """
    import random

    rng = random.Random(seed)
    out = {"searches": 0, "interleaved": 0, "clicks": 0}
    for i in range(n):
        hits = rt.search(text.format(i), k=k)
        out["searches"] += 1
        if hits.trial is None or prefer is None:
            continue
        out["interleaved"] += 1
        if prefer == "random":
            doc = hits[rng.randrange(len(hits))].doc_id
        else:
            teams = teams_of(rt, hits.query_id)
            ours = [h.doc_id for h in hits if teams[h.doc_id] == prefer]
            if not ours:  # both rankings agreed on every shown result (all "shared"): nothing to prefer
                continue
            doc = rng.choice(ours)
        rt.click(hits.query_id, doc)
        out["clicks"] += 1
    return out
