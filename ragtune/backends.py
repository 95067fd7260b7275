"""Fast CPU inference: an int8 ONNX Runtime copy of a version's transformer (``model.backend = "onnx"``).

The transformer of a model spec (base weights, with a LoRA adapter merged or a full fine-tune and its
WiSE-FT ratio applied) is exported to ONNX once, quantized to int8 with ONNX Runtime's dynamic
quantization (no calibration data), and cached next to the weights it was made from: in a version's
``model/onnx/`` folder for a fine-tuned model, in the workspace's ``onnx/`` folder for a base model.
The sentence-transformers model keeps its tokenizer, pooling and normalisation; only its transformer
module's forward pass runs in ONNX Runtime, so ``encode`` behaves as with torch.

sentence-transformers' own ONNX backend (``SentenceTransformer(..., backend="onnx")``) and its
``export_dynamic_quantized_onnx_model`` go through optimum-onnx, which requires transformers < 4.58
while sentence-transformers 6 requires transformers >= 5: the two cannot be installed together, so
ragtune exports with ``torch.onnx`` and quantizes with ``onnxruntime.quantization`` directly, with the
same int8 presets as optimum's ``AutoQuantizationConfig`` (:data:`QUANT_PRESETS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.errors import MissingDependencyError, ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["QUANT_PRESETS", "attach_onnx", "export_onnx", "onnx_file_name", "quantization_preset", "require_onnx"]

logger = logging.getLogger(__name__)

#: Dynamic int8 presets by CPU, as optimum's ``AutoQuantizationConfig`` defines them (activations are
#: asymmetric uint8, weights symmetric and per channel; AVX2 has no fast int8 x int8 path, so uint8 weights).
QUANT_PRESETS: dict[str, dict[str, Any]] = {
    "arm64": {"weights": "QInt8"},
    "avx2": {"weights": "QUInt8"},
    "avx512": {"weights": "QInt8"},
    "avx512_vnni": {"weights": "QInt8"},
}

_INSTALL = "pip install 'ragtune[onnx]'"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def quantization_preset(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The int8 preset for this CPU: ``"arm64"``, ``"avx512_vnni"``, ``"avx512"`` or ``"avx2"``.

    Args:
        flags: CPU feature flags (default: read from ``/proc/cpuinfo``; empty where it is absent).
        machine: ``platform.machine()`` (default: this machine's).

    Returns:
        The preset name (a key of :data:`QUANT_PRESETS`); ``"avx2"`` on an x86 CPU without AVX2 or AVX-512,
        where ONNX Runtime still runs the model, only more slowly.
    """
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return "arm64"
    if flags is None:
        flags = _cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" not in flags:
        logger.info("this CPU reports neither AVX2 nor AVX-512: the int8 ONNX model uses the avx2 preset and runs slower than it could")
    return "avx2"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def require_onnx() -> None:
    """Raise :class:`MissingDependencyError` naming the extra when onnxruntime or onnx is missing."""
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependencyError(f"model.backend 'onnx' needs {module}, which is not installed; run {_INSTALL}, or set model.backend to 'torch'") from exc


def onnx_file_name(preset: str, interpolation: float = 1.0) -> str:
    """``model_qint8_<preset>.onnx`` (sentence-transformers' naming), with the WiSE-FT ratio when it is not 1."""
    suffix = "" if interpolation == 1.0 else f"_wise{interpolation:g}"
    return f"model_qint8_{preset}{suffix}.onnx"


def export_onnx(model: SentenceTransformer, target: Path, preset: str) -> Path:
    """Export ``model``'s transformer to ONNX and quantize it to int8 at ``target``.

    The float model and the work files go in a folder beside ``target`` that is removed afterwards;
    the quantized file is moved into place atomically, so a reader sees it whole or not at all and two
    processes exporting at once both end with a good file.

    Args:
        model: A sentence-transformers model whose first module is a transformer (on the CPU).
        target: The ``.onnx`` file to write.
        preset: A key of :data:`QUANT_PRESETS`.

    Returns:
        ``target``.
    """
    require_onnx()
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if preset not in QUANT_PRESETS:
        raise ModelError(f"unknown int8 preset {preset!r}; known: {sorted(QUANT_PRESETS)}")
    transformer: Any = model[0]
    hf = transformer.auto_model
    enc = model.tokenizer(["a short text", "a somewhat longer text, to pad the first one"], padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in enc]

    class _Export(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args)), return_dict=False)[0]

    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        fp32 = work / "model.onnx"
        axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
        # the tracer notes shape checks it records as constants (the mask's padding, causality): both are fixed for an encoder
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                _Export(hf.float().eval()), tuple(enc[n] for n in names), str(fp32), input_names=names, output_names=["last_hidden_state"],
                dynamic_axes=axes, opset_version=17, dynamo=False,
            )  # fmt: skip
        quantized = work / target.name
        with _quiet_root_logger():  # onnxruntime's quantizer suggests its pre-processing tool through the root logger
            quantize_dynamic(
                str(fp32), str(quantized), per_channel=True, reduce_range=False, weight_type=getattr(QuantType, QUANT_PRESETS[preset]["weights"]),
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )  # fmt: skip
        os.replace(quantized, target)
    except MissingDependencyError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot export the model to int8 ONNX ({type(exc).__name__}: {exc}); set model.backend to 'torch'") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("exported the model to int8 ONNX (%s preset): %s", preset, target)
    return target


class _DropBelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    quiet = _DropBelowError()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def attach_onnx(model: SentenceTransformer, path: Path) -> SentenceTransformer:
    """Run ``model``'s transformer module from the ONNX file ``path`` (tokenizer, pooling and normalisation stay).

    ONNX Runtime uses as many threads as torch does (``OMP_NUM_THREADS`` / ``torch.set_num_threads``),
    so both backends share the machine alike.
    """
    require_onnx()
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot load the ONNX model {path} ({type(exc).__name__}: {exc}); delete it to export it again") from exc
    transformer: Any = model[0]
    transformer.model = _ort_encoder(session, transformer.auto_model.config)
    return model


def _ort_encoder(session: Any, config: Any) -> Any:
    """A torch module that stands in for the Hugging Face model inside a sentence-transformers ``Transformer``."""
    import torch

    class OrtEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.session = session
            self.config = config
            self.inputs = [i.name for i in session.get_inputs()]

        def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, **_: Any) -> dict[str, Any]:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if given["attention_mask"] is None:
                given["attention_mask"] = torch.ones_like(input_ids)
            if given["token_type_ids"] is None:
                given["token_type_ids"] = torch.zeros_like(input_ids)
            feed = {n: given[n].detach().cpu().numpy() for n in self.inputs}
            (out,) = self.session.run(["last_hidden_state"], feed)
            return {"last_hidden_state": torch.from_numpy(out).to(input_ids.device)}

    return OrtEncoder()
