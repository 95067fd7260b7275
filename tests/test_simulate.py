"""The click simulator (ragtune.simulate) against a fake search engine: fast, no model, no workspace."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import pytest

from ragtune.errors import ConfigError, InputError
from ragtune.simulate import CLICK_MODEL_PRESETS, ClickModel, click_model, draw_sessions, simulate_users

N_DOCS = 20


class FakeHit:
    def __init__(self, doc_id: str, rank: int) -> None:
        self.doc_id = doc_id
        self.rank = rank


class FakeResults(list[FakeHit]):
    def __init__(self, hits: list[FakeHit], query_id: str | None) -> None:
        super().__init__(hits)
        self.query_id = query_id


class FakeRT:
    """Query ``qN`` shows docs ``d(3N)``, ``d(3N+1)``, ... (mod N_DOCS); each logged search gets a new id ``sK``."""

    def __init__(self, n_hits: int | None = None, logged: bool = True) -> None:
        self.n_hits = n_hits
        self.logged = logged
        self.searches = 0
        self.asked: list[str] = []
        self.ks: list[int] = []
        self.clicks: list[tuple[str, str]] = []
        self.click_ranks: list[int] = []
        self._ranks: dict[str, dict[str, int]] = {}

    def search(self, query: str, k: int = 10, *, log: bool | None = None) -> FakeResults:
        assert log is True
        self.searches += 1
        self.asked.append(query)
        self.ks.append(k)
        start = int(query[1:]) * 3
        n = min(k, N_DOCS) if self.n_hits is None else self.n_hits
        hits = [FakeHit(f"d{(start + i) % N_DOCS}", i + 1) for i in range(n)]
        qid = f"s{self.searches}" if self.logged else None
        if qid is not None:
            self._ranks[qid] = {h.doc_id: h.rank for h in hits}
        return FakeResults(hits, qid)

    def click(self, query_id: str, doc_id: str) -> None:
        self.clicks.append((query_id, doc_id))
        self.click_ranks.append(self._ranks[query_id][doc_id])


def play(rt: FakeRT, qids: list[str], model: ClickModel | None, qrels: dict[str, dict[str, int]] | None = None) -> dict[str, int]:
    return simulate_users(cast(Any, rt), QUERIES, QRELS if qrels is None else qrels, qids, model)


QUERIES = {f"q{i}": f"q{i}" for i in range(6)}
QRELS = {f"q{i}": {f"d{(i * 3 + j) % N_DOCS}": 1 for j in (0, 2, 5)} for i in range(6)}  # relevant at ranks 1, 3, 6
QIDS = ["q0", "q1", "q2", "q3", "q4", "q5", "q0", "q0", "q3"]

# Recorded from the simulator as it was before users/trust/p_stop existed (same fake, same qids).
PBM_SEED0 = [
    ("s1", "d0"),
    ("s2", "d3"),
    ("s3", "d6"),
    ("s4", "d9"),
    ("s4", "d11"),
    ("s5", "d12"),
    ("s5", "d14"),
    ("s6", "d15"),
    ("s7", "d0"),
    ("s8", "d0"),
    ("s9", "d9"),
]
PBM_SEED7 = [
    ("s1", "d0"), ("s1", "d2"), ("s1", "d5"), ("s2", "d3"), ("s2", "d8"), ("s3", "d6"), ("s3", "d11"), ("s4", "d9"),
    ("s5", "d12"), ("s5", "d14"), ("s6", "d15"), ("s7", "d0"), ("s7", "d2"), ("s8", "d0"), ("s8", "d5"), ("s9", "d9"),
]  # fmt: skip
PBM_CUSTOM = [
    ("s1", "d0"), ("s1", "d3"), ("s1", "d5"), ("s2", "d3"), ("s2", "d4"), ("s3", "d6"), ("s3", "d8"), ("s4", "d11"), ("s4", "d14"),
    ("s6", "d15"), ("s6", "d17"), ("s6", "d2"), ("s7", "d2"), ("s7", "d7"), ("s8", "d0"), ("s8", "d3"), ("s9", "d9"), ("s9", "d11"),
]  # fmt: skip


# -- pbm: backward compatible ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "expected", "noise"),
    [
        (None, PBM_SEED0, 0),
        (ClickModel(), PBM_SEED0, 0),
        (ClickModel(seed=7), PBM_SEED7, 0),
        (click_model("pbm", 7), PBM_SEED7, 0),
        (ClickModel(seed=3, eta=0.5, p_noise=0.3, p_relevant=0.8, top_k=8), PBM_CUSTOM, 5),
    ],
)
def test_pbm_reproduces_the_original_clicks(model: ClickModel | None, expected: list[tuple[str, str]], noise: int) -> None:
    rt = FakeRT()
    out = play(rt, QIDS, model)
    assert rt.clicks == expected
    assert out["sessions"] == len(QIDS) and rt.searches == len(QIDS)
    assert out["clicks"] == len(expected) and out["noise_clicks"] == noise and out["relevant_clicks"] == len(expected) - noise


def test_pbm_defaults_are_unchanged() -> None:
    m = ClickModel()
    assert (m.top_k, m.eta, m.p_relevant, m.p_noise, m.seed, m.users, m.trust) == (10, 1.0, 0.9, 0.05, 0, "pbm", 0.0)
    assert ClickModel(5, 2.0, 0.5, 0.1, 3) == ClickModel(top_k=5, eta=2.0, p_relevant=0.5, p_noise=0.1, seed=3)


def test_repeated_qids_are_separate_sessions_and_are_asked_top_k() -> None:
    rt = FakeRT()
    out = play(rt, ["q2"] * 5, ClickModel(top_k=4, seed=1))
    assert out["sessions"] == 5 and rt.asked == ["q2"] * 5 and rt.ks == [4] * 5
    assert {qid for qid, _ in rt.clicks} <= {f"s{i}" for i in range(1, 6)}


# -- uninformative -----------------------------------------------------------------------------------
def test_uninformative_clicks_exactly_once_per_search() -> None:
    rt = FakeRT()
    out = play(rt, QIDS * 20, click_model("uninformative", 4))
    assert out["clicks"] == out["sessions"] == len(QIDS) * 20
    assert Counter(qid for qid, _ in rt.clicks) == Counter({f"s{i}": 1 for i in range(1, rt.searches + 1)})
    assert out["relevant_clicks"] + out["noise_clicks"] == out["clicks"]
    assert out["noise_clicks"] > 0 and out["relevant_clicks"] > 0  # whatever the relevance


def test_uninformative_clicks_are_uniform_over_ranks() -> None:
    n = 5000
    rt = FakeRT()
    play(rt, ["q1"] * n, ClickModel(users="uninformative", seed=11))
    counts = Counter(rt.click_ranks)
    assert set(counts) == set(range(1, 11))
    expected = n / 10
    chi2 = sum((counts[r] - expected) ** 2 / expected for r in range(1, 11))
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001


def test_uninformative_with_short_and_empty_results() -> None:
    rt = FakeRT(n_hits=3)
    out = play(rt, ["q0"] * 300, ClickModel(users="uninformative", seed=2))
    assert out["clicks"] == 300 and set(rt.click_ranks) == {1, 2, 3}
    rt = FakeRT(n_hits=0)
    out = play(rt, ["q0"] * 10, ClickModel(users="uninformative", seed=2))
    assert out["sessions"] == 10 and out["clicks"] == 0 and rt.clicks == []


# -- cascade -------------------------------------------------------------------------------------------
def test_cascade_never_clicks_below_a_stop() -> None:
    # p_stop 1: every click ends the scan, so each search has at most one click, on the first result clicked.
    rt = FakeRT()
    out = play(rt, QIDS * 30, ClickModel(users="cascade", p_stop=1.0, p_noise=0.2, seed=5))
    per_search = Counter(qid for qid, _ in rt.clicks)
    assert out["clicks"] > 0 and max(per_search.values()) == 1
    # All relevant are clicked (p_relevant 1) and the scan stops: the click is never below rank 1 (relevant).
    rt = FakeRT()
    play(rt, QIDS * 30, ClickModel(users="cascade", p_stop=1.0, p_relevant=1.0, p_noise=0.0, seed=5))
    assert rt.click_ranks and set(rt.click_ranks) == {1}


def test_cascade_continues_after_a_click_without_stop_and_stops_after_top_k() -> None:
    rt = FakeRT()
    play(rt, ["q0"] * 50, ClickModel(users="cascade", p_stop=0.0, p_relevant=1.0, p_noise=0.0, seed=5))
    assert Counter(rt.click_ranks) == Counter({1: 50, 3: 50, 6: 50})  # every relevant doc, every search
    rt = FakeRT(n_hits=15)  # a search returning more than asked: ranks past top_k are never looked at
    play(rt, ["q0"] * 50, ClickModel(users="cascade", top_k=4, p_stop=0.0, p_relevant=1.0, p_noise=1.0, seed=5))
    assert Counter(rt.click_ranks) == Counter({r: 50 for r in range(1, 5)})


def test_cascade_stop_probability_cuts_later_clicks() -> None:
    def clicks_below_rank_1(p_stop: float) -> int:
        rt = FakeRT()
        play(rt, ["q0"] * 400, ClickModel(users="cascade", p_stop=p_stop, p_relevant=1.0, p_noise=0.0, seed=9))
        return sum(r > 1 for r in rt.click_ranks)

    low, high = clicks_below_rank_1(0.2), clicks_below_rank_1(0.8)
    # expected: 2 * 400 * (1 - p) * ... ; p 0.2 -> ~ 400 * 0.8 * (1 + 0.8) = 576, p 0.8 -> ~ 400 * 0.2 * 1.2 = 96
    assert 450 < low < 700 and 50 < high < 150


# -- trust bias --------------------------------------------------------------------------------------
@pytest.mark.parametrize("users", ["pbm", "cascade"])
def test_trust_bias_raises_noise_clicks_at_rank_1_vs_rank_10(users: str) -> None:
    qrels: dict[str, dict[str, int]] = {}  # nothing relevant: every click is noise

    def noise_at(trust: float) -> Counter[int]:
        rt = FakeRT()
        out = play(rt, ["q0"] * 3000, ClickModel(users=users, trust=trust, p_noise=0.1, eta=0.0, p_stop=0.0, seed=13), qrels)
        assert out["relevant_clicks"] == 0 and out["noise_clicks"] == out["clicks"]
        return Counter(rt.click_ranks)

    off, on = noise_at(0.0), noise_at(1.0)
    # off: ~300 at every rank. on (trust 1): rank 1 at 0.1 * 2 = 0.2 -> ~600, rank 10 at 0.1 * 1.1 = 0.11 -> ~330.
    assert abs(off[1] - off[10]) < 90
    assert on[1] > 1.5 * on[10] and on[1] > 1.5 * off[1]
    assert 500 < on[1] < 700 and 260 < on[10] < 400


def test_noise_formula() -> None:
    m = ClickModel(p_noise=0.1, trust=1.0)
    assert m.noise(1) == pytest.approx(0.2) and m.noise(10) == pytest.approx(0.11)
    assert ClickModel(p_noise=0.1).noise(1) == 0.1
    assert ClickModel(p_noise=0.8, trust=4.0).noise(1) == 1.0  # capped


def test_trust_cascade_preset() -> None:
    m = click_model("trust-cascade", 3)
    assert (m.users, m.trust, m.p_noise, m.p_relevant, m.p_stop, m.seed) == ("cascade", 1.0, 0.1, 0.9, 0.7, 3)
    assert click_model("uninformative", 5).users == "uninformative"
    assert set(CLICK_MODEL_PRESETS) == {"pbm", "trust-cascade", "uninformative"}
    for name in CLICK_MODEL_PRESETS:
        a, b = FakeRT(), FakeRT()
        play(a, QIDS, click_model(name, 8))
        play(b, QIDS, click_model(name, 8))
        assert a.clicks == b.clicks  # seeded


# -- robustness ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("users", ["pbm", "cascade", "uninformative"])
def test_unlogged_searches_get_no_clicks(users: str) -> None:
    rt = FakeRT(logged=False)
    out = play(rt, QIDS, ClickModel(users=users, p_noise=1.0, p_relevant=1.0, eta=0.0))
    assert rt.searches == len(QIDS) and rt.clicks == []
    assert out["sessions"] == len(QIDS) and out["clicks"] == 0 and out["unlogged_sessions"] == len(QIDS)


@pytest.mark.parametrize("users", ["pbm", "cascade"])
def test_short_results(users: str) -> None:
    rt = FakeRT(n_hits=2)
    out = play(rt, QIDS, ClickModel(users=users, p_noise=1.0, p_relevant=1.0, eta=0.0, p_stop=0.0))
    assert out["clicks"] == 2 * len(QIDS) and set(rt.click_ranks) == {1, 2}


def test_unknown_query_id() -> None:
    with pytest.raises(InputError, match="'nope'"):
        play(FakeRT(), ["q0", "nope"], None)


# -- sessions ----------------------------------------------------------------------------------------------
def test_zipf_sessions_repeat_popular_qids() -> None:
    qids = [f"q{i}" for i in range(100)]
    sessions = draw_sessions(qids, 2000, seed=1)
    assert len(sessions) == 2000 and set(sessions) <= set(qids)
    counts = Counter(sessions)
    top = counts.most_common(1)[0][1]
    # weight of the most popular with s = 1 over 100 qids: 1 / H(100) ~ 0.19 -> ~385 of 2000
    assert 300 < top < 470
    assert sum(c for _, c in counts.most_common(10)) > 0.5 * 2000  # the top tenth asked more than half the time
    assert sum(1 for q in qids if counts[q] <= 20) > 50  # most rarely (uniform would give each 20)
    steeper = Counter(draw_sessions(qids, 2000, zipf_s=2.0, seed=1)).most_common(1)[0][1]
    assert steeper > top


def test_zipf_sessions_are_deterministic_per_seed() -> None:
    qids = [f"q{i}" for i in range(50)]
    a = draw_sessions(qids, 300, seed=4)
    assert a == draw_sessions(qids, 300, seed=4)
    assert a == draw_sessions(list(reversed(qids)) + qids[:5], 300, seed=4)  # only the set of qids counts
    assert a != draw_sessions(qids, 300, seed=5)
    assert draw_sessions(qids, 0, seed=4) == [] and draw_sessions([], 0, seed=4) == []


def test_zipf_sessions_play() -> None:
    sessions = draw_sessions(list(QUERIES), 40, seed=2)
    rt = FakeRT()
    out = play(rt, sessions, click_model("trust-cascade", 2))
    assert out["sessions"] == 40 and rt.asked == sessions


# -- validation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"p_relevant": 1.5}, "p_relevant"),
        ({"p_relevant": -0.1}, "p_relevant"),
        ({"p_noise": 2}, "p_noise"),
        ({"p_noise": float("nan")}, "p_noise"),
        ({"p_stop": -1.0}, "p_stop"),
        ({"users": "dbn"}, "users"),
        ({"trust": -0.5}, "trust"),
        ({"trust": float("inf")}, "trust"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"eta": -1.0}, "eta"),
    ],
)
def test_bad_click_model_raises(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        ClickModel(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and repr(next(iter(kwargs.values()))) in msg


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(ConfigError, match="'pbm', 'cascade', 'uninformative'"):
        ClickModel(users="dbn")


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        click_model("cascade-ish", 0)
    msg = str(info.value)
    assert "\n" not in msg and "'cascade-ish'" in msg
    for name in CLICK_MODEL_PRESETS:
        assert repr(name) in msg


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        ((["q0"], -1), {}, "n_sessions"),
        ((["q0"], 5), {"zipf_s": 0.0}, "zipf_s"),
        ((["q0"], 5), {"zipf_s": -1.0}, "zipf_s"),
        ((["q0"], 5), {"zipf_s": float("nan")}, "zipf_s"),
        (([], 5), {}, "empty"),
        (("q0", 5), {}, "string"),
    ],
)
def test_bad_sessions_raise(args: tuple[Any, ...], kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        draw_sessions(*args, seed=0, **kwargs)
    assert "\n" not in str(info.value)
