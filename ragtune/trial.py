"""Interleaved trials: a candidate is promoted only when live users' clicks prefer it.

A refresh whose candidate passes the offline check stages it as a *trial version* (a query tier
over the serving index, or a re-embedded index for a LoRA/full model) and points ``TRIAL`` at it.
While the trial is live, a share (``trial.share``) of logged searches shows a team-draft
interleaving of the serving and the trial rankings (:mod:`ragtune.interleave`), each impression
logged with its team. Each such search is won by the trial when the user chose (clicked or rated
up) more of the trial team's results than the serving team's, lost in the opposite case, tied or
left without a click otherwise. One query (its normalised text) counts in at most
:data:`MAX_DECIDED_PER_QUERY` decided searches of a trial (:func:`tally`): those whose first choice
came first. So the test weighs users' many needs rather than one repeated query: a bot or a script
repeating one query cannot decide a trial alone (5 decided searches, against
``trial.min_decided`` 20 by default). Which searches count depends on the query and on when and
whether a search was decided, never on which team won it; a late click never takes a counted
search's place.

The decision (:func:`decide`) spends the false-promotion bound ``alpha`` (``trial.alpha``) in two
halves, so a weak but real preference still has a fair chance within the budget:

- a sequential test on the win rate ``p`` of decided searches (won or lost): a mixture likelihood
  ratio of "``p`` uniform on (0.5, 0.8)" against ``p = 0.5``. Under the null (clicks that carry no
  information, or more generally a trial that wins a decided search of any query with probability
  at most one half) that ratio is a non-negative
  supermartingale with mean at most 1, so by Ville's inequality it ever reaches ``2 / alpha`` with
  probability at most ``alpha / 2``, however often the trial is looked at, provided an outcome,
  once counted, never changes: :func:`settle` keeps the outcomes each look counted
  (:meth:`FeedbackLog.keep_trial_outcomes`), so a result opened after a look cannot turn a
  counted win into a tie and hand the next look a fresh coin flip. It promotes a clear winner early.
- once ``trial.max_searches`` interleaved searches are logged, one exact one-sided sign test
  (:func:`scipy.stats.binomtest`) on the wins and losses of exactly those first ``max_searches``
  searches, at level ``alpha / 2``: one look at a fixed horizon, however late the trial is decided.
  It promotes a trial users prefer by a few points, which the sequential test would need several
  budgets to confirm.

Either half needs ``trial.min_decided`` decided searches of its own. By the union bound, a trial no
better than the serving version is promoted with probability at most ``alpha``: that is the stated
bound. The sign test is taken by the first :func:`settle` after the budget, which always ends the
trial; :func:`trial_status` only reads. The reported p-value is ``min(1, 2 * min(p_seq, p_sign))``
(``p_seq = 1 / ratio``), so a trial is promoted exactly when it is at most ``alpha``. The mirrored
ratio ("``p`` uniform on (0.2, 0.5)") reaching ``1 / alpha`` drops a trial that users find worse; a
trial the budget's sign test does not promote is dropped as out of budget.

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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragtune.config import TrialConfig
from ragtune.errors import FeedbackLogError, InputError, WorkspaceError
from ragtune.faults import checkpoint
from ragtune.feedback import FeedbackLog, TrialSearch, normalize_query
from ragtune.interleave import Outcome, credit
from ragtune.workspace import Workspace, _now

__all__ = ["MAX_DECIDED_PER_QUERY", "TrialCounts", "TrialDecision", "TrialState", "assess", "confirm_trial", "count_outcomes", "decide", "evidence", "live_trial", "recover", "repeats_note", "settle", "sign_test", "start_trial", "stop_trial", "tally", "trial_status"]

logger = logging.getLogger(__name__)

#: The alternative's win rates: a trial users prefer wins between 50% and 80% of decided searches.
_BETTER = (0.5, 0.8)
_WORSE = (0.2, 0.5)

#: Decided searches (won or lost) counted per query (normalised text) in one trial: its first ones.
#: The test counts distinct users' needs, not how often one of them is repeated: a script, a bot or a
#: heavy user repeating one query cannot decide a trial alone, and a popular query whose two rankings
#: happen to differ in one document does not outvote the rest (``benchmarks/RESULTS.md``, "One
#: query, one voice").
MAX_DECIDED_PER_QUERY = 5

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
    """Outcomes of a trial's interleaved searches so far.

    Attributes:
        searches: Interleaved searches logged.
        wins: Searches won by the trial (the test's evidence for it).
        losses: Searches won by the serving version.
        ties: Searches whose choices credited both teams equally.
        repeats: Decided searches not counted: a query's beyond its first :data:`MAX_DECIDED_PER_QUERY`.
    """

    searches: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0
    repeats: int = 0

    @property
    def decided(self) -> int:
        """Decided searches the test counts (won or lost; ``repeats`` left out)."""
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
        p_value: P-value of "the trial is no better", both halves of the test together
            (``min(1, 2 * min(1 / evidence_better, p_sign))``): promoted when it is at most ``alpha``.
        evidence_better: The likelihood ratio for "users prefer the trial" (promote at ``2 / alpha``).
        evidence_worse: The likelihood ratio for "users prefer the serving version" (drop at ``1 / alpha``).
        p_sign: The budget's one-sided sign test p-value, on the first ``max_searches`` interleaved
            searches; ``None`` before the budget is reached.
    """

    verdict: Verdict
    reason: str
    counts: TrialCounts
    p_value: float
    evidence_better: float
    evidence_worse: float
    p_sign: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            **self.counts.to_dict(),
            "p_value": round(self.p_value, 6),
            "evidence_better": round(self.evidence_better, 4),
            "evidence_worse": round(self.evidence_worse, 4),
            "p_sign": None if self.p_sign is None else round(self.p_sign, 6),
        }

    def relabel(self, verdict: Verdict, reason: str) -> TrialDecision:
        """The same figures under another verdict and reason (an operator's stop, a completed promotion)."""
        return TrialDecision(verdict, reason, self.counts, self.p_value, self.evidence_better, self.evidence_worse, self.p_sign)


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


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: the probability of at least ``wins`` wins in ``wins + losses`` fair coin flips."""
    if wins + losses == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def decide(counts: TrialCounts, config: TrialConfig, at_budget: TrialCounts | None = None) -> TrialDecision:
    """The test's verdict on ``counts`` (pure; see the module docstring).

    Args:
        counts: Every interleaved search of the trial so far.
        config: The trial's settings (``alpha``, ``min_decided``, ``max_searches``).
        at_budget: The outcomes of the first ``max_searches`` interleaved searches, for the budget's
            sign test; ``None`` when ``counts`` are those searches (:func:`assess` passes them
            whenever the log holds more).
    """
    better, worse = evidence(counts.wins, counts.losses)
    p_seq = min(1.0, 1.0 / better) if better > 0 else 1.0
    figures = f"{counts.wins} wins, {counts.losses} losses, {counts.ties} ties in {counts.searches} interleaved searches"
    if counts.repeats:
        figures += f", {repeats_note(counts.repeats)}"
    enough = counts.decided >= config.min_decided
    at_end = counts.searches >= config.max_searches
    budget = at_budget if at_budget is not None else counts
    p_sign = sign_test(budget.wins, budget.losses) if at_end else None
    p = min(1.0, 2 * min(p_seq, 1.0 if p_sign is None else p_sign))
    by_sequential = 2 * p_seq <= config.alpha and enough
    by_sign = p_sign is not None and 2 * p_sign <= config.alpha and budget.decided >= config.min_decided
    if by_sequential or by_sign:
        how = "" if by_sequential else f"; sign test on the first {config.max_searches}: {budget.wins} wins, {budget.losses} losses"
        return TrialDecision("promote", f"users preferred the trial: {figures} (p = {p:.4f} <= trial.alpha {config.alpha:g}{how})", counts, p, better, worse, p_sign)
    if worse >= 1.0 / config.alpha:
        return TrialDecision("drop", f"users preferred the serving version: {figures}", counts, p, better, worse, p_sign)
    if p_sign is None:
        need = f"; promotion needs p <= {config.alpha:g}" + ("" if enough else f" and {config.min_decided} decided searches")
        return TrialDecision("continue", f"undecided: {figures} (p = {p:.4f}{need})", counts, p, better, worse)
    if p <= config.alpha:  # preferred, but on too few counted searches to be trusted
        cause = (
            f"each query counts in at most {MAX_DECIDED_PER_QUERY}, so too few distinct queries were decided"
            if budget.repeats else "too few interleaved searches got a click that told the teams apart"
        )
        why = (
            f"users preferred the trial (p = {p:.4f}, sign test p = {p_sign:.4f}) but only {budget.decided} decided searches counted, "
            f"fewer than trial.min_decided {config.min_decided} ({cause}); decide on a labelled set (--eval-beir) or skip the trial (--no-trial)"
        )
    else:
        why = f"without evidence either way (p = {p:.4f}, sign test p = {p_sign:.4f})"
    return TrialDecision("drop", f"out of budget: {figures} (trial.max_searches {config.max_searches}) {why}", counts, p, better, worse, p_sign)


def repeats_note(repeats: int) -> str:
    """How a trial's report names the decided searches it did not count (``repeats`` of :class:`TrialCounts`)."""
    return f"{repeats} more decided {'search' if repeats == 1 else 'searches'} of repeated queries not counted"


def count_outcomes(log: FeedbackLog, trial_id: str) -> TrialCounts:
    """Wins, losses and ties of a trial's interleaved searches, read from the feedback log."""
    return tally(log.trial_searches(trial_id))


def tally(searches: Iterable[TrialSearch], *, max_per_query: int = MAX_DECIDED_PER_QUERY) -> TrialCounts:
    """Wins, losses and ties of interleaved searches.

    Args:
        searches: The trial's interleaved searches, in log order (:meth:`FeedbackLog.trial_searches`).
        max_per_query: Decided searches counted per query (normalised text): those whose first
            choice (click or rating up) came first, ties broken by log order; the query's other
            decided searches are counted as ``repeats`` only. Ordering by first choice, not by when
            the search was made, means a late click on an earlier search never takes a counted
            search's place. Trials use :data:`MAX_DECIDED_PER_QUERY`.

    Raises:
        InputError: ``max_per_query`` is not a positive integer (also a ``ValueError``).
    """
    if isinstance(max_per_query, bool) or not isinstance(max_per_query, int) or max_per_query < 1:
        raise InputError(f"tally: max_per_query must be a positive integer, got {max_per_query!r}")
    counts = TrialCounts()
    decided: list[tuple[int, float, int, str, Outcome]] = []
    for i, search in enumerate(searches):
        counts.searches += 1
        outcome = search.counted or credit(search.teams, search.chosen)  # a counted outcome never changes
        if outcome == "tie":
            counts.ties += 1
        elif outcome in ("win", "loss"):
            first = search.first_choice if search.first_choice is not None else math.inf
            # searches counted before keep their places (in the order they were counted), then the new ones
            place = (0, float(search.counted_seq)) if search.counted_seq is not None else (1, first)
            decided.append((*place, i, normalize_query(search.text), outcome))
    used: Counter[str] = Counter()
    for _, _, _, key, outcome in sorted(decided):
        if used[key] >= max_per_query:
            counts.repeats += 1
            continue
        used[key] += 1
        if outcome == "win":
            counts.wins += 1
        else:
            counts.losses += 1
    return counts


def assess(log: FeedbackLog, trial_id: str, config: TrialConfig, *, keep: bool = False) -> TrialDecision:
    """Count a trial's outcomes in the log (one read) and decide (both halves of the test, see :func:`decide`).

    ``keep`` (a decision that acts: :func:`settle`): the outcomes it counted are kept as they are now
    (:meth:`FeedbackLog.keep_trial_outcomes`), so a later click on one of those searches (a second
    result opened a minute later) cannot turn a counted win into a tie and hand the next look a
    fresh coin flip: evidence only grows, as the sequential test's guarantee requires.
    """
    searches = log.trial_searches(trial_id)
    at_budget = tally(searches[: config.max_searches]) if len(searches) > config.max_searches else None
    decision = decide(tally(searches), config, at_budget)
    if keep and decision.verdict == "continue":  # an ended trial is never counted again
        new = [(s.first_choice if s.first_choice is not None else math.inf, i, s) for i, s in enumerate(searches) if s.counted is None]
        fresh = [(s.qid, o) for _, _, s in sorted(new, key=lambda t: (t[0], t[1])) if (o := credit(s.teams, s.chosen)) in ("win", "loss", "tie")]
        try:
            log.keep_trial_outcomes(trial_id, fresh)
        except FeedbackLogError as exc:  # the trial goes on; these outcomes are kept by the next look that can write
            logger.warning("trial %s: the outcomes this look counted could not be kept (%s)", trial_id, exc)
    return decision


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
    return state, assess(log, state.id, state.config(config))


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
    logger.info("trial %s %s: %s", state.id, "promoted" if promoted else "dropped", decision.reason)


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
    decision = assess(log, state.id, config, keep=True)
    counts = decision.counts
    if current == state.version:  # promoted, then interrupted before TRIAL was removed
        decision = decision.relabel("promote", f"completing an interrupted promotion: {decision.reason}")
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
    decision = assess(log, state.id, state.config(config))
    decision = decision.relabel("drop", f"{reason} ({decision.reason})")
    _end(ws, state, decision, promoted=False)
    return state, decision
