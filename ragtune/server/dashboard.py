"""The dashboard: the figures ``GET /api/dashboard`` returns and the page ``GET /`` draws from them.

:func:`build_dashboard` reads a workspace through the public facade only (``versions()``,
``status()``, the feedback log's :meth:`~ragtune.feedback.FeedbackLog.daily_counts` and
:meth:`~ragtune.feedback.FeedbackLog.clicks_by_rank`, and the workspace's refresh log) into a typed
:class:`DashboardData`. :data:`router` serves it with the page (``static/``: HTML, plain
JavaScript and CSS, charts drawn as inline SVG; nothing is fetched from another origin). The page's
search box is a preview through the service's own ``POST /search`` with ``log: false``: it logs no
query and posts no click, so the dashboard never adds to what trains models or decides trials.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse

from ragtune.api import Ragtune
from ragtune.errors import FeedbackLogError
from ragtune.feedback import DailyCount, RankClicks
from ragtune.server.deps import RagtuneDep

__all__ = [
    "STATIC_DIR",
    "CheckFigures",
    "DashboardData",
    "Decision",
    "LiveTrial",
    "Overview",
    "TrialFigures",
    "VersionRow",
    "build_dashboard",
    "router",
]

logger = logging.getLogger(__name__)

#: The page's files (served at ``/`` and ``/dashboard/NAME``).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The files of :data:`STATIC_DIR` the router serves, with their media types.
STATIC_FILES = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="seconds")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


@dataclass
class CheckFigures:
    """A version's offline check (``metrics.check`` of its manifest).

    Attributes:
        metric: ``"ndcg@10"`` or ``"loglik"``.
        current: The serving model's mean on the checked queries.
        score: The candidate's mean.
        n: Queries checked.
        worth_trial: Whether the check let the candidate go on.
        reason: The check's line with the figures.
    """

    metric: str
    current: float | None
    score: float | None
    n: int
    worth_trial: bool
    reason: str

    @classmethod
    def from_record(cls, check: dict[str, Any] | None) -> CheckFigures | None:
        """The figures of a check record (``CheckResult.to_dict()``), or ``None`` for no check."""
        if not check:
            return None
        return cls(str(check.get("metric", "")), _num(check.get("current")), _num(check.get("score")), _int(check.get("n")), bool(check.get("worth_trial")), str(check.get("reason", "")))

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-able dict."""
        return asdict(self)


@dataclass
class TrialFigures:
    """A version's trial as its manifest records it.

    Attributes:
        state: ``"staged"``, ``"live"``, ``"promoted"`` or ``"dropped"``.
        wins: Interleaved searches the trial won (``None`` while it is live: see :class:`LiveTrial`).
        losses: Searches it lost.
        ties: Searches tied.
        p_value: The trial test's p-value at the end (promoted when at most ``trial.alpha``).
        reason: Why it ended.
    """

    state: str
    wins: int | None = None
    losses: int | None = None
    ties: int | None = None
    p_value: float | None = None
    reason: str = ""

    @classmethod
    def from_record(cls, trial: dict[str, Any] | None) -> TrialFigures | None:
        """The figures of a manifest's ``trial`` record, or ``None`` when the version was no trial."""
        if not trial or not trial.get("state"):
            return None
        ended = trial.get("state") in ("promoted", "dropped")
        return cls(
            str(trial["state"]),
            _int(trial.get("wins")) if ended else None,
            _int(trial.get("losses")) if ended else None,
            _int(trial.get("ties")) if ended else None,
            _num(trial.get("p_value")) if ended else None,
            str(trial.get("reason", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-able dict."""
        return asdict(self)


@dataclass
class VersionRow:
    """One version on disk, as the timeline shows it.

    Attributes:
        name: ``v0001``...
        created: ISO timestamp.
        kind: ``"index"`` or ``"query"``.
        note: Its one-line note.
        event: What made it: ``"indexed"``, ``"promoted"``, ``"trial_started"`` (``""`` for a version
            older than decision records).
        current: It serves now.
        trial_live: It is the live trial.
        never_served: It never served (a trial not promoted).
        check: Its offline check, if it was made by a refresh.
        trial: Its trial, if it was made as one.
    """

    name: str
    created: str
    kind: str
    note: str
    event: str
    current: bool
    trial_live: bool
    never_served: bool
    check: CheckFigures | None = None
    trial: TrialFigures | None = None

    @classmethod
    def from_record(cls, v: dict[str, Any]) -> VersionRow:
        """A row of :meth:`ragtune.Ragtune.versions`."""
        return cls(
            name=str(v["name"]), created=str(v.get("created", "")), kind=str(v.get("kind", "")), note=str(v.get("note", "")),
            event=str((v.get("decision") or {}).get("event", "")), current=bool(v.get("current")), trial_live=bool(v.get("trial_live")),
            never_served=bool(v.get("never_served")), check=CheckFigures.from_record((v.get("metrics") or {}).get("check")),
            trial=TrialFigures.from_record(v.get("trial")),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-able dict."""
        return {**asdict(self), "check": self.check.to_dict() if self.check else None, "trial": self.trial.to_dict() if self.trial else None}


@dataclass
class LiveTrial:
    """The live trial and what its sequential test says now (:meth:`ragtune.Ragtune.trial`).

    Attributes:
        id: The trial id.
        version: The trial version.
        baseline: The serving version it is compared with.
        tier: ``"query"``, ``"lora"`` or ``"full"``.
        share: Share of logged searches interleaved.
        started: ISO timestamp.
        verdict: ``"promote"``, ``"drop"`` or ``"continue"`` (acted on at the next decide or refresh).
        reason: The test's line with the figures.
        searches: Interleaved searches so far.
        wins: Searches the trial won.
        losses: Searches it lost.
        ties: Searches tied (or without a click).
        p_value: P-value of "the trial is no better" (promoted when at most ``trial.alpha``).
    """

    id: str
    version: str
    baseline: str
    tier: str
    share: float
    started: str
    verdict: str
    reason: str
    searches: int
    wins: int
    losses: int
    ties: int
    p_value: float | None

    @classmethod
    def from_record(cls, trial: dict[str, Any] | None) -> LiveTrial | None:
        """The live trial from :meth:`ragtune.Ragtune.trial`'s dict, or ``None`` when none is live."""
        if not trial:
            return None
        return cls(
            str(trial.get("id", "")), str(trial.get("version", "")), str(trial.get("baseline", "")), str(trial.get("tier", "")),
            float(_num(trial.get("share")) or 0.0), str(trial.get("started", "")), str(trial.get("verdict", "")), str(trial.get("reason", "")),
            _int(trial.get("searches")), _int(trial.get("wins")), _int(trial.get("losses")), _int(trial.get("ties")), _num(trial.get("p_value")),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The trial as a JSON-able dict."""
        return asdict(self)


@dataclass
class Decision:
    """One entry of the workspace's refresh log, with the reason it gives.

    Attributes:
        time: Unix time it was logged.
        when: The same as an ISO timestamp (UTC).
        event: ``"indexed"``, ``"refresh_skipped"``, ``"refresh_refused"``, ``"trial_started"``,
            ``"promoted"``, ``"trial_promoted"``, ``"trial_dropped"``, ``"rolled_back"`` (``"abandoned"``:
            a decision a crash interrupted, not carried out).
        version: The version it made or acted on (``""`` when none).
        reason: Why, with the figures.
    """

    time: float
    when: str
    event: str
    version: str
    reason: str

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Decision:
        """A refresh-log entry (:meth:`ragtune.workspace.Workspace.read_log`) as a decision with its reason."""
        ts = float(_num(entry.get("time")) or 0.0)
        event = str(entry.get("event", ""))
        version = str(entry.get("version") or "")
        reason = str(entry.get("reason") or "")
        if entry.get("abandoned"):
            event, reason = "abandoned", f"{event} not carried out: {entry['abandoned']}"
        elif event == "indexed" and not reason:
            reason = f"{_int(entry.get('n_docs'))} docs ({_int(entry.get('added'))} added, {_int(entry.get('removed'))} removed, {_int(entry.get('embedded'))} embedded)"
        elif event == "trial_started" and not reason:
            found = entry.get("check")
            check: dict[str, Any] = found if isinstance(found, dict) else {}
            share = _num(entry.get("share"))
            reason = f"{entry.get('tier', '')} candidate against {entry.get('baseline', '')}" + (f", {100 * share:.0f}% of searches interleaved" if share is not None else "")
            if check.get("reason"):
                reason += f"; offline: {check['reason']}"
        elif event == "rolled_back" and not reason:
            reason = f"rolled back from {entry.get('previous') or 'a corrupt pointer'}"
        return cls(ts, _iso(ts), event, version, reason)

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-able dict."""
        return asdict(self)


@dataclass
class Overview:
    """The workspace at a glance (from :meth:`ragtune.Ragtune.status`).

    Attributes:
        workspace: Its directory.
        current_version: The serving version (``None`` when nothing is indexed).
        model: The serving model's label.
        n_docs: Documents in the serving index.
        queries: Queries in the feedback log (``None`` when it cannot be read).
        clicks: Clicks in it.
        ratings: Ratings in it.
        feedback_ok: Searches can be logged.
        feedback_message: The log's health line.
        problems: What else keeps the workspace from working (``ragtune doctor`` says more).
    """

    workspace: str
    current_version: str | None
    model: str
    n_docs: int
    queries: int | None
    clicks: int | None
    ratings: int | None
    feedback_ok: bool
    feedback_message: str
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The overview as a JSON-able dict."""
        return asdict(self)


@dataclass
class DashboardData:
    """Everything the dashboard shows.

    Attributes:
        overview: The workspace at a glance.
        versions: Every version on disk, oldest first.
        daily: Feedback logged per day (UTC), oldest first.
        ranks: Results shown and clicked per rank: the position-bias curve.
        trial: The live trial, or ``None``.
        decisions: The latest refresh-log entries, newest first.
        generated: ISO timestamp of when the figures were read.
    """

    overview: Overview
    versions: list[VersionRow]
    daily: list[DailyCount]
    ranks: list[RankClicks]
    trial: LiveTrial | None
    decisions: list[Decision]
    generated: str

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-able dicts (what ``GET /api/dashboard`` returns)."""
        return {
            "overview": self.overview.to_dict(),
            "versions": [v.to_dict() for v in self.versions],
            "daily": [d.to_dict() for d in self.daily],
            "ranks": [r.to_dict() for r in self.ranks],
            "trial": self.trial.to_dict() if self.trial else None,
            "decisions": [d.to_dict() for d in self.decisions],
            "generated": self.generated,
        }


def build_dashboard(rt: Ragtune, *, days: int = 30, max_rank: int = 10, n_decisions: int = 12) -> DashboardData:
    """Read the dashboard's figures from a workspace.

    A feedback log that cannot be read leaves the feedback figures empty (the overview says why);
    it never fails the dashboard.

    Args:
        rt: The workspace.
        days: Feedback per day covers the last ``days`` days (UTC), today included.
        max_rank: The position-bias curve covers ranks ``1..max_rank``.
        n_decisions: How many of the latest refresh-log entries to show.

    Returns:
        A :class:`DashboardData` (``.to_dict()`` for JSON).
    """
    status = rt.status()
    health = status.get("feedback_health") or {}
    counts = status.get("feedback") or {}
    overview = Overview(
        workspace=str(status.get("workspace", "")), current_version=status.get("current_version"), model=str(status.get("model", "")),
        n_docs=_int(status.get("n_docs")), queries=counts.get("queries"), clicks=counts.get("clicks"), ratings=counts.get("ratings"),
        feedback_ok=bool(health.get("ok")), feedback_message=str(health.get("message", "")), problems=list(status.get("problems") or []),
    )  # fmt: skip
    versions = [VersionRow.from_record(v) for v in rt.versions()]
    daily: list[DailyCount] = []
    ranks: list[RankClicks] = []
    if rt.ws.feedback_path.exists():  # reading must not create the log
        today = _dt.datetime.now(_dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        since = (today - _dt.timedelta(days=max(days, 1) - 1)).timestamp()
        try:
            daily = rt.feedback.daily_counts(since=since)
            ranks = rt.feedback.clicks_by_rank(max_rank)
        except FeedbackLogError as exc:
            logger.warning("the dashboard cannot read the feedback log: %s", exc)
    decisions = [Decision.from_entry(e) for e in rt.ws.read_log()[::-1][:n_decisions] if isinstance(e, dict)]
    return DashboardData(overview, versions, daily, ranks, LiveTrial.from_record(status.get("trial")), decisions, _iso(time.time()))


router = APIRouter()
"""The dashboard's routes: ``GET /`` (the page), ``GET /dashboard/{file}`` (its script and style), ``GET /api/dashboard``.

Read-only like ``GET /status``: no API key is asked. The app includes it with ``app.include_router(router)``.
"""


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    """The page's script and style (only the files of :data:`STATIC_FILES`)."""
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/api/dashboard", tags=["dashboard"])
def dashboard(
    rt: RagtuneDep,
    days: Annotated[int, Query(ge=1, le=3650, description="Feedback per day over the last DAYS days.")] = 30,
    max_rank: Annotated[int, Query(ge=1, le=100, description="Clicks by rank for ranks 1..MAX_RANK.")] = 10,
) -> dict[str, Any]:
    """Everything the dashboard shows (:class:`DashboardData` as JSON): versions with their check and trial
    figures, feedback per day, clicks by rank shown, the live trial, the latest refresh decisions."""
    return build_dashboard(rt, days=days, max_rank=max_rank).to_dict()
