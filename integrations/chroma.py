"""A chromadb ``EmbeddingFunction`` backed by a ragtune workspace or a local model.

Use it to give your own chroma collections ragtune's (fine-tuned) embedder::

    from ragtune.integrations.chroma import RagtuneEmbeddingFunction
    ef = RagtuneEmbeddingFunction(workspace=".ragtune")
    col = client.create_collection("notes", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})

With ``workspace=`` every call uses the workspace's *current* version (documents through
``__call__``, queries through ``embed_query`` with the version's query-side map). Note that vectors
already stored in your own collection are not re-embedded when ragtune promotes a new version;
ragtune's own chroma backend (``index.backend="chroma"``) does that for you.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from ragtune.errors import ConfigError
from ragtune.integrations.langchain import RagtuneEmbeddings

__all__ = ["RagtuneEmbeddingFunction"]


@register_embedding_function
class RagtuneEmbeddingFunction(EmbeddingFunction[Documents]):
    """chromadb embedding function over ragtune's embedder.

    Args:
        workspace: A ragtune workspace (follows its current version).
        model: ``"default"`` or a sentence-transformers path, used when ``workspace`` is not given.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (model mode).
        batch_size: Encoding batch size (model mode).
    """

    def __init__(self, workspace: str | Path | None = None, model: str | None = None, device: str = "auto", batch_size: int = 32) -> None:
        self._embeddings = RagtuneEmbeddings(workspace=workspace, model=model, device=device, batch_size=batch_size)
        self.workspace = self._embeddings.workspace
        self.model = self._embeddings.model
        self.device = device
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        """Embed documents (document side)."""
        vecs = self._embeddings.embedder().encode_documents(list(input))
        return [np.asarray(v, dtype=np.float32) for v in vecs]

    def embed_query(self, input: Documents) -> Embeddings:
        """Embed queries (query side: prefix and query-side map of the current version)."""
        vecs = self._embeddings.embedder().encode_queries(list(input))
        return [np.asarray(v, dtype=np.float32) for v in vecs]

    @staticmethod
    def name() -> str:
        return "ragtune"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip"]

    def get_config(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "model": self.model, "device": self.device, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> RagtuneEmbeddingFunction:
        RagtuneEmbeddingFunction.validate_config(config)
        return RagtuneEmbeddingFunction(
            workspace=config.get("workspace"),
            model=config.get("model") if not config.get("workspace") else None,
            device=config.get("device", "auto"),
            batch_size=int(config.get("batch_size", 32)),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config, dict) or not (config.get("workspace") or config.get("model")):
            raise ConfigError(f"a ragtune embedding function config needs 'workspace' or 'model', got {config!r}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        for key in ("workspace", "model"):
            if key in new_config and new_config[key] != old_config.get(key):
                raise ConfigError(f"cannot change '{key}' of a collection's ragtune embedding function (vectors would not match)")
