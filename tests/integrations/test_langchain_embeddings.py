"""RagtuneEmbeddings: LangChain's standard embeddings tests (tiny model) plus workspace mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from ragtune.errors import ConfigError
from ragtune.integrations.langchain import RagtuneEmbeddings


class _TinyModel:
    """Points the standard tests at the session's tiny model (set before the `model` fixture runs)."""

    tiny_path: str = ""

    @pytest.fixture(autouse=True)
    def _tiny(self, request: pytest.FixtureRequest, tiny_model: str) -> None:
        request.cls.tiny_path = tiny_model

    @property
    def embeddings_class(self) -> type[RagtuneEmbeddings]:
        return RagtuneEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": self.tiny_path, "device": "cpu"}


class TestRagtuneEmbeddingsUnit(_TinyModel, EmbeddingsUnitTests):
    pass


class TestRagtuneEmbeddingsIntegration(_TinyModel, EmbeddingsIntegrationTests):
    pass


def test_model_mode_returns_normalised_float_lists(tiny_model: str) -> None:
    emb = RagtuneEmbeddings(model=tiny_model, device="cpu")
    vecs = emb.embed_documents(["reset the router", "guest network"])
    assert len(vecs) == 2 and all(type(x) is float for x in vecs[0])
    assert np.allclose(np.linalg.norm(np.array(vecs), axis=1), 1.0, atol=1e-4)
    q = emb.embed_query("reset the router")
    assert np.allclose(q, vecs[0], atol=1e-5)  # no prefixes, no query map: same vector both sides
    assert "model=" in repr(emb)


def test_default_is_the_default_model() -> None:
    emb = RagtuneEmbeddings()  # does not load the model until used
    assert emb.model == "default" and emb.workspace is None
    assert emb.embedder().spec.base == "default"


def test_workspace_and_model_are_exclusive(workspace, tiny_model: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        RagtuneEmbeddings(workspace=workspace.ws.root, model=tiny_model)


def test_workspace_mode_uses_current_version(workspace) -> None:  # type: ignore[no-untyped-def]
    emb = RagtuneEmbeddings(workspace=workspace.ws.root)
    serving = workspace.serving()
    want_q = serving.embedder.encode_queries(["reset the router"])[0]
    want_d = serving.embedder.encode_documents(["hold the button"])[0]
    assert np.allclose(emb.embed_query("reset the router"), want_q, atol=1e-5)
    assert np.allclose(emb.embed_documents(["hold the button"])[0], want_d, atol=1e-5)
    # the stored vector of a doc is what embed_documents gives for its embed text
    doc = serving.docs.get([0])[0]
    assert np.allclose(emb.embed_documents([doc.embed_text])[0], serving.vectors()[0], atol=1e-4)


def test_workspace_mode_applies_the_query_map(workspace, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A version with a query-side map: queries go through it, documents do not."""
    from dataclasses import replace

    from safetensors.numpy import save_file

    serving = workspace.serving()
    dim = serving.embedder.dim
    weight = np.random.default_rng(0).normal(size=(dim, dim)).astype(np.float32)
    save_file({"weight": weight}, str(tmp_path / "qmap.safetensors"))
    spec = replace(serving.spec, query_map=str(tmp_path / "qmap.safetensors"))
    with workspace.ws.lock("index"):
        workspace.ws.write_version(workspace.config, spec, kind="query", parent=serving.name, index_version=serving.info.index_version)
    emb = RagtuneEmbeddings(workspace=workspace)
    plain = serving.embedder.encode_documents(["reset the router"])[0]
    mapped = plain @ weight.T
    mapped /= np.linalg.norm(mapped)
    assert np.allclose(emb.embed_query("reset the router"), mapped, atol=1e-4)
    assert np.allclose(emb.embed_documents(["reset the router"])[0], plain, atol=1e-5)


async def test_async_workspace_mode(workspace) -> None:  # type: ignore[no-untyped-def]
    emb = RagtuneEmbeddings(workspace=workspace.ws.root)
    q = await emb.aembed_query("guest wifi")
    d = await emb.aembed_documents(["a", "b"])
    assert len(q) == len(d[0]) == workspace.serving().embedder.dim
