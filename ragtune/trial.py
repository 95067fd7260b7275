"""Interleaved trials: a candidate is promoted only when live users' clicks prefer it.

A refresh whose candidate passes the offline check stages it as a *trial version* (a query tier
over the serving index, or a re-embedded index for a LoRA/full model) and points ``TRIAL`` at it.
While the trial is live, a share (``trial.share``) of logged searches shows a team-draft
interleaving of the serving and the trial rankings (:mod:`ragtune.interleave`), each impression
logged with its team. Each such search is won by the trial when the user chose (clicked or rated
up) more of the trial team's results than the serving team's, lost in the opposite case, tied or
left without a click otherwise.

The decision (:func:`decide`) is a sequential test on the win rate ``p`` of decided searches (won
or lost): a mixture likelihood ratio of "``p`` uniform on (0.5, 0.8)" against ``p = 0.5``. Under the
null (clicks that carry no information, or a trial no better than the serving ranking) that ratio is
a non-negative supermartingale with mean at most 1, so by Ville's inequality it ever reaches
``1 / alpha`` with probability at most ``alpha``, however often the trial is looked at: that is the
stated bound on the false-promotion rate. The mirrored ratio ("``p`` uniform on (0.2, 0.5)") drops a
trial that users find worse; a trial still undecided after ``trial.max_searches`` interleaved
searches is dropped as out of budget.

State changes happen under the workspace lock, in an order that a crash at any point leaves
consistent (:func:`settle`): promotion writes the trial version's manifest, swaps ``CURRENT`` and
then removes ``TRIAL``; a reader that sees ``TRIAL`` pointing at the current version does not
interleave, and the next :func:`settle` finishes the job. A drop writes the manifest, discards the
version's files and then removes ``TRIAL``; a process that had the trial version loaded may show it
until ``TRIAL`` is gone, and the next :func:`settle` finishes an interrupted drop. The log entry is written before
``TRIAL`` is removed, so a crash may repeat it but never loses it.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragtune.config import TrialConfig
from ragtune.errors import WorkspaceError
from ragtune.faults import checkpoint
from ragtune.feedback import FeedbackLog
from ragtune.interleave import credit
from ragtune.workspace import Workspace, _now

__all__ = ["TrialCounts", "TrialDecision", "TrialState", "confirm_trial", "count_outcomes", "decide", "evidence", "live_trial", "recover", "settle", "start_trial", "stop_trial", "trial_status"]

logger = logging.getLogger(__name__)

#: The alternative's win rates: a trial users prefer wins between 50% and 80% of decided searches.
_BETTER = (0.5, 0.8)
_WORSE = (0.2, 0.5)

Verdict = Literal["promote", "drop", "continue"]


@dataclass
class TrialState:
    """The live trial, as ``WORKSPACE/TRIAL`` records it.

    Attributes:
        id: The trial's id (logged with each interleaved search).
        version: The trial version (staged, not current).
        baseline: The serving version it is compared with.
        tier: ``"query"``, ``"lora"`` or ``"full"``.
        share: Share of logged searches interleaved.
        started: ISO timestamp.
        check: The offline check's figures that made the candidate worth a trial.
        test: ``alpha``, ``min_decided`` and ``max_searches`` as they were at the start.
    """

    id: str
    version: str
    baseline: str
    tier: str
    share: float
    started: str = field(default_factory=_now)
    check: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)

    def config(self, live: TrialConfig) -> TrialConfig:
        """The test's settings as they were when the trial started (a config edit cannot loosen a running trial)."""
        frozen = {k: v for k, v in self.test.items() if k in ("alpha", "min_decided", "max_searches")}
        return TrialConfig(**{**live.__dict__, **frozen})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialState:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrialCounts:
    """Outcomes of a trial's interleaved searches so far."""

    searches: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def decided(self) -> int:
        return self.wins + self.losses

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "decided": self.decided}


@dataclass
class TrialDecision:
    """What the test says about a trial now.

    Attributes:
        verdict: ``"promote"``, ``"drop"`` or ``"continue"``.
        reason: One line saying why, with the figures.
        counts: Wins, losses, ties and interleaved searches.
        p_value: Anytime-valid p-value of "the trial is no better" (``min(1, 1 / evidence)``).
        evidence_better: The likelihood ratio for "users prefer the trial" (promote at ``1 / alpha``).
        evidence_worse: The likelihood ratio for "users prefer the serving version".
    """

    verdict: Verdict
    reason: str
    counts: TrialCounts
    p_value: float
    evidence_better: float
    evidence_worse: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            **self.counts.to_dict(),
            "p_value": round(self.p_value, 6),
            "evidence_better": round(self.evidence_better, 4),
            "evidence_worse": round(self.evidence_worse, 4),
        }


def _log_mixture(wins: int, losses: int, lo: float, hi: float, points: int = 4096) -> float:
    """``log`` of the mean over ``p`` uniform on ``(lo, hi)`` of ``p^w (1-p)^l / 0.5^(w+l)``, in log space (no underflow)."""
    from scipy.special import logsumexp

    p = lo + (hi - lo) * (np.arange(points) + 0.5) / points  # the midpoint rule
    terms = wins * np.log(p) + losses * np.log1p(-p)
    return float(logsumexp(terms) - math.log(points)) + (wins + losses) * math.log(2.0)


def evidence(wins: int, losses: int) -> tuple[float, float]:
    """The likelihood ratios for "the trial is better" and "the trial is worse" after ``wins`` and ``losses``."""
    better = _log_mixture(wins, losses, *_BETTER)
    worse = _log_mixture(wins, losses, *_WORSE)
    return math.exp(min(better, 700.0)), math.exp(min(worse, 700.0))


def decide(counts: TrialCounts, config: TrialConfig) -> TrialDecision:
    """The sequential test's verdict on ``counts`` (pure; see the module docstring)."""
    better, worse = evidence(counts.wins, counts.losses)
    bar = 1.0 / config.alpha
    p = min(1.0, 1.0 / better) if better > 0 else 1.0
    figures = f"{counts.wins} wins, {counts.losses} losses, {counts.ties} ties in {counts.searches} interleaved searches"
    if better >= bar and counts.decided >= config.min_decided:
        return TrialDecision("promote", f"users preferred the trial: {figures} (p = {p:.4f} <= trial.alpha {config.alpha:g})", counts, p, better, worse)
    if worse >= bar:
        return TrialDecision("drop", f"users preferred the serving version: {figures}", counts, p, better, worse)
    if counts.searches >= config.max_searches:
        return TrialDecision(
            "drop", f"out of budget: {figures} (trial.max_searches {config.max_searches}) without evidence either way (p = {p:.4f})", counts, p, better, worse
        )
    need = f"; promotion needs p <= {config.alpha:g}" + (f" and {config.min_decided} decided searches" if counts.decided < config.min_decided else "")
    return TrialDecision("continue", f"undecided: {figures} (p = {p:.4f}{need})", counts, p, better, worse)


def count_outcomes(log: FeedbackLog, trial_id: str) -> TrialCounts:
    """Wins, losses and ties of a trial's interleaved searches, read from the feedback log."""
    counts = TrialCounts()
    for teams, chosen in log.trial_searches(trial_id):
        counts.searches += 1
        outcome = credit(teams, chosen)
        if outcome == "win":
            counts.wins += 1
        elif outcome == "loss":
            counts.losses += 1
        elif outcome == "tie":
            counts.ties += 1
    return counts


def live_trial(ws: Workspace) -> TrialState | None:
    """The live trial, or ``None``."""
    record = ws.read_trial()
    return TrialState.from_dict(record) if record else None


def start_trial(
    ws: Workspace, version: str, baseline: str, tier: str, config: TrialConfig, check: dict[str, Any], decision: dict[str, Any] | None = None
) -> TrialState:
    """Make the staged ``version`` the live trial against ``baseline``. Call under the workspace lock.

    ``decision`` is the refresh's decision record (stored in the version's manifest): its id and
    feedback watermark go into the ``trial_started`` log entry.
    """
    test = {"alpha": config.alpha, "min_decided": config.min_decided, "max_searches": config.max_searches}
    state = TrialState(id=uuid.uuid4().hex[:12], version=version, baseline=baseline, tier=tier, share=float(config.share), check=check, test=test)
    ws.write_trial(state.to_dict())  # first: a crash before the manifest says "live" leaves a live trial, not a stale label
    checkpoint("trial.started")
    confirm_trial(ws, state, decision)
    logger.info("trial %s started: %s against %s (%s tier, %.0f%% of searches interleaved)", state.id, version, baseline, tier, 100 * state.share)
    return state


def confirm_trial(ws: Workspace, state: TrialState, decision: dict[str, Any] | None) -> None:
    """The steps of :func:`start_trial` after ``TRIAL`` is written: label the manifest live, log the start."""
    ws.update_manifest(state.version, trial={"id": state.id, "state": "live", "baseline": state.baseline, "started": state.started})
    ws.append_log({**(decision or {}), "event": "trial_started", "trial": state.id, "version": state.version, "baseline": state.baseline, "tier": state.tier, "share": state.share, "check": state.check})


def trial_status(ws: Workspace, log: FeedbackLog, config: TrialConfig) -> tuple[TrialState, TrialDecision] | None:
    """The live trial and what the test says now (reads only), or ``None`` when no trial is live."""
    state = live_trial(ws)
    if state is None:
        return None
    return state, decide(count_outcomes(log, state.id), state.config(config))


def _end(ws: Workspace, state: TrialState, decision: TrialDecision, promoted: bool) -> None:
    """Promote (swap ``CURRENT``, then label the manifest) or drop (label, discard the files), log, then remove ``TRIAL``.

    Each step leaves a state the next :func:`settle` completes: ``CURRENT`` on the trial version
    with ``TRIAL`` still there is an interrupted promotion; a version labelled dropped with ``TRIAL``
    still there is an interrupted drop. The log entry is written before ``TRIAL`` goes, and not again
    when a crash after it makes the next settle finish the job: never lost, never doubled.
    """
    record = {"id": state.id, "state": "promoted" if promoted else "dropped", "baseline": state.baseline, "started": state.started, "ended": _now(), **decision.to_dict()}
    exists = (ws.version_dir(state.version) / "manifest.json").is_file()
    if promoted and ws.current_version() != state.version:
        ws.set_current(state.version)
        checkpoint("trial.promoted")
    if exists:
        ws.update_manifest(state.version, trial=record)
        checkpoint("trial.labelled")
    if not promoted and exists and ws.current_version() != state.version:
        ws.discard_files(state.version)
    event = "trial_promoted" if promoted else "trial_dropped"
    if not any(e.get("event") == event and e.get("trial") == state.id for e in ws.read_log()):  # a crash after logging: not twice
        ws.append_log({"event": event, "trial": state.id, "version": state.version, "baseline": state.baseline, **decision.to_dict()})
    checkpoint("trial.logged")
    ws.clear_trial()
    logger.log(logging.INFO if promoted else logging.WARNING, "trial %s %s: %s", state.id, "promoted" if promoted else "dropped", decision.reason)


def settle(ws: Workspace, log: FeedbackLog, config: TrialConfig) -> tuple[TrialState, TrialDecision] | None:
    """Decide the live trial and act on the verdict: promote (atomic swap of ``CURRENT``) or drop (discard).

    Call under the workspace lock. A trial whose baseline is no longer current (a rollback, or an
    ``index`` run) is dropped: its wins were against another ranking. Returns ``None`` when no trial
    is live, else the trial and the decision acted on (``"continue"``: nothing changed).
    """
    state = live_trial(ws)
    if state is None:
        return None
    config = state.config(config)
    current = ws.current_version()
    counts = count_outcomes(log, state.id)
    if current == state.version:  # promoted, then interrupted before TRIAL was removed
        decision = decide(counts, config)
        decision = TrialDecision("promote", f"completing an interrupted promotion: {decision.reason}", counts, decision.p_value, decision.evidence_better, decision.evidence_worse)
        _end(ws, state, decision, promoted=True)
        return state, decision
    gone = not (ws.version_dir(state.version) / "manifest.json").is_file()
    dropped = not gone and ws.read_version(state.version).discarded  # a drop interrupted before TRIAL was removed
    if current != state.baseline or gone or dropped:
        if current != state.baseline:
            why = f"the serving version changed from {state.baseline} to {current}"
        else:
            why = f"its version {state.version} is " + ("gone" if gone else "already dropped (an interrupted drop)")
        decision = TrialDecision("drop", f"{why} during the trial", counts, 1.0, 0.0, 0.0)
        _end(ws, state, decision, promoted=False)
        return state, decision
    decision = decide(counts, config)
    if decision.verdict != "continue":
        _end(ws, state, decision, promoted=decision.verdict == "promote")
    return state, decision


def recover(ws: Workspace, log: FeedbackLog, config: TrialConfig) -> None:
    """Finish a promotion or a drop that a crash interrupted (and nothing else). Call under the workspace lock.

    ``index`` and ``rollback`` call it first, so that they build on the version that really serves.
    """
    state = live_trial(ws)
    if state is None:
        return
    vdir = ws.version_dir(state.version)
    if ws.current_version() == state.version or not (vdir / "manifest.json").is_file() or ws.read_version(state.version).discarded:
        settle(ws, log, config)


def stop_trial(ws: Workspace, log: FeedbackLog, config: TrialConfig, reason: str) -> tuple[TrialState, TrialDecision] | None:
    """Drop the live trial now (an operator's choice, an ``index`` run, a rollback). Call under the workspace lock.

    A ``TRIAL`` file too corrupt to read is removed (searches stop interleaving), with a warning.
    """
    try:
        state = live_trial(ws)
    except WorkspaceError as exc:
        logger.warning("removing an unreadable trial record: %s", exc)
        ws.append_log({"event": "trial_dropped", "reason": f"{reason}; the trial record was unreadable: {exc}"})
        ws.clear_trial()
        return None
    if state is None:
        return None
    if ws.current_version() == state.version:  # an interrupted promotion: finish it rather than discard the serving version
        return settle(ws, log, config)
    decision = decide(count_outcomes(log, state.id), state.config(config))
    decision = TrialDecision("drop", f"{reason} ({decision.reason})", decision.counts, decision.p_value, decision.evidence_better, decision.evidence_worse)
    _end(ws, state, decision, promoted=False)
    return state, decision
