"""The on-disk layout of a workspace, its current-version pointer and the refresh lock.

Layout::

    WORKSPACE/
      config.json          the RagtuneConfig
      CURRENT              {"version": "v0003"}: replaced atomically (os.replace)
      feedback.sqlite      the feedback log (WAL)
      refresh.lock         flock'ed by the one running refresh
      versions/v0001/      one model/index version
        manifest.json      what it is: model spec, index it uses, metrics, feedback counts, dates
        config.json        the config it was made with
        docs.sqlite        doc store (only for versions that own an index)
        vectors.npy        document vectors, row i = doc at position i
        index.faiss        the faiss index (or a chroma collection named after the version)
        model/             LoRA adapter (safetensors + adapter_config.json) or full model
        query_map.safetensors   the query-side tier (linear map)
        query_memory.safetensors  the query-side tier (click memory)

A version is written under ``versions/.tmp-*`` and renamed into place complete; only then does
``CURRENT`` move. A process killed at any point leaves the serving version intact.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.config import RagtuneConfig
from ragtune.errors import RefreshLockedError, WorkspaceError

__all__ = ["VersionInfo", "Workspace", "default_workspace_path"]

logger = logging.getLogger(__name__)

ENV_VAR = "RAGTUNE_WORKSPACE"


def default_workspace_path() -> Path:
    """``$RAGTUNE_WORKSPACE`` or ``./.ragtune``."""
    return Path(os.environ.get(ENV_VAR, ".ragtune"))


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
        if ws.root.exists() and not ws.root.is_dir():
            raise WorkspaceError(f"cannot create a workspace at {ws.root}: it is a file")
        ws.versions_dir.mkdir(parents=True, exist_ok=True)
        (config or RagtuneConfig()).save(ws.config_path)
        logger.info("created workspace %s", ws.root)
        return ws

    @classmethod
    def open(cls, root: str | Path) -> Workspace:
        """Open an existing workspace, with a clear error if there is none."""
        ws = cls(root)
        if not ws.exists():
            raise WorkspaceError(
                f"no ragtune workspace at {ws.root} (no config.json); run `ragtune init {root}` first "
                f"or pass --workspace / set {ENV_VAR}"
            )
        return ws

    def load_config(self) -> RagtuneConfig:
        return RagtuneConfig.load(self.config_path)

    # -- versions ---------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        """The name of the serving version, or ``None`` when nothing was indexed yet."""
        try:
            data = json.loads(self.current_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:  # pragma: no cover - CURRENT is written atomically
            raise WorkspaceError(f"{self.current_path} is corrupt: {exc}") from exc
        name = data.get("version")
        return str(name) if name else None

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
                out.append(VersionInfo.from_dict(json.loads(mf.read_text(encoding="utf-8"))))
        return out

    def read_version(self, name: str) -> VersionInfo:
        mf = self.version_dir(name) / "manifest.json"
        if not mf.is_file():
            raise WorkspaceError(f"version {name!r} does not exist in {self.root}; see `ragtune versions`")
        return VersionInfo.from_dict(json.loads(mf.read_text(encoding="utf-8")))

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

    def clean_stale(self) -> None:
        """Remove staging directories left behind by killed processes (call under the lock)."""
        if self.versions_dir.is_dir():
            for d in self.versions_dir.iterdir():
                if d.name.startswith(".tmp-"):
                    shutil.rmtree(d, ignore_errors=True)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond ``keep``; never the current one or one it depends on."""
        versions = self.list_versions()
        current = self.current_version()
        protected = {current}
        by_name = {v.name: v for v in versions}
        # keep the newest `keep` versions and every index version they search
        kept = [v.name for v in versions[-keep:]]
        for name in [*kept, current]:
            if name in by_name:
                protected.add(name)
                protected.add(by_name[name].index_version)
                for key in ("adapter", "query_map", "query_memory"):  # model files may live in an earlier version's dir
                    parts = Path(by_name[name].model.get(key) or "").parts
                    if len(parts) > 1 and parts[0] == "versions":
                        protected.add(parts[1])
        removed: list[str] = []
        for v in versions:
            if v.name not in protected:
                shutil.rmtree(self.version_dir(v.name), ignore_errors=True)
                removed.append(v.name)
        return removed

    # -- the refresh lock -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str = "refresh") -> Iterator[None]:
        """Hold the workspace's exclusive write lock (refresh, index). Fails at once if taken."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
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
            fh.seek(0)
            fh.truncate()
            fh.write(f"{what} (pid {os.getpid()}, since {_now()})")
            fh.flush()
            self.clean_stale()
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.truncate(0)
            fh.close()
