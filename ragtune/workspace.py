"""The on-disk layout of a workspace, its current-version pointer and the refresh lock.

Layout::

    WORKSPACE/
      config.json          the RagtuneConfig
      CURRENT              {"version": "v0003"}: replaced atomically (os.replace)
      feedback.sqlite      the feedback log (WAL)
      TRIAL                the live trial, if any (ragtune.trial): replaced atomically, removed when decided
      refresh-log.jsonl    every refresh decision and trial state change, one JSON object a line
      refresh.lock         flock'ed by the one running refresh
      onnx/                int8 ONNX exports of base models (model.backend = "onnx"), made once
      versions/v0001/      one model/index version
        manifest.json      what it is: model spec, index it uses, metrics, feedback counts, dates
        config.json        the config it was made with
        docs.sqlite        doc store (only for versions that own an index)
        vectors.npy        document vectors, row i = doc at position i
        index.faiss        the faiss index (or a chroma collection named after the version)
        model/             LoRA adapter (safetensors + adapter_config.json) or full model
          onnx/            its int8 ONNX export (model.backend = "onnx"), made with the version
        query_map.safetensors   the query-side tier (linear map)
        query_memory.safetensors  the query-side tier (click memory)

A version is written under ``versions/.tmp-*`` and renamed into place complete; only then does
``CURRENT`` move (or, for a trial, ``TRIAL`` point at it). A process killed at any point leaves the
serving version intact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtune.config import RagtuneConfig
from ragtune.errors import RefreshLockedError, WorkspaceError

if TYPE_CHECKING:
    import numpy as np

    from ragtune.corpus import Document
    from ragtune.embedder import ModelSpec

__all__ = ["DECISIONS_FILE", "MODEL_FILE_KEYS", "OOF_FILE", "TRAINED_FILE", "VersionInfo", "Workspace", "default_workspace_path", "store_name", "version_file", "write_json_atomic"]

#: The workspace's log of refresh decisions and trial state changes (one JSON object a line).
DECISIONS_FILE = "refresh-log.jsonl"
#: Beside each version made by a refresh: the normalised feedback query texts its model was trained on.
TRAINED_FILE = "trained_queries.json"
#: Beside a query tier: each feedback query's vector under the fold model that did not see it.
OOF_FILE = "oof_queries.safetensors"
#: The model spec fields that name files (workspace-relative, ``versions/NAME/...``).
MODEL_FILE_KEYS = ("adapter", "query_map", "query_memory")
#: The ``refresh-log.jsonl`` events that made their ``version`` current.
POINTER_EVENTS = ("indexed", "promoted", "trial_promoted", "rolled_back")
#: What a dropped trial version keeps: its record, not its index or model.
_KEEP_WHEN_DISCARDED = {"manifest.json", "config.json", TRAINED_FILE}

logger = logging.getLogger(__name__)

ENV_VAR = "RAGTUNE_WORKSPACE"


def default_workspace_path() -> Path:
    """``$RAGTUNE_WORKSPACE`` or ``./.ragtune``."""
    return Path(os.environ.get(ENV_VAR, ".ragtune"))


def version_file(rel: str | None) -> tuple[str, Path] | None:
    """``(version, path inside its folder)`` for a workspace-relative model file ``versions/NAME/...``, else ``None``."""
    parts = Path(rel or "").parts
    return (parts[1], Path(*parts[2:])) if len(parts) > 1 and parts[0] == "versions" else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so that readers see either the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass
class VersionInfo:
    """What one version is (the content of its ``manifest.json``).

    Attributes:
        name: ``v0001``...
        kind: ``"index"`` (owns doc vectors), ``"query"`` (query-side tier over another version's index).
        index_version: The version whose doc store and vectors this one searches.
        model: The model spec (see :class:`ragtune.embedder.ModelSpec`).
        created: ISO timestamp.
        parent: The version that was current when this one was made.
        n_docs: Documents in its index.
        metrics: Gate figures and anything else measured.
        feedback: Feedback counts it was trained on.
        note: A human-readable line.
        trial: Its trial, when it was made as one: ``state`` (``"staged"``, ``"live"``, ``"promoted"``,
            ``"dropped"``), the reason, wins/losses/ties and the p-value.
        decision: The ``refresh-log.jsonl`` entry of the command that made it (``id``, ``event``:
            ``"indexed"``, ``"promoted"`` or ``"trial_started"``, and the feedback watermark ``mark``),
            written with the version itself so that a crash before the log entry cannot lose it:
            :func:`ragtune.recovery.recover` replays it.
    """

    name: str
    kind: str
    index_version: str
    model: dict[str, Any]
    created: str = field(default_factory=_now)
    parent: str | None = None
    n_docs: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    feedback: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    trial: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

    @property
    def discarded(self) -> bool:
        """A dropped trial: its record is kept, its index and model files are not."""
        return self.trial.get("state") == "dropped"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionInfo:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class Workspace:
    """A ragtune workspace directory.

    Args:
        root: The workspace directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._warned_log_lines = False  # read_log warns once about lines that are not entries

    # -- layout -----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def current_path(self) -> Path:
        return self.root / "CURRENT"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def feedback_path(self) -> Path:
        return self.root / "feedback.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.root / "refresh.lock"

    @property
    def work_dir(self) -> Path:
        """Where a refresh keeps its work (removed when it ends, and by the next one after a crash)."""
        return self.root / "work"

    @property
    def trial_path(self) -> Path:
        return self.root / "TRIAL"

    @property
    def decisions_path(self) -> Path:
        return self.root / DECISIONS_FILE

    def entries(self) -> list[Path]:
        """Every top-level path the workspace's own layout may hold (module docstring): what is the workspace's, not the folder's."""
        wal = [Path(f"{self.feedback_path}{suffix}") for suffix in ("-wal", "-shm")]
        return [self.config_path, self.current_path, self.trial_path, self.feedback_path, *wal, self.lock_path, self.work_dir, self.versions_dir, self.decisions_path, self.root / "onnx"]

    def version_dir(self, name: str) -> Path:
        return self.versions_dir / name

    # -- lifecycle --------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file()

    @classmethod
    def create(cls, root: str | Path, config: RagtuneConfig | None = None, *, exist_ok: bool = True) -> Workspace:
        """Create a workspace (or open an existing one when ``exist_ok``)."""
        ws = cls(root)
        if ws.exists():
            if not exist_ok:
                raise WorkspaceError(f"a ragtune workspace already exists at {ws.root}")
            if config is not None:
                config.save(ws.config_path)
            return ws
        blocker = next((p for p in (ws.root, *ws.root.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            where = "it is a file" if blocker == ws.root else f"{blocker} is a file"
            raise WorkspaceError(f"cannot create a workspace at {ws.root}: {where}; pick a directory path (or remove the file)")
        try:
            ws.versions_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create a workspace at {ws.root}: {exc.strerror}; pick a directory you can write to") from exc
        (config or RagtuneConfig()).save(ws.config_path)
        logger.info("created workspace %s", ws.root)
        return ws

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Open an existing workspace, with a clear error if there is none."""
        ws = cls(root)
        if not ws.exists() and ws.root.is_file():
            raise WorkspaceError(
                f"{ws.root} is a file; pass the workspace directory (a folder with config.json)",
                cli=f"{ws.root} is a file; pass --workspace DIR (or set {ENV_VAR}) naming a workspace directory",
            )
        if not ws.exists() and ws.current_path.is_file():  # a workspace that lost its config.json
            raise WorkspaceError(
                f"workspace {ws.root} has versions but no config.json; Ragtune.init({str(root)!r}) writes the defaults, "
                f"or copy the serving version's (versions/<current>/config.json) back",
                cli=f"workspace {ws.root} has versions but no config.json; `ragtune init {root}` restores it from the serving version",
            )
        if not ws.exists():
            raise WorkspaceError(
                f"no ragtune workspace at {ws.root} (no config.json); create one with Ragtune.init({str(root)!r}), or name an existing workspace",
                cli=f"no ragtune workspace at {ws.root} (no config.json); run `ragtune init {root}` first or pass --workspace / set {ENV_VAR}",
            )
        return ws

    def load_config(self) -> RagtuneConfig:
        return RagtuneConfig.load(self.config_path)

    # -- versions ---------------------------------------------------------------------------------
    def _current_record(self) -> Any:
        """``CURRENT``'s parsed content (``None`` when there is none).

        Raises:
            WorkspaceError: it is not JSON.
        """
        try:
            return json.loads(self.current_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkspaceError(
                f"{self.current_path} is corrupt ({exc}); `ragtune doctor --repair` points it at the version last made current, "
                "or `ragtune rollback VERSION` at the one you name"
            ) from None

    def current_since(self) -> str:
        """When ``CURRENT`` was last set (ISO timestamp, to the second; ``""`` when unknown)."""
        try:
            data = self._current_record()
        except WorkspaceError:
            return ""
        since = data.get("since") if isinstance(data, dict) else None
        return since if isinstance(since, str) else ""

    def current_version(self) -> str | None:
        """The name of the serving version, or ``None`` when nothing was indexed yet."""
        data = self._current_record()
        name = data.get("version") if isinstance(data, dict) else None
        if name is not None and not isinstance(name, str):
            raise WorkspaceError(f"{self.current_path} is corrupt (version {name!r}); `ragtune doctor --repair` or `ragtune rollback VERSION` fixes it")
        return name or None

    def pointer_problem(self) -> str | None:
        """What is wrong with ``CURRENT`` (unreadable, missing although versions exist, or naming a version that is gone), else ``None``.

        Commands that build a version on the serving one refuse to run on such a pointer: a
        missing one would otherwise read as "nothing indexed yet" and the next ``index`` would
        serve only the sources it is given.
        """
        try:
            name = self.current_version()
        except WorkspaceError as exc:
            return str(exc)
        if name is None:  # commands under the lock replay an interrupted first index before asking: a version then means damage
            return f"{self.current_path} is missing although versions exist; `ragtune doctor --repair` restores it" if self.list_versions() else None
        if not (self.version_dir(name) / "manifest.json").is_file():
            return (
                f"{self.current_path} names version {name}, which does not exist; `ragtune doctor --repair` points it at the version "
                "last made current, or `ragtune rollback VERSION` at the one you name"
            )
        return None

    def current_token(self) -> tuple[int, int]:
        """A cheap token that changes whenever ``CURRENT`` is replaced (inode, mtime_ns)."""
        try:
            st = os.stat(self.current_path)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def set_current(self, name: str) -> None:
        """Atomically make ``name`` the serving version."""
        if not (self.version_dir(name) / "manifest.json").is_file():
            raise WorkspaceError(f"version {name!r} does not exist in {self.root}; see `ragtune versions`")
        write_json_atomic(self.current_path, {"version": name, "since": _now()})

    def list_versions(self) -> list[VersionInfo]:
        """All complete versions, oldest first."""
        out: list[VersionInfo] = []
        if not self.versions_dir.is_dir():
            return out
        for d in sorted(self.versions_dir.iterdir()):
            mf = d / "manifest.json"
            if d.name.startswith("v") and mf.is_file():
                try:
                    out.append(VersionInfo.from_dict(json.loads(mf.read_text(encoding="utf-8"))))
                except (ValueError, TypeError) as exc:  # listed by `ragtune doctor`
                    logger.warning("skipping version %s: its manifest is unreadable (%s); see `ragtune doctor`", d.name, exc)
        return out

    def read_version(self, name: str) -> VersionInfo:
        mf = self.version_dir(name) / "manifest.json"
        if not mf.is_file():
            raise WorkspaceError(f"version {name!r} does not exist in {self.root}; see `ragtune versions`")
        try:
            return VersionInfo.from_dict(json.loads(mf.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise WorkspaceError(f"version {name}'s manifest {mf} is unreadable ({exc}); `ragtune doctor` says what else is wrong") from None

    def write_manifest(self, directory: Path, info: VersionInfo) -> None:
        write_json_atomic(directory / "manifest.json", info.to_dict())

    def _next_name(self) -> str:
        nums = [int(d.name[1:]) for d in self.versions_dir.iterdir() if d.name.startswith("v") and d.name[1:].isdigit()]
        return f"v{(max(nums) + 1 if nums else 1):04d}"

    @contextlib.contextmanager
    def stage_version(self) -> Iterator[tuple[Path, str]]:
        """Give ``(staging_dir, name)``; on success the directory is renamed to ``versions/NAME``.

        Call under :meth:`lock` (which serialises writers). On error the staging directory is
        removed; a crash leaves a ``.tmp-*`` directory that :meth:`clean_stale` removes later.
        ``CURRENT`` is not touched.
        """
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        name = self._next_name()
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".tmp-"))
        try:
            yield staging, name
            os.rename(staging, self.version_dir(name))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def save_docs(self, docs: Sequence[Document]) -> Path:
        """Save a version's documents to a scratch doc store beside the versions, for :meth:`write_version`.

        As with :meth:`save_vectors`: the caller lets go of its documents and passes the path, so that
        they are not held while the vector store is built.
        """
        from ragtune.docstore import DocStore

        return self._scratch("docs.sqlite", lambda path: DocStore.write_file(path, docs))

    def save_vectors(self, vectors: np.ndarray) -> Path:
        """Save a version's vectors to a scratch ``.npy`` beside the versions, for :meth:`write_version`.

        The caller then lets go of its matrix and passes the path: the vector store is built from the
        file, so the matrix and the store's copy of it are never both in memory. A crash leaves a
        ``versions/.tmp-*`` file that :meth:`clean_stale` removes.
        """
        import numpy as np

        return self._scratch("vectors.npy", lambda path: np.save(path, vectors))

    def _scratch(self, suffix: str, write: Callable[[Path], object]) -> Path:
        """``write`` a fresh ``versions/.tmp-*-SUFFIX`` file (removed again if writing fails) and return its path."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        path = self.versions_dir / f".tmp-{uuid.uuid4().hex}-{suffix}"
        try:
            write(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def clean_stale(self) -> None:
        """Remove staging directories, scratch files (``versions/.tmp-*``) and the work directory left behind by killed processes (call under the lock)."""
        if self.versions_dir.is_dir():
            for d in self.versions_dir.iterdir():
                if d.name.startswith(".tmp-"):
                    shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond ``keep``; never the current one or one it depends on."""
        versions = self.list_versions()
        current = self.current_version()
        trial = (self.read_trial() or {}).get("version")
        by_name = {v.name: v for v in versions}
        # keep the newest `keep` versions (dropped trials' records apart: they never push out a version
        # one can roll back to), and everything a kept version needs, and so on: the index it searches
        # and the versions holding its model files (a version kept for its files keeps its index too)
        served = [v.name for v in versions if not v.discarded]
        records = [v.name for v in versions if v.discarded][-keep:]  # kept as records: they need nothing else
        needed: set[str] = set()
        todo = [name for name in [*served[-keep:], current, trial] if name is not None]
        while todo:
            name = todo.pop()
            if name in needed or name not in by_name:
                continue
            needed.add(name)
            todo.append(by_name[name].index_version)
            for key in MODEL_FILE_KEYS:  # model files may live in an earlier version's dir
                if (owner := version_file(by_name[name].model.get(key))) is not None:
                    todo.append(owner[0])
        protected = {current, trial, *records, *needed}
        removed: list[str] = []
        for v in versions:
            if v.name not in protected:
                shutil.rmtree(self.version_dir(v.name), ignore_errors=True)
                removed.append(v.name)
        return removed

    def version_problems(self, name: str) -> list[str]:
        """What keeps version ``name`` from serving (missing or unreadable files); empty when it is complete.

        Checks its manifest and config, the doc store, vectors and (faiss) index file of the index it
        searches, and the model files its spec names. A dropped trial is reported as such.
        """
        vdir = self.version_dir(name)
        try:
            info = self.read_version(name)
        except WorkspaceError as exc:
            return [str(exc)]
        if info.discarded:
            return [f"{name} is a dropped trial (its files were discarded)"]
        problems = [] if (vdir / "config.json").is_file() else [f"{vdir / 'config.json'} is missing"]
        idir = self.version_dir(info.index_version)
        if not (idir / "manifest.json").is_file():
            return [*problems, f"{name} searches index {info.index_version}, which is gone"]
        for fname in ("docs.sqlite", "vectors.npy"):
            if not (idir / fname).is_file():
                problems.append(f"{idir / fname} is missing")
        backend = (self.read_version(info.index_version).model.get("_backend") if info.index_version != name else info.model.get("_backend")) or "faiss"
        if backend == "faiss" and not (idir / "index.faiss").is_file():
            problems.append(f"{idir / 'index.faiss'} is missing")
        for key in MODEL_FILE_KEYS:
            rel = info.model.get(key)
            if rel and not (self.root / rel).exists() and not Path(rel).is_absolute():
                problems.append(f"{self.root / rel} ({key}) is missing")
        return problems

    def update_manifest(self, name: str, **changes: Any) -> VersionInfo:
        """Rewrite one version's manifest with ``changes`` (atomically)."""
        info = VersionInfo.from_dict({**self.read_version(name).to_dict(), **changes})
        self.write_manifest(self.version_dir(name), info)
        return info

    def discard_files(self, name: str) -> None:
        """Delete a version's index and model files, keeping its record (for a dropped trial).

        Nothing is deleted while another kept version still uses the files (its model spec points
        into this version's folder, or it searches this version's index).
        """
        with contextlib.suppress(WorkspaceError):
            if self.current_version() == name:
                logger.error("refusing to discard the files of %s: it is the serving version", name)
                return
        users = [
            v.name
            for v in self.list_versions()
            if v.name != name and not v.discarded and (v.index_version == name or any(str(x or "").startswith(f"versions/{name}/") for x in v.model.values()))
        ]
        if users:
            logger.warning("version %s was dropped, but %s still use(s) its files: they are kept", name, ", ".join(users))
            return
        vdir = self.version_dir(name)
        for p in vdir.iterdir() if vdir.is_dir() else ():
            if p.name not in _KEEP_WHEN_DISCARDED:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def write_version(
        self,
        config: RagtuneConfig,
        spec: ModelSpec,
        *,
        kind: str,
        parent: str | None,
        docs: Sequence[Document] | Path | None = None,
        vectors: np.ndarray | Path | None = None,
        index_version: str | None = None,
        note: str = "",
        metrics: dict[str, Any] | None = None,
        feedback: dict[str, Any] | None = None,
        trial: dict[str, Any] | None = None,
        decision: dict[str, Any] | None = None,
        write_files: Callable[[Path, str], ModelSpec] | None = None,
        make_current: bool = True,
        stage: str | None = None,
    ) -> str:
        """Write a complete version into staging and rename it into place; make it current unless told not to.

        Call under :meth:`lock`. A version with ``docs`` and ``vectors`` owns an index (doc store,
        vectors, vector store); one without searches ``index_version``'s. ``docs`` and ``vectors`` may
        be paths from :meth:`save_docs` and :meth:`save_vectors`: the files are moved into the version
        (or removed, on failure) and the vector store is built from the vectors a block at a time, so
        that the caller need hold neither while it is built.
        ``write_files(staging_dir, version_dir_rel)`` may save model files into the staging directory and returns the spec that
        points at their final place. With ``make_current`` off (a trial) nothing else changes.
        ``decision`` is stored in the manifest (see :attr:`VersionInfo.decision`); the caller logs it
        after the swap. ``stage`` names the :func:`ragtune.faults.checkpoint` reached once the
        version is in place and before ``CURRENT`` moves.
        """
        try:
            return self._write_version(
                config, spec, kind=kind, parent=parent, docs=docs, vectors=vectors, index_version=index_version, note=note, metrics=metrics,
                feedback=feedback, trial=trial, decision=decision, write_files=write_files, make_current=make_current, stage=stage,
            )  # fmt: skip
        finally:
            for saved in (docs, vectors):
                if isinstance(saved, Path):
                    saved.unlink(missing_ok=True)  # moved into the version, or not needed any more

    def _write_version(
        self, config: RagtuneConfig, spec: ModelSpec, *, kind: str, parent: str | None, docs: Sequence[Document] | Path | None, vectors: np.ndarray | Path | None,
        index_version: str | None, note: str, metrics: dict[str, Any] | None, feedback: dict[str, Any] | None, trial: dict[str, Any] | None,
        decision: dict[str, Any] | None, write_files: Callable[[Path, str], ModelSpec] | None, make_current: bool, stage: str | None,
    ) -> str:  # fmt: skip
        import numpy as np

        from ragtune.docstore import DocStore
        from ragtune.faults import checkpoint
        from ragtune.index import create_store
        from ragtune.indexing import config_with_model

        with self.stage_version() as (staging, name):
            if write_files is not None:
                spec = write_files(staging, f"versions/{name}")
            model = spec.to_dict()
            n_docs = 0
            if docs is not None and vectors is not None:
                if isinstance(docs, Path):
                    os.replace(docs, staging / "docs.sqlite")
                    store = DocStore(staging)
                    n_docs = len(store)
                    store.close()
                else:
                    DocStore.write(staging, docs)
                    n_docs = len(docs)
                if isinstance(vectors, Path):
                    os.replace(vectors, staging / "vectors.npy")
                    matrix = np.load(staging / "vectors.npy", mmap_mode="r")
                else:
                    np.save(staging / "vectors.npy", vectors)
                    matrix = vectors
                create_store(staging, matrix, config.index, name=store_name(self, name))
                del matrix
                model["_backend"] = config.index.backend
                index_version = name
            if not index_version:
                raise WorkspaceError("a version needs its own index or an index_version to search")
            info = VersionInfo(
                name=name, kind=kind, index_version=index_version, model=model, parent=parent,
                n_docs=n_docs, metrics=metrics or {}, feedback=feedback or {}, note=note, trial=trial or {},
                decision=decision or {},
            )  # fmt: skip
            config_with_model(config, spec).save(staging / "config.json")  # the model this version was made with
            self.write_manifest(staging, info)
        if stage:
            checkpoint(stage)
        if make_current:
            self.set_current(name)
            self.prune_versions(config)
        return name

    def prune_versions(self, config: RagtuneConfig) -> list[str]:
        """:meth:`prune` to ``index.keep_versions``, releasing pruned versions' server-side collections."""
        from ragtune.index import open_store

        before = {v.name: v for v in self.list_versions()}
        removed = self.prune(config.index.keep_versions)
        for old in removed:
            info = before.get(old)
            backend = info.model.get("_backend") if info is not None else None
            if info is not None and info.index_version == old and backend not in (None, "faiss"):
                try:
                    open_store(self.version_dir(old), config.index, name=store_name(self, old), backend=backend).drop()
                except Exception as exc:  # best effort: the version's files are already gone
                    logger.warning("could not drop the vector store of pruned version %s: %s", old, exc)
        if removed:
            logger.info("pruned versions %s", ", ".join(removed))
        return removed

    def rollback(self, version: str | None = None) -> str:
        """Make ``version`` (default: the current one's parent) current, instantly. Call under :meth:`lock`.

        Naming a version works even when ``CURRENT`` is corrupt (it is then rewritten).
        """
        if version is None:
            cur = self.current_version()
            if cur is None:
                raise WorkspaceError("nothing to roll back: no version is current")
            parent = self.read_version(cur).parent
            if parent is None or not (self.version_dir(parent) / "manifest.json").is_file():
                raise WorkspaceError(f"version {cur} has no earlier version on disk to roll back to; name one (see `ragtune versions`)")
            version = parent
        info = self.read_version(version)
        if info.discarded:
            raise WorkspaceError(f"version {version} is a dropped trial whose files were discarded; name another (see `ragtune versions`)")
        if info.trial.get("state") in ("staged", "live"):
            raise WorkspaceError(f"version {version} is a trial that never served; `ragtune trial decide` (or `trial stop`) settles it")
        if not (self.version_dir(info.index_version) / "manifest.json").is_file():
            raise WorkspaceError(f"version {version} searches index {info.index_version}, which was pruned")
        problems = self.version_problems(version)
        if problems:
            raise WorkspaceError(f"version {version} cannot serve: {'; '.join(problems)}; `ragtune doctor --repair` may rebuild it, or name another")
        self.set_current(version)
        return version

    # -- the trial pointer and the decision log ---------------------------------------------------
    def read_trial(self) -> dict[str, Any] | None:
        """The live trial's record (``TRIAL``), or ``None`` when no trial is live."""
        try:
            data = json.loads(self.trial_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkspaceError(f"{self.trial_path} is corrupt ({exc}); `ragtune trial stop` removes it") from exc
        except OSError as exc:
            raise WorkspaceError(f"{self.trial_path} cannot be read ({exc.strerror or exc}); check its permissions") from exc
        # a hand edit or another program's file: searches must not trip over it, so its shape is checked here
        problem = None
        if not isinstance(data, dict):
            problem = f"a JSON object expected, got {type(data).__name__}"
        else:
            missing = [k for k in ("id", "version", "baseline", "tier") if not isinstance(data.get(k), str) or not data.get(k)]
            share = data.get("share")
            if missing:
                problem = f"no {', '.join(missing)}"
            elif isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
                problem = f"share must be a number in (0, 1], got {share!r}"
            elif not all(isinstance(data.get(k, {}), dict) for k in ("check", "test")):
                problem = "check and test must be objects"
        if problem is not None:
            raise WorkspaceError(f"{self.trial_path} is corrupt ({problem}); `ragtune trial stop` removes it")
        return data

    def trial_token(self) -> tuple[int, int]:
        """A cheap token that changes whenever ``TRIAL`` is written or removed."""
        try:
            st = os.stat(self.trial_path)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def write_trial(self, record: dict[str, Any]) -> None:
        """Make ``record`` the live trial (atomically)."""
        write_json_atomic(self.trial_path, record)

    def clear_trial(self) -> None:
        """End the live trial: searches stop interleaving on their next call."""
        self.trial_path.unlink(missing_ok=True)

    def append_log(self, entry: dict[str, Any]) -> None:
        """Append one decision or state change to ``refresh-log.jsonl`` (with a ``time`` stamp)."""
        line = json.dumps({"time": time.time(), **entry}, sort_keys=True, default=str)
        with open(self.decisions_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self) -> list[dict[str, Any]]:
        """Every entry of ``refresh-log.jsonl``, oldest first.

        A torn last line is skipped; so is a line that is JSON but not an object (an entry is one:
        someone else wrote it), with a warning the first time this workspace object meets one.
        """
        if not self.decisions_path.is_file():
            return []
        out = []
        strays = 0
        for line in self.decisions_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
                else:
                    strays += 1
        if strays and not self._warned_log_lines:
            self._warned_log_lines = True
            logger.warning("%s: skipped %d line(s) that are not JSON objects (each entry is one); they are ignored", self.decisions_path, strays)
        return out

    def last_good_version(self) -> str | None:
        """The version to serve when ``CURRENT`` is unreadable: the one the log last made current, if complete.

        Else the newest complete version that served; ``None`` when there is none. A rollback is
        respected: the log's last pointer change wins over a newer version.
        """
        for entry in reversed(self.read_log()):
            name = entry.get("version")
            if entry.get("event") in POINTER_EVENTS and name and not entry.get("abandoned"):
                if (self.version_dir(str(name)) / "manifest.json").is_file() and not self.version_problems(str(name)):
                    return str(name)
                break
        served = self.served_versions()
        good = [v.name for v in self.list_versions() if v.name in served and not self.version_problems(v.name)]
        return good[-1] if good else None

    def stand_ins(self, name: str | None) -> list[str]:
        """Versions to serve, in order of preference, while version ``name`` cannot be opened.

        Its ancestors that served, nearest first (after a rollback, the version rolled back from is
        not what the operator wanted; for a version that is gone, or ``None`` for an unreadable
        ``CURRENT``, :meth:`last_good_version`), then every other version that served, newest first.
        """
        served = self.served_versions()
        by_name = {v.name: v for v in self.list_versions()}
        chain: list[str] = []
        if name not in by_name:  # a version that is gone: the one the log last made current first
            good = self.last_good_version()
            chain += [good] if good is not None else []
        parent = by_name[name].parent if name in by_name else None
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = by_name[parent].parent if parent in by_name else None
        rest = [v for v in reversed(by_name) if v not in chain]
        return [v for v in [*chain, *rest] if v != name and v in served and v in by_name]

    def served_versions(self) -> set[str]:
        """Versions that have served: the current one, and every one the log shows made current.

        A version made before decision records existed (no ``decision`` in its manifest) counts as
        served unless it is a trial that never was promoted.
        """
        log = self.read_log()
        out = {e["version"] for e in log if e.get("event") in POINTER_EVENTS and e.get("version") and not e.get("abandoned")}
        with contextlib.suppress(WorkspaceError):
            cur = self.current_version()
            if cur:
                out.add(cur)
        for v in self.list_versions():
            if not v.decision and v.trial.get("state") not in ("staged", "live", "dropped"):
                out.add(v.name)
        return out

    # -- the refresh lock -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str = "refresh") -> Iterator[None]:
        """Hold the workspace's exclusive write lock (refresh, index). Fails at once if taken."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fh = open(self.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        except OSError as exc:
            raise WorkspaceError(f"cannot write to workspace {self.root} ({exc.strerror}: {self.lock_path}); check its permissions and free space") from None
        held = False
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RefreshLockedError(
                    f"workspace {self.root} is locked by {holder}; wait for it to finish "
                    "(a killed holder releases the lock automatically)"
                ) from None
            held = True
            fh.seek(0)
            fh.truncate()
            fh.write(f"{what} (pid {os.getpid()}, since {_now()})")
            fh.flush()
            self.clean_stale()
            yield
        finally:
            if held:  # a contender that lost leaves the holder's name in place
                with contextlib.suppress(OSError):
                    fh.truncate(0)
            fh.close()

    def lock_holder(self) -> str | None:
        """Who holds the write lock now (``None`` when nobody does), read from the lock file without taking the lock.

        The holder writes its name and pid there; a pid that no longer runs is a killed holder (the
        kernel released its lock), so the text left behind is stale.
        """
        held = self._live_holder()
        return None if held is None else held[0]

    def lock_holder_pid(self) -> int | None:
        """The pid of the live process holding the write lock (see :meth:`lock_holder`), or ``None``."""
        held = self._live_holder()
        return None if held is None else held[1]

    def _live_holder(self) -> tuple[str, int] | None:
        import re

        try:
            text = self.lock_path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        found = re.search(r"pid (\d+)", text)
        if not found:
            return None
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # another user's live process
            pass
        return text, pid


def store_name(ws: Workspace, version: str) -> str:
    """The vector-store name of a version (a Chroma collection is named after workspace and version)."""
    import hashlib

    return f"ragtune-{hashlib.sha1(str(ws.root).encode()).hexdigest()[:10]}-{version}"
