"""LoRA and full fine-tuning of the embedder through sentence-transformers' trainer and peft.

The trainer is ``SentenceTransformerTrainer``; LoRA is peft's ``LoraConfig`` attached with
``SentenceTransformer.add_adapter``; the adapter is saved as ``adapter_model.safetensors`` with its
``adapter_config.json`` (whose base model is rewritten to ragtune's portable model name). Training
runs on CUDA in bf16 (or fp16) on whole batches when a GPU is present, on CPU in fp32 otherwise, where
the click-weighted loss goes through sentence-transformers' GradCache (a few texts embedded at a
time, the same gradients: :mod:`ragtune.training.losses`), so the activations held for the backward
pass are a mini-batch's, not those of the batch times (1 + negatives) texts, which at 256 tokens made a
CPU refresh peak above 8 GB. Device, precision and mini-batch: :func:`ragtune.embedder.choose_device`.
Early stopping watches the loss on held-out feedback pairs and restores the best epoch's weights.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.config import TrainConfig
from ragtune.embedder import ModelSpec, choose_device, load_sentence_transformer, quiet_peft
from ragtune.errors import ConfigError

if TYPE_CHECKING:
    from ragtune.mining import TrainExample

__all__ = ["TrainResult", "build_dataset", "train_sentence_model"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training produced."""

    path: Path
    kind: str
    seconds: float
    steps: int
    epochs_run: int
    best_eval_loss: float | None
    train_loss: float | None


#: The recipe's fixed parts (chosen on SciFact's dev split; benchmarks/RESULTS.md): LoRA on the attention
#: projections with alpha = 2 * r and no LoRA dropout; one hard negative per pair; 10% warm-up; early
#: stopping after 2 epochs without held-out improvement.
LORA_TARGETS = ("query", "key", "value")
NEGATIVES = 1
WARMUP_RATIO = 0.1
PATIENCE = 2


def build_dataset(examples: list[TrainExample], doc_texts: dict[str, str], spec: ModelSpec, *, negatives: int, filler: list[str], seed: int) -> Any:
    """A ``datasets.Dataset`` of (anchor, positive, negative..., label = click weight) rows."""
    from datasets import Dataset

    rng = random.Random(seed)
    qp, dp = spec.query_prefix, spec.document_prefix
    cols: dict[str, list[Any]] = {"anchor": [], "positive": []}
    for i in range(negatives):
        cols[f"negative_{i + 1}" if negatives > 1 else "negative"] = []
    cols["label"] = []
    for ex in examples:
        cols["anchor"].append(qp + ex.query)
        cols["positive"].append(dp + doc_texts[ex.positive_id])
        negs = [doc_texts[n] for n in ex.negative_ids[:negatives]]
        while len(negs) < negatives:  # pad with random corpus docs (easy negatives)
            cand = rng.choice(filler)
            if cand != doc_texts[ex.positive_id]:
                negs.append(cand)
        for i, text in enumerate(negs):
            cols[f"negative_{i + 1}" if negatives > 1 else "negative"].append(dp + text)
        cols["label"].append(float(ex.weight))
    return Dataset.from_dict(cols)


def _log_instead_of_print(trainer: Any, progress: bool) -> None:
    """The trainer prints each epoch's loss dict to stdout; a library logs it instead (the bar stays)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _Progress(ProgressCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            logger.info("training: %s", logs)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(_Progress())


def train_sentence_model(
    base: ModelSpec,
    examples: list[TrainExample],
    eval_examples: list[TrainExample],
    doc_texts: dict[str, str],
    config: TrainConfig,
    *,
    mode: str,
    out_dir: Path,
    device: str = "auto",
    negatives: int | None = None,
    filler: list[str] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Fine-tune ``base`` on mined examples; save a LoRA adapter or a full model under ``out_dir``.

    Args:
        base: The base model spec (training always starts from the base model, on all feedback).
        examples: Training pairs with negatives and click weights.
        eval_examples: Held-out pairs for early stopping (may be empty).
        doc_texts: Text of every doc id used.
        config: Hyper-parameters.
        mode: ``"lora"`` or ``"full"``.
        out_dir: Where the adapter / model is written.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        negatives: Hard negatives per pair fed to the loss (default :data:`NEGATIVES`).
        filler: Corpus texts used to pad pairs that have fewer negatives.
        progress: Show the trainer's progress bar.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import TrainerCallback

    t0 = time.perf_counter()
    choice = choose_device(device, train_batch_size=config.batch_size)
    device = choice.device
    torch.manual_seed(config.seed)
    model = load_sentence_transformer(base.base, device, base.max_seq_length)
    serving_length = model.max_seq_length
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    if mode == "lora":
        from peft import LoraConfig, TaskType

        with quiet_peft():
            model.add_adapter(
                LoraConfig(
                    task_type=TaskType.FEATURE_EXTRACTION,
                    r=config.lora_r,
                    lora_alpha=2 * config.lora_r,
                    lora_dropout=0.0,
                    target_modules=list(LORA_TARGETS),
                )
            )
    elif mode != "full":  # pragma: no cover - refresh only calls lora/full here
        raise ConfigError(f"train_sentence_model handles 'lora' and 'full', got {mode!r}")

    from ragtune.training.losses import CachedWeightedMultipleNegativesRankingLoss, WeightedMultipleNegativesRankingLoss

    lr = config.learning_rate(mode)
    filler = filler or list(doc_texts.values())
    negatives = NEGATIVES if negatives is None else negatives
    train_ds = build_dataset(examples, doc_texts, base, negatives=negatives, filler=filler, seed=config.seed)
    eval_ds = build_dataset(eval_examples, doc_texts, base, negatives=negatives, filler=filler, seed=config.seed + 1) if len(eval_examples) >= 2 else None
    mini_batch = choice.train_mini_batch
    # GradCache embeds `mini_batch` texts at a time: its activations, not the batch's, are held for the backward pass
    loss = CachedWeightedMultipleNegativesRankingLoss(model, mini_batch) if mini_batch < config.batch_size else WeightedMultipleNegativesRankingLoss(model)
    precision = choice.train_precision
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragtune-train-", dir=out_dir.parent) as tmp:  # beside the output: cleaned with it
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            learning_rate=lr,
            warmup_steps=WARMUP_RATIO,
            seed=config.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=device == "cpu",
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            eval_strategy="epoch" if eval_ds is not None else "no",
            save_strategy="no",
            logging_strategy="epoch",
            report_to="none",
            disable_tqdm=not progress,
            dataloader_drop_last=False,
        )

        best: dict[str, Any] = {"loss": None, "state": None, "epoch": 0, "bad": 0}
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        class _EarlyStop(TrainerCallback):  # type: ignore[misc]
            """Keep the best held-out epoch's trainable weights; stop after `patience` worse epochs."""

            def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kw: Any) -> None:
                value = (metrics or {}).get("eval_loss")
                if value is None:
                    return
                if best["loss"] is None or value < best["loss"] - 1e-4:
                    best.update(loss=value, epoch=round(state.epoch or 0), bad=0, state={n: p.detach().clone() for n, p in params})
                else:
                    best["bad"] += 1
                    if best["bad"] >= PATIENCE:
                        logger.info("early stopping after epoch %s (held-out loss %.4f did not improve)", state.epoch, value)
                        control.should_training_stop = True

        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, loss=loss, callbacks=[_EarlyStop()])
        _log_instead_of_print(trainer, progress)
        out = trainer.train()
        if best["state"] is not None:
            with torch.no_grad():
                for n, p in params:
                    p.copy_(best["state"][n])
        steps = int(trainer.state.global_step)
        epochs_run = round(trainer.state.epoch or 0)

    model.max_seq_length = serving_length
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode == "lora":
        transformer: Any = model[0]
        transformer.auto_model.save_pretrained(str(out_dir), safe_serialization=True)
        cfg_path = out_dir / "adapter_config.json"
        if cfg_path.is_file():  # reference the base model portably, not by a site-packages path
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            cfg["base_model_name_or_path"] = base.base
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    else:
        model.save(str(out_dir), safe_serialization=True)
    return TrainResult(out_dir, mode, time.perf_counter() - t0, steps, epochs_run, best["loss"], float(out.training_loss) if out else None)
