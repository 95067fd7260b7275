"""What an ``index`` run does, worked out before anything is embedded or written.

:func:`plan_index` merges the documents just loaded from some sources into the current index: the
given sources' documents replace what those sources held before (added, changed, removed within
each source), every other source's documents stay as they are (or all go, with ``replace``). A doc
id that two sources produce is an error naming both. :func:`model_changes` compares the configured
model (``config.json``) with the one a version was built with. The reports are plain dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtune.config import RagtuneConfig
from ragtune.corpus import Document
from ragtune.embedder import ModelSpec
from ragtune.errors import InputError

__all__ = [
    "IndexPlan", "IndexReport", "IndexedDoc", "ModelChange", "SourceReport", "config_with_model", "model_changes", "plan_index", "spec_from_config",
]  # fmt: skip

#: What happened to one source in an ``index`` run.
SourceStatus = Literal["new", "updated", "unchanged", "kept", "removed", "adopted"]

#: ``ragtune.config.ModelConfig`` field ↔ ``ModelSpec`` field: the settings that decide the document vectors.
MODEL_FIELDS = (
    ("name", "base"), ("query_prefix", "query_prefix"), ("document_prefix", "document_prefix"), ("max_seq_length", "max_seq_length"), ("backend", "backend"),
)  # fmt: skip


@dataclass
class SourceReport:
    """One source's part of an ``index`` run.

    Attributes:
        source: The source's resolved absolute path (``""``: documents indexed before sources were tracked).
        status: ``"new"`` (first indexed now), ``"updated"``, ``"unchanged"``, ``"kept"`` (not given:
            left as it was), ``"removed"`` (dropped by ``replace``) or ``"adopted"`` (untracked
            documents that a given source now produces).
        n_docs: Its documents in the new index.
        added: Its documents that were not in the index.
        changed: Its documents whose text changed.
        unchanged: Its documents that kept their text (and vector).
        removed: Its documents that left the index.
    """

    source: str
    status: SourceStatus
    n_docs: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class IndexReport:
    """What :meth:`ragtune.Ragtune.index` did (``report["version"]`` works too, as for the dict it once was).

    Attributes:
        version: The serving version after the run (the old one when nothing changed).
        written: Whether a new version was written.
        n_docs: Documents in the index.
        added: Documents that were not in the index.
        changed: Documents whose text changed.
        unchanged: Documents that kept their text.
        removed: Documents that left the index.
        embedded: Documents embedded now (the others' vectors were reused).
        seconds: Wall time.
        model: The model label the index's vectors were made with.
        reindexed: Whether every document was re-embedded with a newly configured model.
        sources: One :class:`SourceReport` per source given or in the index.
        trial_ended: The live trial this new version ended (its id, version, figures and ``reason``),
            or ``None``: a trial compares against the version it started from, so a new serving
            version drops it.
        timings: Seconds per stage: ``load`` (reading and planning), ``embed`` (the forward pass),
            ``write`` (doc store, vectors, vector store and the swap).
        truncated: Documents embedded now that are longer than the model's token limit: only their
            start was embedded (JSONL rows and BEIR documents are not chunked; split long ones).
    """

    version: str
    written: bool
    n_docs: int
    added: int
    changed: int
    unchanged: int
    removed: int
    embedded: int
    seconds: float
    model: str
    reindexed: bool = False
    sources: list[SourceReport] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    trial_ended: dict[str, Any] | None = None
    truncated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sources": [s.to_dict() for s in self.sources]}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]


@dataclass(frozen=True, slots=True)
class IndexedDoc:
    """A document of the current index by reference: its id, hash and source, its text left in the doc store.

    Planning a re-index needs no old text: a re-given source's documents are replaced by the ones just
    loaded, and a kept document's text is read back only when a new version is written (not when the
    index is unchanged).

    Attributes:
        id: The doc id.
        content_hash: Its :attr:`ragtune.corpus.Document.content_hash`.
        source: Its source.
        pos: Its row in the current version's doc store.
    """

    id: str
    content_hash: str
    source: str
    pos: int


@dataclass
class IndexPlan:
    """The documents of the next index and how each source changes.

    Attributes:
        docs: The new index's documents, in order: loaded ones, and kept ones as :class:`IndexedDoc`
            when the plan was made from references.
        sources: Per-source counts.
        unchanged: The new index would equal the old one (same ids, texts and sources, same order).
    """

    docs: list[Document | IndexedDoc]
    sources: list[SourceReport]
    unchanged: bool


def _label(source: str) -> str:
    return source or "(documents indexed before sources were tracked)"


def plan_index(old: Sequence[Document | IndexedDoc], new: Sequence[Document], given: Sequence[str], *, replace: bool = False) -> IndexPlan:
    """Merge ``new`` (the documents just loaded from the sources ``given``) into the index ``old``.

    The given sources' documents take the place of what those sources held; the documents of other
    sources stay (``replace``: go). Documents indexed before sources were tracked (source ``""``)
    stay too, unless a given source produces their id: then that source adopts them.

    Args:
        old: The current index's documents, by position (each with its ``source``), or references to them.
        new: The documents loaded now, grouped by source in ``given`` order.
        given: The sources loaded now (:func:`ragtune.corpus.source_key`).
        replace: Make the index exactly ``new``.

    Returns:
        The plan.

    Raises:
        InputError: a given source produces the id of a document another (kept) source holds.
    """
    given_set = set(given)
    new_by_source: dict[str, list[Document]] = {s: [] for s in given}
    for doc in new:
        new_by_source.setdefault(doc.source, []).append(doc)
    new_ids = {d.id: d.source for d in new}
    old_by_id = {d.id: d for d in old}
    docs: list[Document | IndexedDoc] = []
    emitted: set[str] = set()
    for d in old:
        if d.source in given_set:
            if d.source not in emitted:
                docs += new_by_source[d.source]
                emitted.add(d.source)
        elif replace:
            continue
        elif d.id in new_ids:
            if d.source == "":
                continue  # an untracked document: the given source that produces its id adopts it
            both = f"document id {d.id!r} is produced by both {new_ids[d.id]} and {d.source} (already indexed); ids must be unique across sources: rename it in one of them"
            if Path(d.source).is_dir() and Path(new_ids[d.id]).is_dir():  # a folder's ids are its files' relative paths
                both += f" (two folders holding the same relative path: index their common parent {os.path.commonpath([d.source, new_ids[d.id]])} as one source instead)"
            raise InputError(
                f"{both}, or replace the index with only the new sources (index(sources, replace=True))",
                cli=f"{both}, or replace the index with only the new sources (`ragtune index --replace SOURCES`)",
            )
        else:
            docs.append(d)
    for s in given:
        if s not in emitted:
            docs += new_by_source[s]
            emitted.add(s)

    final_ids = {d.id for d in docs}
    reports: dict[str, SourceReport] = {}
    old_sources = list(dict.fromkeys(d.source for d in old))
    for s in [*old_sources, *(s for s in given if s not in old_sources)]:
        mine: Sequence[Document | IndexedDoc] = new_by_source.get(s, []) if s in given_set else [d for d in docs if d.source == s]
        rep = SourceReport(source=s, status="kept", n_docs=len(mine))
        for d in mine:
            before = old_by_id.get(d.id)
            if before is None:
                rep.added += 1
            elif before.content_hash != d.content_hash:
                rep.changed += 1
            else:
                rep.unchanged += 1
        rep.removed = sum(1 for d in old if d.source == s and d.id not in final_ids)
        if s in given_set:
            same = [(d.id, d.content_hash) for d in old if d.source == s] == [(d.id, d.content_hash) for d in mine]
            rep.status = "new" if s not in old_sources else ("unchanged" if same else "updated")
        elif rep.n_docs == 0:
            rep.status = "removed" if rep.removed else "adopted"
        reports[s] = rep
    unchanged = [(d.id, d.content_hash, d.source) for d in old] == [(d.id, d.content_hash, d.source) for d in docs]
    return IndexPlan(docs, list(reports.values()), unchanged)


@dataclass(frozen=True)
class ModelChange:
    """One model setting on which ``config.json`` and a version differ.

    Attributes:
        key: The config key (``model.name``, ``model.query_prefix``, ``model.document_prefix``, ``model.max_seq_length``, ``model.backend``).
        configured: Its value in the config.
        serving: The value the version was built with.
    """

    key: str
    configured: Any
    serving: Any

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return f"{self.key} is {self.configured!r} in config.json but {self.serving!r} in the index"


def spec_from_config(config: RagtuneConfig) -> ModelSpec:
    """The base model spec the config's ``model`` section describes."""
    m = config.model
    quantization = None
    if m.backend == "onnx":
        from ragtune.backends import quantization_preset

        quantization = quantization_preset()
    return ModelSpec(
        base=m.name, query_prefix=m.query_prefix, document_prefix=m.document_prefix, max_seq_length=m.max_seq_length, backend=m.backend, quantization=quantization,
    )  # fmt: skip


def model_changes(config: RagtuneConfig, spec: ModelSpec) -> list[ModelChange]:
    """The model settings of ``config`` that differ from those ``spec`` (a version's model) was built with."""
    return [
        ModelChange(f"model.{cfg_key}", getattr(config.model, cfg_key), getattr(spec, spec_key))
        for cfg_key, spec_key in MODEL_FIELDS
        if getattr(config.model, cfg_key) != getattr(spec, spec_key)
    ]


def config_with_model(config: RagtuneConfig, spec: ModelSpec) -> RagtuneConfig:
    """``config`` with its model settings set to the base model of ``spec`` (what a version records it was made with)."""
    changes = {cfg_key: getattr(spec, spec_key) for cfg_key, spec_key in MODEL_FIELDS}
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **changes))
