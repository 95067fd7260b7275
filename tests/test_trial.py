"""The trial's sequential test: its verdicts, its false-promotion rate under optional stopping, and
uninformative users through the public API."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable

import pytest

from ragtune.config import TrialConfig
from ragtune.feedback import TrialSearch
from ragtune.simulate import draw_sessions
from ragtune.trial import MAX_DECIDED_PER_QUERY, TrialCounts, decide, evidence, sign_test, tally
from tests.conftest import play, play_trial


def _counts(wins: int, losses: int, ties: int = 0, searches: int | None = None) -> TrialCounts:
    return TrialCounts(searches=wins + losses + ties if searches is None else searches, wins=wins, losses=losses, ties=ties)


def test_clear_wins_promote_once_enough_searches_are_decided():
    cfg = TrialConfig()  # alpha 0.05, min_decided 20
    d = decide(_counts(25, 5, 3), cfg)
    assert d.verdict == "promote" and d.p_value <= cfg.alpha and d.evidence_better >= 2 / cfg.alpha and d.p_sign is None
    assert "25 wins, 5 losses, 3 ties in 33 interleaved searches" in d.reason and "trial.alpha 0.05" in d.reason
    # overwhelming evidence, but fewer decided searches than min_decided: not yet
    early = decide(_counts(15, 0, 10), cfg)
    assert early.evidence_better >= 2 / cfg.alpha and early.verdict == "continue" and "20 decided searches" in early.reason
    assert decide(_counts(15, 0, 10), TrialConfig(min_decided=15)).verdict == "promote"
    # a stricter alpha needs more
    assert decide(_counts(25, 5), TrialConfig(alpha=1e-4)).verdict == "continue"


def test_clear_losses_drop():
    d = decide(_counts(5, 25), TrialConfig())
    assert d.verdict == "drop" and "users preferred the serving version" in d.reason and d.evidence_worse >= 20
    assert d.p_value == 1.0
    # losses drop even before min_decided: a worse trial need not keep costing users
    assert decide(_counts(0, 12), TrialConfig(min_decided=100)).verdict == "drop"


def test_an_undecided_trial_continues_until_its_budget():
    cfg = TrialConfig(max_searches=100)
    d = decide(_counts(12, 10, 5), cfg)
    assert d.verdict == "continue" and d.reason.startswith("undecided: 12 wins, 10 losses, 5 ties in 27") and 0.05 < d.p_value <= 1
    assert decide(_counts(12, 10, 5, searches=99), cfg).verdict == "continue"
    out = decide(_counts(12, 10, 78), cfg)
    assert out.verdict == "drop" and "out of budget" in out.reason and "trial.max_searches 100" in out.reason
    assert decide(_counts(0, 0, 0, searches=100), cfg).verdict == "drop"  # nobody clicked at all
    # evidence enough to promote wins over the budget
    assert decide(_counts(60, 20, 20), cfg).verdict == "promote"


def test_the_budgets_sign_test_promotes_a_small_steady_preference():
    cfg = TrialConfig(max_searches=1000)
    # 211 wins to 169 losses: the sequential half is far from 2 / alpha, the sign test at the budget is not
    before = decide(_counts(211, 169, 40, searches=999), cfg)
    assert before.verdict == "continue" and before.p_sign is None and before.p_value > cfg.alpha
    d = decide(_counts(211, 169, 620), cfg)
    assert d.verdict == "promote" and d.p_sign == pytest.approx(sign_test(211, 169)) and 2 * d.p_sign == pytest.approx(d.p_value)
    assert d.p_value <= cfg.alpha < 2 * before.p_value and "sign test on the first 1000: 211 wins, 169 losses" in d.reason
    # one side of the budget's test: at alpha / 2
    assert decide(_counts(193, 171, 636), cfg).verdict == "drop" and sign_test(193, 171) > cfg.alpha / 2
    # the sign test looks at the first max_searches searches only, not at what came after them
    late = decide(_counts(236, 200, 764, searches=1200), cfg, at_budget=_counts(193, 171, 636))
    assert late.verdict == "drop" and "out of budget" in late.reason and late.p_sign == pytest.approx(sign_test(193, 171))
    assert sign_test(0, 0) == 1.0 and sign_test(5, 0) == pytest.approx(1 / 32)
    # each half needs min_decided of its own searches: the sequential half's strong evidence promotes
    # past the budget even when the first max_searches held too few decided searches for the sign test
    both = decide(_counts(40, 15, 1045, searches=1100), TrialConfig(max_searches=1000), at_budget=_counts(15, 0, 985))
    assert both.verdict == "promote" and "sign test on the first" not in both.reason
    few = decide(_counts(15, 0, 985), TrialConfig(max_searches=1000))  # p_sign tiny, but 15 < min_decided 20
    assert few.verdict == "drop" and few.p_value <= 0.05 and "only 15 decided searches counted, fewer than trial.min_decided 20" in few.reason
    assert "without evidence" not in few.reason and "too few interleaved searches got a click" in few.reason
    capped = decide(TrialCounts(searches=1000, wins=15, losses=0, ties=0, repeats=30), TrialConfig(max_searches=1000))
    assert capped.verdict == "drop" and "each query counts in at most 5, so too few distinct queries were decided" in capped.reason


def _live_trial(rt, coins: int, **trial: object):  # type: ignore[no-untyped-def]
    """Feedback a candidate can learn, a query-tier refresh that starts its trial (``trial.*`` overrides), seeded coins."""
    play(rt)
    rt.config = rt.config.with_overrides({f"trial.{k}": v for k, v in {"share": 1.0, **trial}.items()})
    rep = rt.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    rt.server.rng = random.Random(coins)
    return rep


def test_the_budgets_sign_test_reads_the_first_max_searches_searches_of_the_log(workspace):
    """Through the public API: the trial wins every decided search of its first 30, then loses every
    decided search of the next 30. The budget's sign test, on the first 30 only, promotes; all 60
    together are even."""
    rep = _live_trial(workspace, 3, max_searches=30, min_decided=10)
    first = play_trial(workspace, 30, "trial", seed=1, text="router question {}")
    status = workspace.trial()
    assert status["verdict"] == "promote" and status["losses"] == 0 and status["wins"] == first["clicks"] >= 10
    play_trial(workspace, 30, "serving", seed=2, text="router question late {}")
    status = workspace.trial()  # read only: nothing decided yet
    assert status["searches"] == 60 and status["wins"] == first["clicks"] and status["losses"] >= 10
    assert status["p_sign"] == pytest.approx(sign_test(first["clicks"], 0), abs=1e-6) and status["p_value"] <= 0.05
    assert status["verdict"] == "promote" and f"sign test on the first 30: {first['clicks']} wins, 0 losses" in status["reason"]
    done = workspace.decide_trial()
    assert done is not None and done["verdict"] == "promote" and workspace.current_version == rep.version


def test_evidence_is_symmetric_monotone_and_one_at_the_start():
    assert evidence(0, 0) == pytest.approx((1.0, 1.0))
    for w, n_lost in [(3, 1), (10, 4), (30, 31), (100, 80)]:
        better, worse = evidence(w, n_lost)
        assert (worse, better) == pytest.approx(evidence(n_lost, w), rel=1e-9)
        assert evidence(w + 1, n_lost)[0] > better and evidence(w, n_lost + 1)[0] < better
    d = decide(_counts(14, 6), TrialConfig())
    assert d.p_value == pytest.approx(min(1.0, 2 / d.evidence_better))
    data = d.to_dict()
    assert {"verdict", "reason", "wins", "losses", "ties", "searches", "decided", "p_value", "evidence_better", "evidence_worse", "p_sign"} <= set(data)
    assert data["decided"] == 20
    # no overflow on a long trial
    better, worse = evidence(5000, 4000)
    assert math.isfinite(better) and better > 1e20 and 0 <= worse < 0.01
    assert evidence(3000, 0)[0] == pytest.approx(math.exp(700.0))  # capped, never inf


def _promotion_rate(verdict_of: Callable[[int, int], str], horizon: int, win_rate: float = 0.5) -> float:
    """P(promoted at any look within ``horizon`` decided searches) when each is won with ``win_rate``, by dynamic programming.

    ``verdict_of(wins, losses)`` is "promote", "drop" or "continue" after each search.
    """
    p_promote = 0.0
    alive = {(0, 0): 1.0}  # (wins, losses) -> probability of being there, still running
    for _ in range(horizon):
        nxt: dict[tuple[int, int], float] = {}
        for (w, lost), p in alive.items():
            for state, q in (((w + 1, lost), win_rate), ((w, lost + 1), 1 - win_rate)):
                nxt[state] = nxt.get(state, 0.0) + p * q
        alive = {}
        for (w, lost), p in nxt.items():
            verdict = verdict_of(w, lost)
            if verdict == "promote":
                p_promote += p
            elif verdict == "continue":
                alive[(w, lost)] = p
    return p_promote


def _exact_promotion_rate(cfg: TrialConfig, horizon: int, win_rate: float = 0.5) -> float:
    return _promotion_rate(lambda w, lost: decide(_counts(w, lost), cfg).verdict, horizon, win_rate)


@pytest.fixture()
def cached_evidence(monkeypatch):
    """The test's arithmetic is pure: cache it so that thousands of trials of hundreds of looks stay fast."""
    from ragtune import trial

    monkeypatch.setattr(trial, "evidence", functools.lru_cache(maxsize=None)(trial.evidence))


@pytest.mark.parametrize(("alpha", "min_decided"), [(0.05, 1), (0.05, 20), (0.2, 1)])
def test_exact_false_promotion_rate_under_optional_stopping(cached_evidence, alpha, min_decided):
    # the sequential half alone (the budget never reached) spends at most alpha / 2 ...
    sequential = _exact_promotion_rate(TrialConfig(alpha=alpha, min_decided=min_decided, max_searches=10_000), horizon=240)
    assert 0 < sequential <= alpha / 2
    # ... and with the budget's sign test at the horizon, the whole test stays within alpha
    cfg = TrialConfig(alpha=alpha, min_decided=min_decided, max_searches=240)
    rate = _exact_promotion_rate(cfg, horizon=240)
    assert sequential < rate <= alpha
    # a naive test looked at after every search is what this guards against: a one-sided z-test at
    # the same level, checked as often, promotes far more often than alpha
    z = {0.05: 1.645, 0.2: 0.8416}[alpha]
    naive = functools.partial(_naive_rate, z=z, horizon=240, min_decided=min_decided)
    assert naive() > 2 * alpha


def test_a_weak_preference_gets_a_fair_chance_within_the_budget(cached_evidence):
    """A trial users prefer 56:44, with 400 decided searches in its budget, is promoted more often than
    not; one they prefer 70:30 is promoted nearly always, long before the budget."""
    cfg = TrialConfig(max_searches=400)
    assert _exact_promotion_rate(cfg, horizon=400, win_rate=0.56) > 0.5
    assert _exact_promotion_rate(TrialConfig(max_searches=10_000), horizon=120, win_rate=0.7) > 0.95


def _naive_rate(z: float, horizon: int, min_decided: int) -> float:
    def verdict(w: int, lost: int) -> str:
        n = w + lost
        return "promote" if n >= min_decided and (w - n / 2) / math.sqrt(n / 4) > z else "continue"

    return _promotion_rate(verdict, horizon)


def test_random_clicks_promote_at_no_more_than_alpha(cached_evidence):
    """2000 seeded trials whose every interleaved search is a fair coin (a fifth tied or unclicked),
    decided after every search up to trial.max_searches: at most alpha of them are promoted."""
    cfg = TrialConfig(alpha=0.05, min_decided=1, max_searches=250)
    rng = random.Random(20261201)
    n_trials = 2000
    verdicts = {"promote": 0, "drop": 0, "continue": 0}
    for _ in range(n_trials):
        c = TrialCounts()
        while True:
            c.searches += 1
            u = rng.random()
            if u < 0.2:
                c.ties += 1
            elif u < 0.6:
                c.wins += 1
            else:
                c.losses += 1
            verdict = decide(c, cfg).verdict
            if verdict != "continue":
                break
        verdicts[verdict] += 1
    assert verdicts["continue"] == 0  # every trial ends by max_searches
    share = verdicts["promote"] / n_trials
    tolerance = 3 * math.sqrt(cfg.alpha * (1 - cfg.alpha) / n_trials)
    assert share <= cfg.alpha + tolerance, verdicts
    # and the test still does something: a trial users prefer 65:35 is promoted nearly always
    better = 0
    for _ in range(200):
        c = TrialCounts()
        while True:
            c.searches += 1
            if rng.random() < 0.65:
                c.wins += 1
            else:
                c.losses += 1
            verdict = decide(c, cfg).verdict
            if verdict != "continue":
                break
        better += verdict == "promote"
    assert better >= 180


def test_uninformative_users_never_promote_a_trial(workspace):
    """A live trial, and users who each click one shown result picked at random: looked at every 25
    searches and at the budget's end, the trial is never promoted; its wins and losses are a coin's."""
    play(workspace)
    workspace.config = workspace.config.with_overrides({"trial.share": 1.0, "trial.max_searches": 200, "trial.min_decided": 10})
    rep = workspace.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    workspace.server.rng = random.Random(0)  # the interleaving's coins
    for start in range(0, 200, 25):
        got = play_trial(workspace, 25, "random", seed=start, text=f"router question {start} {{}}")
        assert got["interleaved"] == 25 and got["clicks"] == 25
        status = workspace.trial()
        assert status is not None and status["verdict"] != "promote", status["reason"]
        if status["verdict"] == "drop":
            break
    status = workspace.trial()
    # one click a search: never a tie (a click on a result both rankings agree on credits nobody)
    assert status["searches"] >= 25 and status["wins"] + status["losses"] <= status["searches"] and status["ties"] == 0
    assert status["wins"] + status["losses"] >= status["searches"] // 2
    done = workspace.decide_trial()
    assert done is not None and done["verdict"] == "drop"
    assert workspace.current_version == "v0001" and workspace.ws.read_trial() is None
    assert workspace.ws.read_version(rep.version).trial["state"] == "dropped"


def test_share_of_searches_interleaved(workspace):
    play(workspace)
    workspace.config = workspace.config.with_overrides({"trial.share": 0.5})
    rep = workspace.refresh(mode="query")
    assert rep.status == "trial_started" and rep.trial["share"] == 0.5
    workspace.server.rng = random.Random(1)
    got = play_trial(workspace, 200, None)
    interleaved = sum(1 for r in workspace.feedback.records() if r.trial == rep.trial["id"])
    assert 70 <= interleaved <= 130 and got["searches"] == 200
    assert workspace.trial()["searches"] == interleaved


def _search(text: str, outcome: str, first_choice: float | None = None) -> TrialSearch:
    """One interleaved search of ``text`` whose click credits ``outcome``: "win", "loss", "tie" or "none"."""
    teams = {"a": "trial", "b": "serving", "c": "shared"}
    chosen = {"win": {"a"}, "loss": {"b"}, "tie": {"a", "b"}, "none": {"c"}}[outcome]
    return TrialSearch(text, teams, chosen, first_choice)


def test_one_query_counts_in_at_most_its_first_decided_searches():
    assert MAX_DECIDED_PER_QUERY == 5
    # ties and unclicked searches do not use a query's count; spelling variants are one query
    bot = [_search("reset the Router", "tie"), _search("reset the router", "none")]
    bot += [_search(t, "win") for t in ["reset the router", "Reset  the router", " reset the ROUTER"] * 10]
    others = [_search(f"question {i}", "loss") for i in range(4)] + [_search("question 0", "loss")] * 2
    counts = tally(bot + others)
    assert (counts.searches, counts.wins, counts.losses, counts.ties, counts.repeats) == (38, 5, 6, 1, 25)
    # the first decided searches count, whichever way they went
    counts = tally([_search("q", "loss")] * 5 + [_search("q", "win")] * 50)
    assert (counts.wins, counts.losses, counts.repeats) == (0, 5, 50)
    d = decide(counts, TrialConfig())
    assert d.verdict == "continue" and "50 more decided searches of repeated queries not counted" in d.reason
    assert d.to_dict()["repeats"] == 50
    assert tally([_search("q", "win")] * 3, max_per_query=1).wins == 1
    # a late click on an early search does not take a counted search's place: slots go by first choice
    late = [_search("q", "win", first_choice=100.0)] + [_search("q", "loss", first_choice=float(t)) for t in range(5)]
    assert (tally(late).wins, tally(late).losses, tally(late).repeats) == (0, 5, 1)
    with pytest.raises(ValueError, match="max_per_query must be a positive integer, got 0"):
        tally([], max_per_query=0)


def test_random_clicks_on_repeated_queries_promote_at_no_more_than_alpha(cached_evidence):
    """1000 seeded trials of 250 interleaved searches, queries drawn with Zipf popularity (one query a
    seventh of the traffic) and every decided search a fair coin, looked at every 25 searches: the
    per-query count keeps the false-promotion rate within alpha."""
    cfg = TrialConfig(alpha=0.05, min_decided=1, max_searches=250)
    rng = random.Random(20261207)
    n_trials, promoted = 1000, 0
    for t in range(n_trials):
        texts = draw_sessions([f"q{i}" for i in range(800)], cfg.max_searches, seed=t)
        searches = [_search(text, rng.choice(["win", "loss", "win", "loss", "none"])) for text in texts]
        for end in range(25, cfg.max_searches + 1, 25):
            verdict = decide(tally(searches[:end]), cfg).verdict
            if verdict != "continue":
                break
        promoted += verdict == "promote"
    tolerance = 3 * math.sqrt(cfg.alpha * (1 - cfg.alpha) / n_trials)
    assert promoted / n_trials <= cfg.alpha + tolerance


def test_a_bot_repeating_one_query_cannot_decide_a_trial(workspace):
    """Through the public API: 120 searches of one query, each clicking the trial's result, count as 5
    decided searches; users asking many queries with the same preference promote the trial."""
    _live_trial(workspace, 5)
    bot = play_trial(workspace, 120, "trial", seed=1, text="router question 7")
    status = workspace.trial()
    assert bot["clicks"] > 40 and status["losses"] == 0
    assert status["wins"] == MAX_DECIDED_PER_QUERY and status["repeats"] == bot["clicks"] - MAX_DECIDED_PER_QUERY
    assert status["verdict"] == "continue", status["reason"]
    users = play_trial(workspace, 60, "trial", seed=2, text="router question late {}")
    status = workspace.trial()
    assert status["wins"] == MAX_DECIDED_PER_QUERY + users["clicks"] and status["verdict"] == "promote", status["reason"]


def test_the_budgets_sign_test_counts_each_query_in_its_first_decided_searches_too(workspace):
    """Through the public API: the budget's first 30 searches repeat one query, each clicking the
    trial's result; the sign test at the budget counts 5 of them, not every one."""
    _live_trial(workspace, 5, max_searches=30, min_decided=5)
    bot = play_trial(workspace, 30, "trial", seed=1, text="router question 7")
    assert bot["clicks"] > 10
    play_trial(workspace, 10, "serving", seed=2, text="router question late {}")
    status = workspace.trial()
    assert status["searches"] == 40 and status["p_sign"] == pytest.approx(sign_test(MAX_DECIDED_PER_QUERY, 0), abs=1e-6)
    assert status["verdict"] != "promote", status["reason"]
