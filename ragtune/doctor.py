"""``ragtune doctor``: check a workspace, and with ``repair`` fix what can be fixed safely.

What is checked, in order:

* ``config``: ``config.json`` loads and validates;
* ``feedback``: the feedback database passes SQLite's ``quick_check``, and is not missing or empty
  while ``refresh-log.jsonl`` shows that refreshes read feedback from it before;
* ``versions``: every version's files are there and readable: the doc store opens as SQLite, the
  vectors load (memory-mapped: only the header is read) as a 2-d float matrix with one row per
  document, faiss reads the index file (memory-mapped) and it holds one vector per document, and
  the model's safetensors files have readable headers; and whether each version ever served;
* ``pointer``: ``CURRENT`` parses and names a version that can serve;
* ``stores``: the vector store of the serving version (and of a live trial) opens and holds one
  vector per document;
* ``trial``: ``TRIAL`` parses and names a version that exists;
* ``decisions``: every version's decision record is in ``refresh-log.jsonl`` (a crash between a
  swap and its log entry is replayed by :func:`ragtune.recovery.recover`);
* ``leftovers``: staging folders and refresh work left by killed processes;
* ``lock``: who holds the write lock.

``repair`` takes the workspace lock and fixes, saying what it did: a corrupt feedback database is
moved aside (``feedback.sqlite.corrupt-TIMESTAMP``) and a new one started; a damaged file is
rebuilt from the intact ones where it can be (a faiss index file from the vectors, the vectors from
a faiss index that can reconstruct them, a version's missing ``config.json`` from the workspace's
with the version's model); only a serving version that still cannot serve then moves ``CURRENT``,
to the complete version the log last made current (a rollback counts), and the finding says what
that version lacks; an unreadable ``TRIAL`` is removed; interrupted decisions are replayed;
leftovers are removed. It never deletes a version or a feedback event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtune.config import RagtuneConfig
from ragtune.errors import ConfigError, RagtuneError, WorkspaceError
from ragtune.workspace import MODEL_FILE_KEYS, Workspace, store_name

__all__ = ["DoctorReport", "Finding", "diagnose"]

logger = logging.getLogger(__name__)

Status = Literal["ok", "warning", "problem"]
#: What a finding's fix tells a user to run when only a new index brings the documents back.
REINDEX = "re-index (`ragtune index SOURCES`)"


@dataclass
class Finding:
    """One thing ``doctor`` looked at.

    Attributes:
        check: ``"config"``, ``"feedback"``, ``"versions"``, ``"pointer"``, ``"trial"``,
            ``"decisions"``, ``"leftovers"`` or ``"lock"``.
        status: ``"ok"``, ``"warning"`` (works, but worth knowing) or ``"problem"`` (something fails).
        message: What was found, with the file at fault.
        fix: What to do about it: what ``--repair`` does (or did) when ``repairable``, else what the
            user can do; empty when nothing is to be done.
        repaired: Whether this run fixed it.
        repairable: Whether ``--repair`` fixes it.
    """

    check: str
    status: Status
    message: str
    fix: str = ""
    repaired: bool = False
    repairable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        """The finding as ``ragtune doctor`` prints it: status, check, message and, for a problem left, its fix."""
        label = "fixed" if self.repaired else self.status
        plan = ""
        if self.fix and self.status == "problem" and not self.repaired:
            plan = f"  [--repair: {self.fix}]" if self.repairable else f"  [to fix: {self.fix}]"
        return f"{label:<8}{self.check:<10}{self.message}{plan}"


@dataclass
class DoctorReport:
    """Everything ``doctor`` found (and, with ``repair``, fixed).

    Attributes:
        workspace: The workspace directory.
        repair: Whether fixes were applied.
        findings: One :class:`Finding` per thing checked.
    """

    workspace: str
    repair: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No problem is left (warnings allowed)."""
        return all(f.status != "problem" or f.repaired for f in self.findings)

    def summary(self) -> str:
        """The last line ``ragtune doctor`` prints: healthy, or what is left and whether ``--repair`` fixes it."""
        if self.healthy:
            return "healthy"
        if self.repair:
            return "problems left: see above"
        left = [f for f in self.findings if f.status == "problem" and not f.repaired]
        fixable = sum(f.repairable for f in left)
        if fixable == len(left):
            return "problems found: `ragtune doctor --repair` fixes them"
        if fixable:
            return f"problems found: `ragtune doctor --repair` fixes {fixable} of {len(left)} (marked --repair); the others say what to do"
        return "problems found: `ragtune doctor --repair` cannot fix them; each says what to do"

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "repair": self.repair, "healthy": self.healthy, "findings": [f.to_dict() for f in self.findings]}


@dataclass
class _Damage:
    """One missing or unreadable file of a version.

    Attributes:
        path: The file.
        problem: What is wrong, naming the file.
        rebuild: Where ``--repair`` rebuilds it from (``"from versions/v0003/index.faiss"``); empty when it cannot.
        redo: Rebuilds it (``None`` when it cannot).
        serves: Searches still work without it (other commands need it).
    """

    path: Path
    problem: str
    rebuild: str = ""
    redo: Callable[[], None] | None = None
    serves: bool = False


def diagnose(workspace: str | Path, *, repair: bool = False) -> DoctorReport:
    """Check the workspace at ``workspace`` and, with ``repair``, fix what can be fixed safely.

    Args:
        workspace: The workspace directory.
        repair: Apply the fixes (under the workspace lock).

    Returns:
        A :class:`DoctorReport`.

    Raises:
        WorkspaceError: ``workspace`` is not a ragtune workspace.
        RefreshLockedError: with ``repair``, another command holds the workspace.
    """
    ws = Workspace.open(workspace)
    report = DoctorReport(str(ws.root), repair)
    if not repair:
        _run_checks(ws, report, repair=False)
        return report
    leftovers = _leftovers(ws)  # the lock removes them: report them first
    with ws.lock("doctor --repair"):
        if leftovers:
            report.findings.append(Finding("leftovers", "problem", f"removed work left by killed processes: {', '.join(leftovers)}", "removed", repaired=True, repairable=True))
        _run_checks(ws, report, repair=True)
    return report


def _run_checks(ws: Workspace, report: DoctorReport, *, repair: bool) -> None:
    add = report.findings.append
    loaded = _check_config(ws, add)
    config = loaded or RagtuneConfig()
    _check_feedback(ws, add, repair)
    damage, failed = _check_files(ws, loaded, add, repair)  # with repair, damaged files are rebuilt first ...
    pointer = _check_pointer(ws, damage, repair)  # ... so that CURRENT moves only off a version that still cannot serve
    _check_versions(ws, damage, failed, add)
    add(pointer)
    _check_stores(ws, config, damage, add)
    _check_trial(ws, add, repair)
    _check_decisions(ws, config, add, repair)
    if not repair:
        found = _leftovers(ws)
        holder = ws.lock_holder()
        if found and holder is None:
            add(Finding("leftovers", "problem", f"work left by killed processes: {', '.join(found)}", "removed by --repair (and by the next index or refresh)", repairable=True))
        elif found:
            add(Finding("leftovers", "ok", f"{', '.join(found)} belong(s) to the running command"))
        else:
            add(Finding("leftovers", "ok", "no leftovers"))
        stale = "" if holder or not ws.lock_path.is_file() else ws.lock_path.read_text(encoding="utf-8").strip()
        if stale:
            add(Finding("lock", "warning", f"free, but {ws.lock_path.name} still names a killed holder ({stale}): harmless, the lock died with it", "clear the text", repairable=True))
        else:
            add(Finding("lock", "ok", f"held by {holder}" if holder else "free"))


def _check_config(ws: Workspace, add: Any) -> RagtuneConfig | None:
    """Check ``config.json``; returns it, or ``None`` when it does not load."""
    try:
        config = ws.load_config()
    except RagtuneError as exc:
        # not --repair's to fix: defaults would silently drop the user's settings (the model among them)
        add(Finding("config", "problem", f"{exc}; edit it (each version keeps the config it was made with: versions/vNNNN/config.json)"))
        return None
    if config.model.device == "cuda":  # valid, but unusable on this machine: every search would fail
        from ragtune.embedder import choose_device

        try:
            choose_device("cuda")
        except RagtuneError as exc:
            add(Finding("config", "problem", str(exc), "set model.device to 'auto' or 'cpu' in config.json"))
            return config
    add(Finding("config", "ok", f"{ws.config_path} is valid"))
    return config


def _check_feedback(ws: Workspace, add: Any, repair: bool) -> None:
    from ragtune.feedback import FeedbackLog

    path = ws.feedback_path
    log = FeedbackLog(path)
    try:
        health = log.check(thorough=True)
    finally:
        log.close()
    if health.ok:
        events = 0 if health.counts is None else health.counts.get("clicks", 0) + health.counts.get("ratings", 0)
        used = _feedback_refreshes(ws) if events == 0 else 0
        if not used:
            add(Finding("feedback", "ok", health.message))
            return
        what = "missing" if health.state == "absent" else "empty (no clicks or ratings)"
        aside = sorted(p.name for p in ws.root.glob(f"{path.name}.corrupt-*"))
        if aside:  # moved aside by --repair: the events are in that file, as the repair said
            add(Finding("feedback", "warning", f"{path.name} is {what}: the events {_plural(used, 'refresh', 'refreshes')} read are in {aside[-1]} (moved aside as damaged); a new log has started"))
            return
        add(Finding(
            "feedback", "problem",
            f"{path.name} is {what} but {_plural(used, 'refresh', 'refreshes')} read feedback from it before (refresh-log.jsonl): "
            "those events are lost unless it is restored from a backup (a new one is started otherwise)",
            f"restore it from a backup (copy it to {path} while no command runs); --repair cannot bring the events back",
        ))  # fmt: skip
        return
    if health.state != "corrupt":  # unwritable, disk full, locked: nothing to move aside; say what to do
        add(Finding("feedback", "problem", health.message, health.fix))
        return
    fix = f"move it aside as {path.name}.corrupt-TIMESTAMP and start a new log (its events stay in that file)"
    if not repair:
        add(Finding("feedback", "problem", health.message, fix, repairable=True))
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while moved.exists():  # two repairs in one second keep both files
        n += 1
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{moved}{suffix}"))
    add(Finding("feedback", "problem", f"{health.message}; moved to {moved.name}, a new log starts on the next event", fix, repaired=True, repairable=True))


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _feedback_refreshes(ws: Workspace) -> int:
    """How many refreshes read clicks or ratings: their feedback watermark (``mark``) in ``refresh-log.jsonl`` or a manifest's decision record is past zero."""
    seen: set[object] = set()
    for i, entry in enumerate([*ws.read_log(), *(v.decision for v in ws.list_versions())]):
        mark = entry.get("mark")
        events = mark.get("events") if isinstance(mark, dict) else None
        if isinstance(events, list) and any(isinstance(e, int) and e > 0 for e in events):
            seen.add(entry.get("decision") or i)  # a decision is both logged and in its manifest: once
    return len(seen)


def _check_files(ws: Workspace, config: RagtuneConfig | None, add: Any, repair: bool) -> tuple[dict[str, list[_Damage]], dict[Path, str]]:
    """Inspect every version's files and, with ``repair``, rebuild the damaged ones that can be.

    Returns each version's damage left (dropped trials are left out) and the rebuilds that failed
    (file: why). ``config`` is ``None`` when the workspace's does not load.
    """
    if not ws.versions_dir.is_dir():
        return {}, {}
    names = _version_names(ws)
    damage = _inspect(ws, names, config)
    failed: dict[Path, str] = {}
    if not repair:
        return damage, failed
    for found, users in _by_file(damage).values():
        if found.redo is None:
            continue
        try:
            found.redo()
        except Exception as exc:  # a file the checks passed may still fail to read in full
            failed[found.path] = _reason(exc)
            logger.debug("could not rebuild %s %s", found.path, found.rebuild, exc_info=True)  # the finding says why
            continue
        logger.info("rebuilt %s %s", found.path, found.rebuild)
        add(Finding("versions", "problem", f"{_users(users)}: {found.problem}; rebuilt it {found.rebuild}", f"rebuild it {found.rebuild}", repaired=True, repairable=True))
    return _inspect(ws, names, config), failed


def _check_versions(ws: Workspace, damage: dict[str, list[_Damage]], failed: dict[Path, str], add: Any) -> None:
    """Report each damaged file left once, and the versions that are complete (or never served).

    Damage in the serving version or the live trial's is a problem; in another version, a warning
    (it serves nothing, but must not be rolled back to).
    """
    if not ws.versions_dir.is_dir():
        add(Finding("versions", "ok", "nothing indexed yet"))
        return
    current, live = _pointers(ws)
    good = _fallback(ws, damage, current)
    for found, users in _by_file(damage).values():
        message = f"{_users(users)}: {found.problem}"
        if found.redo is not None and found.path not in failed:
            fix, repairable = f"rebuild it {found.rebuild}", True
        else:
            message += f"; rebuilding it {found.rebuild} failed: {failed[found.path]}" if found.path in failed else ""
            fix, repairable = _manual_fix(users, current, live, good), False
        if current in users or live in users:
            add(Finding("versions", "problem", message, fix, repairable=repairable))
        else:  # serves nothing now: worth knowing before a rollback to it
            add(Finding("versions", "warning", f"{message} ({'--repair: ' if repairable else ''}{fix})", fix, repairable=repairable))
    served = ws.served_versions()
    if live:
        served.add(live)  # the live trial's version: in use, as it should be
    for name, found_in in damage.items():
        if not found_in and name not in served:
            add(Finding("versions", "warning", f"{name} is complete but never served (a staged trial candidate, or a command killed before its swap)", "`ragtune rollback` refuses it; pruning removes it in time"))
    complete = sum(not found_in for found_in in damage.values())
    add(Finding("versions", "ok", f"{complete} complete version(s) of {len(_version_names(ws))}"))


def _version_names(ws: Workspace) -> list[str]:
    return sorted(d.name for d in ws.versions_dir.iterdir() if d.is_dir() and d.name.startswith("v") and d.name[1:].isdigit())


def _pointers(ws: Workspace) -> tuple[str | None, str | None]:
    """``(CURRENT's version, the live trial's version)``, each ``None`` when unset or unreadable (the pointer and trial checks report that)."""
    current = live = None
    with contextlib.suppress(WorkspaceError):
        current = ws.current_version()
    with contextlib.suppress(WorkspaceError):
        live = (ws.read_trial() or {}).get("version")
    return current, live


def _users(users: list[str]) -> str:
    return f"version {users[0]}" if len(users) == 1 else f"versions {', '.join(users)}"


def _manual_fix(users: list[str], current: str | None, live: str | None, good: str | None) -> str:
    """What to do about a damaged file ``--repair`` cannot rebuild, used by the versions ``users``."""
    if current in users:
        return f"`ragtune rollback {good}` (the last good version), or {REINDEX}" if good else REINDEX
    if live in users:
        return "`ragtune trial stop` ends the trial of it"
    return f"serves nothing now: do not roll back to {'it' if len(users) == 1 else 'them'}; pruning removes {'it' if len(users) == 1 else 'them'} in time"


def _by_file(damage: dict[str, list[_Damage]]) -> dict[Path, tuple[_Damage, list[str]]]:
    """Each damaged file once, with the versions it breaks (a shared index breaks every version that searches it)."""
    out: dict[Path, tuple[_Damage, list[str]]] = {}
    for name, found_in in damage.items():
        for found in found_in:
            out.setdefault(found.path, (found, []))[1].append(name)
    return out


def _inspect(ws: Workspace, names: list[str], config: RagtuneConfig | None) -> dict[str, list[_Damage]]:
    """The damaged files of each version in ``names`` but dropped trials (each index checked once)."""
    indexes: dict[str, list[_Damage]] = {}
    out: dict[str, list[_Damage]] = {}
    for name in names:
        vdir = ws.version_dir(name)
        try:
            info = ws.read_version(name)
        except WorkspaceError as exc:
            out[name] = [_Damage(vdir / "manifest.json", str(exc))]
            continue
        if info.discarded:
            continue  # a dropped trial's record, as it should be
        found: list[_Damage] = []
        if not (vdir / "config.json").is_file():
            found.append(_config_damage(ws, name, info.model, config))
        iv = info.index_version
        if not (ws.version_dir(iv) / "manifest.json").is_file():
            found.append(_Damage(ws.version_dir(iv), f"{name} searches index {iv}, which is gone"))
        else:
            if iv not in indexes:
                try:
                    owner = info.model if iv == name else ws.read_version(iv).model
                    indexes[iv] = _index_damage(ws, iv, owner.get("_backend") or "faiss", config)
                except WorkspaceError as exc:  # the index version's manifest: searching it needs its backend
                    indexes[iv] = [_Damage(ws.version_dir(iv) / "manifest.json", str(exc))]
            found += indexes[iv]
        found += _model_damage(ws, info.model)
        out[name] = found
    return out


def _rel(ws: Workspace, path: Path) -> str:
    return str(path.relative_to(ws.root)) if path.is_relative_to(ws.root) else str(path)


def _reason(exc: BaseException) -> str:
    """A one-line reason from a library's error (faiss's name the C++ function and source line first)."""
    text = (str(exc).strip().splitlines() or [""])[-1]
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _probe(ws: Workspace, path: Path, read: Callable[[Path], Any], out: list[_Damage]) -> Any:
    """``read(path)``; ``None`` when the file is missing or unreadable, with a :class:`_Damage` added to ``out``."""
    if not path.is_file():
        out.append(_Damage(path, f"{_rel(ws, path)} is missing"))
        return None
    try:
        return read(path)
    except Exception as exc:  # SQLite, numpy, faiss and safetensors raise their own errors
        out.append(_Damage(path, f"{_rel(ws, path)} cannot be read ({_reason(exc)})"))
        return None


def _doc_count(path: Path) -> int:
    """Documents in a doc store: opened read-only, the highest position + 1 (positions are 0..n-1: no table scan)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        top = conn.execute("SELECT MAX(pos) FROM docs").fetchone()[0]
    finally:
        conn.close()
    return 0 if top is None else int(top) + 1


def _vector_shape(path: Path) -> tuple[int, ...]:
    """The shape of a ``.npy`` matrix of floats, memory-mapped (only its header is read)."""
    import numpy as np

    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ValueError("not a NumPy .npy file")
    matrix = np.load(path, mmap_mode="r")
    if matrix.ndim != 2 or matrix.dtype.kind != "f":
        raise ValueError(f"a 2-d float matrix expected, got shape {matrix.shape} of {matrix.dtype}")
    return tuple(matrix.shape)


def _read_faiss(path: Path) -> Any:
    """Read a faiss index file memory-mapped where this faiss can (the vectors stay on disk)."""
    import faiss

    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", None) or getattr(faiss, "IO_FLAG_MMAP", 0)
    return faiss.read_index(str(path), (flag | getattr(faiss, "IO_FLAG_READ_ONLY", 0)) if flag else 0)


def _faiss_shape(path: Path) -> tuple[int, int, bool]:
    """``(vectors, dimension, whether the index can give its vectors back)`` of a faiss index file."""
    import faiss

    index = _read_faiss(path)
    # flat and HNSW-flat indexes hold the vectors as added; an IVF index does once it has a direct map
    whole = faiss.try_extract_index_ivf(index) is not None or type(index).__name__ in ("IndexFlatIP", "IndexFlatL2", "IndexFlat", "IndexHNSWFlat")
    return int(index.ntotal), int(index.d), whole


def _index_damage(ws: Workspace, iv: str, backend: str, config: RagtuneConfig | None) -> list[_Damage]:
    """The damaged files of index version ``iv``: doc store, vectors and (faiss) index file, and what rebuilds each."""
    idir = ws.version_dir(iv)
    found: list[_Damage] = []
    n_docs = _probe(ws, idir / "docs.sqlite", _doc_count, found)
    shape = _probe(ws, idir / "vectors.npy", _vector_shape, found)
    vectors_bad = shape is None
    if shape is not None and n_docs is not None and shape[0] != n_docs:
        found.append(_Damage(idir / "vectors.npy", f"{_rel(ws, idir / 'vectors.npy')} holds {shape[0]} vectors for {n_docs} documents"))
        vectors_bad = True
    if backend != "faiss":
        for d in found:
            d.serves = d.path.name == "vectors.npy"  # the server-side store holds its own copy
        return found
    index = _probe(ws, idir / "index.faiss", _faiss_shape, found)
    index_bad, ambiguous = index is None, False
    if index is not None:
        want = shape[0] if shape is not None and not vectors_bad else n_docs
        if want is not None and index[0] != want:
            found.append(_Damage(idir / "index.faiss", f"{_rel(ws, idir / 'index.faiss')} holds {index[0]} vectors for {want} documents"))
            index_bad = True
        elif shape is not None and not vectors_bad and index[1] != shape[1]:  # which of the two is wrong cannot be told: no rebuild
            found.append(_Damage(idir / "index.faiss", f"{_rel(ws, idir / 'index.faiss')} holds {index[1]}-d vectors, vectors.npy {shape[1]}-d"))
            index_bad = ambiguous = True
    for d in found:
        if d.path.name == "vectors.npy" and not index_bad and index is not None:
            d.serves = True  # searches use the index file
            if index[2]:
                d.rebuild, d.redo = f"from {_rel(ws, idir / 'index.faiss')}", lambda: _rebuild_vectors(idir)
        elif d.path.name == "index.faiss" and not vectors_bad and n_docs is not None and not ambiguous:
            d.rebuild, d.redo = f"from {_rel(ws, idir / 'vectors.npy')}", lambda: _rebuild_index_file(ws, config or RagtuneConfig(), iv)
    return found


def _model_damage(ws: Workspace, model: dict[str, Any]) -> list[_Damage]:
    """The missing or unreadable files of a model spec: the query tier's and an adapter's safetensors (headers only)."""
    from safetensors import safe_open

    def header(path: Path) -> None:
        with safe_open(str(path), framework="numpy"):
            pass

    found: list[_Damage] = []
    for key in MODEL_FILE_KEYS:
        rel = model.get(key)
        if not rel:
            continue
        path = Path(rel) if Path(rel).is_absolute() else ws.root / rel
        if not path.exists():
            if not Path(rel).is_absolute():  # as Workspace.version_problems: a path outside the workspace is the user's
                found.append(_Damage(path, f"{_rel(ws, path)} ({key}) is missing"))
            continue
        files = sorted(path.rglob("*.safetensors")) if path.is_dir() else [path] if path.suffix == ".safetensors" else []
        for file in files:
            _probe(ws, file, header, found)
    return found


def _config_damage(ws: Workspace, name: str, model: dict[str, Any], config: RagtuneConfig | None) -> _Damage:
    """A version's missing ``config.json``: rewritten from the workspace's with the version's model (when that loads)."""
    path = ws.version_dir(name) / "config.json"
    found = _Damage(path, f"{_rel(ws, path)} is missing", serves=True)  # a record of what the version was made with
    if config is not None:
        from ragtune.embedder import ModelSpec
        from ragtune.indexing import config_with_model

        found.rebuild = f"from {ws.config_path.name} with {name}'s model"
        found.redo = lambda: config_with_model(config, ModelSpec.from_dict(model)).save(path)
    return found


def _rebuild_vectors(idir: Path) -> None:
    """Rewrite ``vectors.npy`` of an index version from its faiss index, a block of rows at a time (atomically)."""
    import faiss
    import numpy as np

    from ragtune.index.base import BLOCK_ROWS

    index = _read_faiss(idir / "index.faiss")
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # an IVF index finds a vector by id only through one
    tmp = idir.parent / f".tmp-rebuild-{idir.name}-vectors.npy"  # versions/.tmp-*: a killed repair's leftover is cleaned like any other
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(index.ntotal, index.d))
        for start in range(0, index.ntotal, BLOCK_ROWS):
            rows = min(BLOCK_ROWS, index.ntotal - start)
            out[start : start + rows] = index.reconstruct_n(start, rows)
        out.flush()
        del out
        os.replace(tmp, idir / "vectors.npy")
    finally:
        tmp.unlink(missing_ok=True)


def _rebuild_index_file(ws: Workspace, config: RagtuneConfig, iv: str) -> None:
    """Rebuild index version ``iv``'s faiss index file from its vectors, with the index settings it was made with."""
    import numpy as np

    from ragtune.index import create_store

    idir = ws.version_dir(iv)
    vectors = np.load(idir / "vectors.npy", mmap_mode="r")
    tmp = idir.parent / f".tmp-rebuild-{iv}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        index_config = config.index
        with contextlib.suppress(ConfigError):  # the settings the index was built with, where they are on record
            index_config = RagtuneConfig.load(idir / "config.json").index
        create_store(tmp, np.asarray(vectors, dtype=np.float32), index_config, name=store_name(ws, iv))
        os.replace(tmp / "index.faiss", idir / "index.faiss")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _blocking(damage: list[_Damage]) -> list[_Damage]:
    """The damage that stops a version from answering searches."""
    return [d for d in damage if not d.serves]


def _fallback(ws: Workspace, damage: dict[str, list[_Damage]], current: str | None) -> str | None:
    """The version to serve instead of ``current``: the first of :meth:`Workspace.stand_ins` whose files are all readable."""

    def good(name: str) -> bool:
        return name != current and name in damage and not _blocking(damage[name])

    return next((name for name in ws.stand_ins(current) if good(name)), None)


def _describe(ws: Workspace, name: str) -> str:
    """What a version serves, to say what moving ``CURRENT`` loses: ``"70 docs and a query tier"``."""
    try:
        info = ws.read_version(name)
    except WorkspaceError:
        return "an unreadable manifest"
    try:
        parts = [f"{ws.read_version(info.index_version).n_docs} docs"]
    except WorkspaceError:
        parts = [f"the docs of {info.index_version} (its manifest is unreadable)"]
    if info.model.get("adapter"):
        parts.append(f"a fine-tuned ({info.model.get('adapter_kind')}) model")
    if info.model.get("query_map") or info.model.get("query_memory"):
        parts.append("a query tier")
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


def _check_pointer(ws: Workspace, damage: dict[str, list[_Damage]], repair: bool) -> Finding:
    """Check that ``CURRENT`` names a version that can serve; with ``repair``, move it off one that still cannot (after the file repairs)."""
    blocking: list[_Damage] = []
    try:
        cur = ws.current_version()
        if cur is not None and cur in damage:
            blocking = _blocking(damage[cur])
            problem = "; ".join(d.problem for d in blocking) or None
        else:  # gone, or a dropped trial
            problem = None if cur is None else "; ".join(ws.version_problems(cur)) or None
    except WorkspaceError as exc:
        cur, problem = None, str(exc)
    if cur is None and problem is None:
        if not any(v for v in ws.list_versions() if not v.discarded):
            return Finding("pointer", "ok", "nothing indexed yet")
        problem = f"{ws.current_path} is missing but versions exist"
    if not problem:
        note = " (searches work; its damaged files are listed under versions)" if cur and damage.get(cur) else ""
        return Finding("pointer", "ok", f"CURRENT -> {cur}{note}")
    if blocking and not repair and all(d.redo is not None for d in blocking):
        return Finding("pointer", "ok", f"CURRENT -> {cur}, which cannot serve until --repair rebuilds its damaged files (see versions); it stays current")
    good = _fallback(ws, damage, cur)
    if good is None:
        return Finding("pointer", "problem", f"CURRENT is unusable: {problem}", f"no complete version to point at: {REINDEX}")
    what = _describe(ws, good) + (f"; {cur} had {_describe(ws, cur)}" if cur and cur in damage else "")
    fix = f"point CURRENT at {good} ({what}), the last good version"
    if not repair:
        return Finding("pointer", "problem", f"CURRENT -> {cur} cannot serve: {problem}" if cur else f"CURRENT is unusable: {problem}", fix, repairable=True)
    ws.set_current(good)
    ws.append_log({"event": "rolled_back", "version": good, "previous": cur, "reason": f"ragtune doctor --repair: {problem}"})
    logger.info("CURRENT now -> %s (was %s): %s", good, cur, problem)
    return Finding("pointer", "problem", f"CURRENT now -> {good} ({what}): {problem}", fix, repaired=True, repairable=True)


def _check_stores(ws: Workspace, config: RagtuneConfig, damage: dict[str, list[_Damage]], add: Any) -> None:
    """Open the vector store the serving version (and a live trial) searches, and count its vectors."""
    from ragtune.docstore import DocStore
    from ragtune.index import open_store

    for name in dict.fromkeys(n for n in _pointers(ws) if n):
        if damage.get(name) or name not in damage:
            continue  # reported under versions, pointer or trial
        info = ws.read_version(name)
        idir = ws.version_dir(info.index_version)
        backend = ws.read_version(info.index_version).model.get("_backend")
        try:
            store = open_store(idir, config.index, name=store_name(ws, info.index_version), backend=backend)
            docs = DocStore(idir)
            try:
                n_store, n_docs = len(store), len(docs)
            finally:
                docs.close()
        except RagtuneError as exc:
            add(Finding("stores", "problem", f"{name}: {exc}", "roll back to another version (`ragtune versions`), or re-index"))
            continue
        except Exception as exc:  # a damaged file: faiss and SQLite raise their own errors
            add(Finding("stores", "problem", f"{name}: the index of {info.index_version} cannot be opened ({type(exc).__name__}: {exc})", "roll back to another version, or re-index"))
            continue
        if n_store != n_docs:
            add(Finding("stores", "problem", f"{name}: its vector store holds {n_store} vectors for {n_docs} documents", "roll back to another version, or re-index"))
        else:
            add(Finding("stores", "ok", f"{name}: {backend or 'faiss'} store with {n_store} vectors"))


def _check_trial(ws: Workspace, add: Any, repair: bool) -> None:
    try:
        record = ws.read_trial()
    except WorkspaceError as exc:
        if repair:
            ws.append_log({"event": "trial_dropped", "reason": f"ragtune doctor --repair removed an unreadable trial record: {exc}"})
            ws.clear_trial()
        add(Finding("trial", "problem", str(exc), "remove it (searches stop interleaving)", repaired=repair, repairable=True))
        return
    if record is None:
        add(Finding("trial", "ok", "no trial live"))
        return
    version = record.get("version")
    if not version or not (ws.version_dir(str(version)) / "manifest.json").is_file():
        add(Finding("trial", "problem", f"TRIAL names version {version!r}, which does not exist", "the next refresh, `trial decide` or --repair drops it", repairable=True))
        return
    add(Finding("trial", "ok", f"trial {record.get('id')} live: {version} against {record.get('baseline')}"))


def _check_decisions(ws: Workspace, config: RagtuneConfig, add: Any, repair: bool) -> None:
    from ragtune.recovery import pending_decisions

    pending = [v.name for v in pending_decisions(ws)]
    trial_gone = False
    with contextlib.suppress(WorkspaceError):
        record = ws.read_trial()
        trial_gone = record is not None and not (ws.version_dir(str(record.get("version"))) / "manifest.json").is_file()
    if not pending and not trial_gone:
        add(Finding("decisions", "ok", "every version's decision is in the log"))
        return
    what = f"interrupted decisions of {', '.join(pending)}" if pending else "a trial whose version is gone"
    fix = "replay them (finish the swap or the trial start, and log them)"
    if not repair:
        add(Finding("decisions", "problem", f"{what}: not in refresh-log.jsonl yet", fix, repairable=True))
        return
    from ragtune.feedback import FeedbackLog
    from ragtune.recovery import recover
    from ragtune.trial import settle

    log = FeedbackLog(ws.feedback_path)
    try:
        done = recover(ws, log, config.trial)
        if trial_gone:
            settle(ws, log, config.trial)
            done.append("dropped the trial whose version is gone")
    finally:
        log.close()
    add(Finding("decisions", "problem", f"{what}: {'; '.join(done) or 'nothing left to do'}", fix, repaired=True, repairable=True))


def _leftovers(ws: Workspace) -> list[str]:
    found: list[str] = []
    if ws.versions_dir.is_dir():
        found += [f"versions/{d.name}" for d in ws.versions_dir.iterdir() if d.name.startswith(".tmp-")]
    if ws.work_dir.exists():
        found.append("work/")
    return found
