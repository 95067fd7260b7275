"""``ragtune doctor``: check a workspace, and with ``repair`` fix what can be fixed safely.

What is checked, in order:

* ``config``: ``config.json`` loads and validates;
* ``feedback``: the feedback database passes SQLite's ``quick_check``;
* ``versions``: every version folder is complete (manifest, config, doc store, vectors, index file,
  model files), and whether it ever served;
* ``pointer``: ``CURRENT`` parses and names a complete version;
* ``stores``: the vector store of the serving version (and of a live trial) opens and holds one
  vector per document;
* ``trial``: ``TRIAL`` parses and names a version that exists;
* ``decisions``: every version's decision record is in ``refresh-log.jsonl`` (a crash between a
  swap and its log entry is replayed by :func:`ragtune.recovery.recover`);
* ``leftovers``: staging folders and refresh work left by killed processes;
* ``lock``: who holds the write lock.

``repair`` takes the workspace lock and fixes, saying what it did: a corrupt feedback database is
moved aside (``feedback.sqlite.corrupt-TIMESTAMP``) and a new one started; a faiss index file
missing beside its vectors is rebuilt from them; ``CURRENT`` is pointed at the complete
version the log last made current (a rollback counts); an unreadable ``TRIAL`` is removed; interrupted decisions are replayed;
leftovers are removed. It never deletes a version or a feedback event.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtune.config import RagtuneConfig
from ragtune.errors import RagtuneError, WorkspaceError
from ragtune.workspace import Workspace, store_name

__all__ = ["DoctorReport", "Finding", "diagnose"]

logger = logging.getLogger(__name__)

Status = Literal["ok", "warning", "problem"]


@dataclass
class Finding:
    """One thing ``doctor`` looked at.

    Attributes:
        check: ``"config"``, ``"feedback"``, ``"versions"``, ``"pointer"``, ``"trial"``,
            ``"decisions"``, ``"leftovers"`` or ``"lock"``.
        status: ``"ok"``, ``"warning"`` (works, but worth knowing) or ``"problem"`` (something fails).
        message: What was found, with the file at fault.
        fix: What ``--repair`` does (or did) about it; empty when nothing can be done safely.
        repaired: Whether this run fixed it.
    """

    check: str
    status: Status
    message: str
    fix: str = ""
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "repair": self.repair, "healthy": self.healthy, "findings": [f.to_dict() for f in self.findings]}


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
            report.findings.append(Finding("leftovers", "problem", f"removed work left by killed processes: {', '.join(leftovers)}", "removed", repaired=True))
        _run_checks(ws, report, repair=True)
    return report


def _run_checks(ws: Workspace, report: DoctorReport, *, repair: bool) -> None:
    add = report.findings.append
    config = _check_config(ws, add)
    _check_feedback(ws, add, repair)
    _check_versions(ws, config, add, repair)
    _check_pointer(ws, add, repair)
    _check_stores(ws, config, add)
    _check_trial(ws, add, repair)
    _check_decisions(ws, config, add, repair)
    if not repair:
        found = _leftovers(ws)
        holder = ws.lock_holder()
        if found and holder is None:
            add(Finding("leftovers", "problem", f"work left by killed processes: {', '.join(found)}", "removed by --repair (and by the next index or refresh)"))
        elif found:
            add(Finding("leftovers", "ok", f"{', '.join(found)} belong(s) to the running command"))
        else:
            add(Finding("leftovers", "ok", "no leftovers"))
        stale = "" if holder or not ws.lock_path.is_file() else ws.lock_path.read_text(encoding="utf-8").strip()
        if stale:
            add(Finding("lock", "warning", f"free, but {ws.lock_path.name} still names a killed holder ({stale}): harmless, the lock died with it", "clear the text"))
        else:
            add(Finding("lock", "ok", f"held by {holder}" if holder else "free"))


def _check_config(ws: Workspace, add: Any) -> RagtuneConfig:
    try:
        config = ws.load_config()
    except RagtuneError as exc:
        # not --repair's to fix: defaults would silently drop the user's settings (the model among them)
        add(Finding("config", "problem", f"{exc}; edit it (each version keeps the config it was made with: versions/vNNNN/config.json)"))
        return RagtuneConfig()
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
        add(Finding("feedback", "ok", health.message))
        return
    if health.state != "corrupt":  # unwritable, disk full, locked: nothing to move aside; say what to do
        add(Finding("feedback", "problem", health.message, health.fix))
        return
    fix = f"move it aside as {path.name}.corrupt-TIMESTAMP and start a new log (its events stay in that file)"
    if not repair:
        add(Finding("feedback", "problem", health.message, fix))
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
    add(Finding("feedback", "problem", f"{health.message}; moved to {moved.name}, a new log starts on the next event", fix, repaired=True))


def _check_versions(ws: Workspace, config: RagtuneConfig, add: Any, repair: bool) -> None:
    if not ws.versions_dir.is_dir():
        add(Finding("versions", "ok", "nothing indexed yet"))
        return
    served = ws.served_versions()
    with contextlib.suppress(WorkspaceError):  # a corrupt TRIAL is the trial check's finding
        live = (ws.read_trial() or {}).get("version")
        if live:
            served.add(live)  # the live trial's version: in use, as it should be
    names = sorted(d.name for d in ws.versions_dir.iterdir() if d.is_dir() and d.name.startswith("v") and d.name[1:].isdigit())
    complete = 0
    for name in names:
        with contextlib.suppress(WorkspaceError):  # an unreadable manifest is one of the problems below
            if ws.read_version(name).discarded:
                continue  # a dropped trial's record, as it should be
        problems = ws.version_problems(name)
        if problems and repair and _rebuild_index_file(ws, config, name, problems):
            add(Finding("versions", "problem", f"{name}: {problems[0]}", "rebuilt index.faiss from vectors.npy", repaired=True))
            problems = ws.version_problems(name)
        if problems:
            add(Finding("versions", "problem", f"{name} cannot serve: {'; '.join(problems)}", _version_fix(problems)))
            continue
        complete += 1
        if name not in served:
            add(Finding("versions", "warning", f"{name} is complete but never served (a staged trial candidate, or a command killed before its swap)", "`ragtune rollback` refuses it; pruning removes it in time"))
    add(Finding("versions", "ok", f"{complete} complete version(s) of {len(names)}"))


def _version_fix(problems: list[str]) -> str:
    if all(p.endswith("index.faiss is missing") for p in problems):
        return "--repair rebuilds index.faiss from vectors.npy"
    return "roll back to another version (`ragtune versions`), or re-index"


def _rebuild_index_file(ws: Workspace, config: RagtuneConfig, name: str, problems: list[str]) -> bool:
    """Rebuild a version's missing faiss index file from its vectors (nothing else missing)."""
    if not all(p.endswith("index.faiss is missing") for p in problems):
        return False
    import numpy as np

    from ragtune.index import create_store

    info = ws.read_version(name)
    idir = ws.version_dir(info.index_version)
    vectors = np.load(idir / "vectors.npy", mmap_mode="r")
    tmp = idir / ".rebuild"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        saved = idir / "config.json"  # the settings the index was built with
        index_config = RagtuneConfig.load(saved).index if saved.is_file() else config.index
        create_store(tmp, np.asarray(vectors, dtype=np.float32), index_config, name=store_name(ws, info.index_version))
        os.replace(tmp / "index.faiss", idir / "index.faiss")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _check_pointer(ws: Workspace, add: Any, repair: bool) -> None:
    try:
        cur = ws.current_version()
        problem = None if cur is None else "; ".join(ws.version_problems(cur))
    except WorkspaceError as exc:
        cur, problem = None, str(exc)
    if cur is None and problem is None:
        if any(v for v in ws.list_versions() if not v.discarded):
            problem = f"{ws.current_path} is missing but versions exist"
        else:
            add(Finding("pointer", "ok", "nothing indexed yet"))
            return
    if not problem:
        add(Finding("pointer", "ok", f"CURRENT -> {cur}"))
        return
    good = ws.last_good_version()
    fix = f"point CURRENT at {good}, the version last made current that is complete" if good else "no complete version to point at: re-index"
    if repair and good:
        ws.set_current(good)
        ws.append_log({"event": "rolled_back", "version": good, "previous": cur, "reason": f"ragtune doctor --repair: {problem}"})
        add(Finding("pointer", "problem", f"CURRENT was unusable ({problem}); now -> {good}", fix, repaired=True))
    else:
        add(Finding("pointer", "problem", f"CURRENT is unusable: {problem}", fix))


def _check_stores(ws: Workspace, config: RagtuneConfig, add: Any) -> None:
    """Open the vector store the serving version (and a live trial) searches, and count its vectors."""
    from ragtune.docstore import DocStore
    from ragtune.index import open_store

    names: list[str] = []
    with contextlib.suppress(WorkspaceError):
        cur = ws.current_version()
        names += [cur] if cur else []
        record = ws.read_trial()
        names += [str(record["version"])] if record and record.get("version") else []
    for name in dict.fromkeys(names):
        if ws.version_problems(name):
            continue  # reported under versions
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
        add(Finding("trial", "problem", str(exc), "remove it (searches stop interleaving)", repaired=repair))
        return
    if record is None:
        add(Finding("trial", "ok", "no trial live"))
        return
    version = record.get("version")
    if not version or not (ws.version_dir(str(version)) / "manifest.json").is_file():
        add(Finding("trial", "problem", f"TRIAL names version {version!r}, which does not exist", "the next refresh, `trial decide` or --repair drops it"))
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
        add(Finding("decisions", "problem", f"{what}: not in refresh-log.jsonl yet", fix))
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
    add(Finding("decisions", "problem", f"{what}: {'; '.join(done) or 'nothing left to do'}", fix, repaired=True))


def _leftovers(ws: Workspace) -> list[str]:
    found: list[str] = []
    if ws.versions_dir.is_dir():
        found += [f"versions/{d.name}" for d in ws.versions_dir.iterdir() if d.name.startswith(".tmp-")]
    if ws.work_dir.exists():
        found.append("work/")
    return found

