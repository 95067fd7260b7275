"""The click-weighted loss with gradient caching equals the plain one, and trains through the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragtune.config import TrainConfig
from ragtune.embedder import ModelSpec, load_sentence_transformer
from ragtune.mining import TrainExample
from ragtune.training.losses import CachedWeightedMultipleNegativesRankingLoss, WeightedMultipleNegativesRankingLoss, weighted_infonce
from ragtune.training.sentence import train_sentence_model

TEXTS = [f"question {i} about the router's setting number {i * 7}" for i in range(6)]
DOCS = [f"answer {i}: open settings and change item {i * 7} then restart the device" for i in range(6)]
NEGS = [f"unrelated passage {i} on bedtime schedules and guest networks" for i in range(6)]


def _grads(model, loss_fn, labels):  # type: ignore[no-untyped-def]
    model.zero_grad()
    features = [model.tokenize(t) for t in (TEXTS, DOCS, NEGS)]
    loss = loss_fn(features, labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("weighted", [False, True])
def test_cached_loss_has_the_plain_loss_and_gradients(tiny_model: str, weighted: bool) -> None:
    model = load_sentence_transformer(tiny_model, "cpu")
    model.eval()  # no dropout: both passes see the same network
    labels = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 0.25]) if weighted else None
    plain_loss, plain = _grads(model, WeightedMultipleNegativesRankingLoss(model), labels)
    cached_loss, cached = _grads(model, CachedWeightedMultipleNegativesRankingLoss(model, mini_batch_size=4), labels)
    assert torch.allclose(plain_loss, cached_loss, atol=1e-5)
    assert plain.keys() == cached.keys() and plain
    for name, grad in plain.items():
        assert torch.allclose(grad, cached[name], atol=1e-5, rtol=1e-4), name


def test_row_slices_of_the_weighted_loss_add_up_to_it() -> None:
    gen = torch.Generator().manual_seed(0)
    q, d = torch.randn(5, 8, generator=gen), torch.randn(10, 8, generator=gen)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5, 1.5])
    sim = torch.nn.functional.cosine_similarity

    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return sim(a[:, None, :], b[None, :, :], dim=-1)

    whole = weighted_infonce(q, d, w, cos, 20.0)
    parts = weighted_infonce(q, d, w, cos, 20.0, (0, 2)) + weighted_infonce(q, d, w, cos, 20.0, (2, 5))
    assert torch.allclose(whole, parts)
    assert not torch.allclose(whole, weighted_infonce(q, d, None, cos, 20.0))  # the weights count


def test_training_with_a_batch_larger_than_the_mini_batch(tiny_model: str, tmp_path: Path) -> None:
    docs = {f"p{i}": DOCS[i % 6] + f" variant {i}" for i in range(24)} | {f"n{i}": NEGS[i % 6] + f" v{i}" for i in range(24)}
    examples = [TrainExample(TEXTS[i % 6] + f" take {i}", f"p{i}", [f"n{i}"], 1.0 + (i % 3), f"q{i}") for i in range(24)]
    held = [TrainExample(TEXTS[i] + " held", f"p{i}", [], 1.0, f"h{i}") for i in range(4)]
    config = TrainConfig(batch_size=12, epochs=1)  # CPU mini-batch 8 < 12: the cached loss
    res = train_sentence_model(ModelSpec(base=tiny_model), examples, held, docs, config, mode="lora", out_dir=tmp_path / "out", device="cpu")
    assert res.steps == 2 and res.train_loss is not None and res.train_loss > 0 and res.best_eval_loss is not None
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
