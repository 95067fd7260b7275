"""Device, precision and batch choice (``ragtune.embedder.choose_device``), with torch's CUDA queries mocked at the edge."""

from __future__ import annotations

import pytest
import torch

from ragtune.embedder import CPU_TRAIN_MINI_BATCH, CUDA_ENCODE_BATCH_FACTOR, DeviceChoice, Embedder, ModelSpec, choose_device
from ragtune.errors import ConfigError


def _gpu(monkeypatch: pytest.MonkeyPatch, present: bool, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_cpu_keeps_fp32_and_the_configured_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, False)
    choice = choose_device("auto", batch_size=48, train_batch_size=32)
    assert choice == DeviceChoice("cpu", "float32", "fp32", 48, CPU_TRAIN_MINI_BATCH)
    assert choice.to_dict()["train_precision"] == "fp32"


def test_cpu_mini_batch_never_exceeds_the_training_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, False)
    assert choose_device("auto", train_batch_size=4).train_mini_batch == 4


def test_cuda_with_bf16_trains_in_bf16_and_encodes_in_fp16_with_larger_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, True, bf16=True)
    choice = choose_device("auto", batch_size=32, train_batch_size=64)
    assert choice == DeviceChoice("cuda", "float16", "bf16", 32 * CUDA_ENCODE_BATCH_FACTOR, 64)
    assert choose_device("cuda").device == "cuda"


def test_cuda_without_bf16_trains_in_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, True, bf16=False)
    assert choose_device("auto").train_precision == "fp16"


def test_cpu_asked_for_stays_on_cpu_with_a_gpu_present(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, True)
    assert choose_device("cpu", batch_size=16).device == "cpu"
    assert choose_device("cpu", batch_size=16).encode_batch_size == 16


def test_cuda_asked_for_without_a_gpu_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, False)
    with pytest.raises(ConfigError, match="torch sees no GPU"):
        choose_device("cuda")


def test_embedder_takes_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, True)
    emb = Embedder(ModelSpec(), None, "auto", batch_size=16)  # nothing is loaded until first use
    assert (emb.device, emb.batch_size) == ("cuda", 16 * CUDA_ENCODE_BATCH_FACTOR)
    _gpu(monkeypatch, False)
    emb = Embedder(ModelSpec(), None, "auto", batch_size=16)
    assert (emb.device, emb.batch_size) == ("cpu", 16)
