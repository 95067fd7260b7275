"""Crash recovery: finish what a killed ``index``, ``refresh`` or trial decision left half done.

Every command that makes a version writes its decision record (:attr:`VersionInfo.decision
<ragtune.workspace.VersionInfo.decision>`: an id, the event, and the feedback watermark ``mark``)
into the version's manifest, so the record is part of the same atomic rename that puts the
version in place. The matching ``refresh-log.jsonl`` entry is written after the swap. A kill in
between leaves a version whose decision is not in the log; :func:`recover`, run under the
workspace lock before every write command, replays it:

* ``indexed`` / ``promoted``: the swap is completed (when the version's parent still serves),
  then the entry is logged;
* ``trial_started``: the trial is started (or its start confirmed, when ``TRIAL`` was already
  written), or, when the serving version moved on meanwhile, the candidate is dropped;

so no kill can lose a decision or make the next refresh train twice on the same feedback: the
watermark (:func:`feedback_mark`) is read from the log's entries.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ragtune.config import TrialConfig
from ragtune.errors import WorkspaceError
from ragtune.feedback import FeedbackLog
from ragtune.trial import TrialState, confirm_trial, live_trial, start_trial, stop_trial
from ragtune.trial import recover as finish_trial_end
from ragtune.workspace import VersionInfo, Workspace

__all__ = ["LEGACY_MARK_KEY", "feedback_mark", "log_identity", "new_decision", "pending_decisions", "recover", "replay_decisions"]

logger = logging.getLogger(__name__)

#: Where a workspace made before decision records kept its watermark (the feedback log's meta table).
LEGACY_MARK_KEY = "refresh_mark"
_LOG_ID_KEY = "log_id"


def log_identity(log: FeedbackLog) -> str:
    """A random id of this feedback database, made on first use: a watermark only applies to the log it was read from."""
    ident = log.get_meta(_LOG_ID_KEY)
    if not ident:
        ident = uuid.uuid4().hex[:12]
        log.set_meta(_LOG_ID_KEY, ident)
    return str(ident)


def new_decision(event: str, log: FeedbackLog | None = None, **fields: Any) -> dict[str, Any]:
    """A decision record: a fresh id, the event, the feedback watermark now (when ``log`` is given), and ``fields``."""
    record: dict[str, Any] = {"decision": uuid.uuid4().hex[:12], "event": event, **fields}
    if log is not None:
        record["mark"] = {"log": log_identity(log), "events": list(log.event_mark())}
    return record


def feedback_mark(ws: Workspace, log: FeedbackLog) -> tuple[int, int]:
    """The watermark of the feedback the last training refresh consumed (``(0, 0)``: none yet).

    Read from the newest ``refresh-log.jsonl`` entry that carries one for this feedback database
    (a database moved aside by ``ragtune doctor --repair`` starts from zero again).
    """
    ident = log_identity(log)
    for entry in reversed(ws.read_log()):
        mark = entry.get("mark")
        if isinstance(mark, dict) and mark.get("log") == ident and isinstance(mark.get("events"), list) and len(mark["events"]) == 2:
            return int(mark["events"][0]), int(mark["events"][1])
    legacy = log.get_meta(LEGACY_MARK_KEY)
    return (int(legacy[0]), int(legacy[1])) if isinstance(legacy, list) and len(legacy) == 2 else (0, 0)


def recover(ws: Workspace, log: FeedbackLog, config: TrialConfig) -> list[str]:
    """Replay decisions a crash kept out of the log, then finish an interrupted trial promotion/drop.

    Call under the workspace lock. Returns one line per thing it did (empty: nothing to do).
    """
    done = replay_decisions(ws, log, config)
    try:
        finish_trial_end(ws, log, config)
    except WorkspaceError as exc:  # an unreadable TRIAL: `trial stop` / `doctor --repair` remove it
        logger.warning("%s", exc)
    return done


def replay_decisions(ws: Workspace, log: FeedbackLog, config: TrialConfig) -> list[str]:
    """Replay the decisions recorded in versions' manifests but missing from the log (see the module docstring).

    Call under the workspace lock, after any live trial was settled. Returns one line per replay.
    """
    done: list[str] = []
    for info in pending_decisions(ws):
        done.append(_replay(ws, log, config, info))
        logger.warning("recovered: %s", done[-1])
    return done


def pending_decisions(ws: Workspace) -> list[VersionInfo]:
    """The newest version, when its decision record is not in ``refresh-log.jsonl`` yet (a crash came between).

    Only the newest can be pending: each write command replays it before writing a version. An
    older version's record missing from the log means the log lost it (deleted, restored from an
    old copy): replaying would write false history (an old version "never served"), so it is not.
    """
    versions = ws.list_versions()
    if not versions or not versions[-1].decision.get("decision"):
        return []
    logged = {e.get("decision") for e in ws.read_log() if e.get("decision")}
    return [versions[-1]] if versions[-1].decision["decision"] not in logged else []


def _replay(ws: Workspace, log: FeedbackLog, config: TrialConfig, info: VersionInfo) -> str:
    decision = {**info.decision, "version": info.name, "replayed": True}
    current = ws.current_version()
    if decision.get("event") in ("indexed", "promoted"):
        if current == info.name:
            what = f"{info.name} was made current by an interrupted {decision['event']} run; its decision is now logged"
        elif current == info.parent and ws.current_since() > info.created:  # CURRENT set after this version was made (a rollback; to the second): the log lost its record
            what = f"{info.name}'s decision was not in the log (CURRENT has moved since it was made); it is now logged"
        elif current == info.parent and not ws.version_problems(info.name):
            ws.set_current(info.name)
            what = f"completed the interrupted swap to {info.name} ({decision['event']})"
            stop_trial(ws, log, config, f"an interrupted {decision['event']} run made {info.name} current")
        else:
            decision["abandoned"] = f"the serving version changed from {info.parent} to {current} before it was swapped in"
            what = f"{info.name} never served: {decision['abandoned']}"
        ws.append_log(decision)
        return what
    # trial_started
    state = _live_or_none(ws)
    if state is not None and state.version == info.name:
        confirm_trial(ws, state, info.decision)
        return f"confirmed the interrupted start of trial {state.id} ({info.name})"
    if current == info.name or info.trial.get("state") != "staged":  # the trial ran (or is decided) already: only the record was missing
        ws.append_log({**decision, "event": "trial_started", "trial": info.trial.get("id")})
        return f"logged the start of {info.name}'s trial, which an interrupted refresh had not logged"
    if state is None and info.parent is not None and current == info.parent and info.trial.get("state") == "staged" and not ws.version_problems(info.name):
        tier = "query" if info.kind == "query" else str(info.model.get("adapter_kind") or "lora")
        check = (info.metrics or {}).get("check") or {}
        started = start_trial(ws, info.name, info.parent, tier, config, check, info.decision)
        return f"started trial {started.id} with {info.name}, which an interrupted refresh had staged"
    reason = f"the refresh that staged it was interrupted and serving changed from {info.parent} to {current}" if current != info.parent else "the refresh that staged it was interrupted while another trial was live"
    ws.update_manifest(info.name, trial={**info.trial, "state": "dropped", "reason": reason})
    ws.discard_files(info.name)
    ws.append_log({**decision, "abandoned": reason})
    return f"dropped candidate {info.name}: {reason}"


def _live_or_none(ws: Workspace) -> TrialState | None:
    try:
        return live_trial(ws)
    except WorkspaceError:
        return None
