"""Team-draft interleaving: properties over many random rankings, and the credit of one search."""

from __future__ import annotations

import random

import pytest

from ragtune.interleave import SERVING, SHARED, TRIAL, credit, team_draft

DOCS = [f"d{i}" for i in range(30)]


def _rankings(rng: random.Random) -> tuple[list[str], list[str], int]:
    """Two rankings without duplicates (overlapping, disjoint, nested or equal; of different lengths) and a k."""
    kind = rng.choice(["overlap", "disjoint", "equal", "nested", "shuffled", "empty"])
    a = rng.sample(DOCS, rng.randint(1, 15))
    if kind == "disjoint":
        rest = [d for d in DOCS if d not in a]
        b = rng.sample(rest, rng.randint(1, min(15, len(rest))))
    elif kind == "equal":
        b = list(a)
    elif kind == "nested":
        b = a[: rng.randint(1, len(a))]
    elif kind == "shuffled":
        b = rng.sample(a, len(a))
    elif kind == "empty":
        a, b = (a, []) if rng.random() < 0.5 else ([], a)
    else:
        b = rng.sample(a, rng.randint(0, len(a))) + rng.sample([d for d in DOCS if d not in a], rng.randint(0, 8))
        rng.shuffle(b)
    if rng.random() < 0.5:
        a, b = b, a
    union = len(set(a) | set(b))
    k = rng.choice([1, 2, 3, max(1, union // 2), union, union + 3, 50])
    return a, b, k


def _common_prefix(a: list[str], b: list[str], k: int) -> int:
    n = 0
    while n < min(k, len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize("common_prefix", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_team_draft_properties_over_random_rankings(seed, common_prefix):
    rng = random.Random(seed)
    for _ in range(250):
        a, b, k = _rankings(rng)
        if common_prefix and rng.random() < 0.5:  # rankings that agree on their first few
            head = [f"h{j}" for j in range(rng.randint(1, 3))]
            a, b = head + a, head + b
        out = team_draft(a, b, k, random.Random(rng.random()), common_prefix=common_prefix)
        docs = [d for d, _ in out]
        union = set(a) | set(b)
        assert len(docs) == len(set(docs)), "no duplicates"
        assert len(out) == min(k, len(union))
        assert set(docs) <= union
        # the common prefix first, as it is, credited to neither team (plain team-draft: none)
        n_shared = _common_prefix(a, b, k) if common_prefix else 0
        assert out[:n_shared] == [(d, SHARED) for d in a[:n_shared]]
        for team, ranking in ((SERVING, a), (TRIAL, b)):
            mine = [d for d, t in out if t == team]
            assert all(d in ranking for d in mine), "a team only places its own ranking's docs"
            pos = [ranking.index(d) for d in mine]
            assert pos == sorted(pos), "each team's docs appear in the order of its ranking"
        # as many positions as the shorter ranking has past the prefix are drafted: a team picks its
        # highest-ranked document not already picked, fewer picks first (ties: the coin); the rest is shared
        drafted = min(k, len(a), len(b)) - n_shared if n_shared <= min(len(a), len(b)) else 0
        picked = set(docs[:n_shared])
        count = {SERVING: 0, TRIAL: 0}
        for i, (d, team) in enumerate(out[n_shared:], n_shared):
            if i >= n_shared + drafted:
                assert team == SHARED, f"position {i}: drafted past the shorter ranking's length"
                assert d == next(x for x in [*a, *b] if x not in picked), "the fill takes the serving ranking's remaining docs first"
                picked.add(d)
                continue
            assert team in (SERVING, TRIAL), f"position {i}: not drafted within the shorter ranking's length"
            ranking = a if team == SERVING else b
            assert d == next(x for x in ranking if x not in picked)
            other = TRIAL if team == SERVING else SERVING
            assert count[team] <= count[other], f"position {i}: {team} picked with more picks than {other}"
            picked.add(d)
            count[team] += 1
        if k >= len(union):
            assert set(docs) == union  # the list runs until both rankings are used up
        # the serving ranking's top half of the shown length is always shown
        assert set(a[: len(out) // 2]) <= set(docs)


def test_the_shorter_rankings_length_is_drafted_and_the_rest_credits_nobody():
    for seed in range(20):
        out = team_draft(["a"], ["b", "c", "d", "e"], 10, random.Random(seed))
        assert out[0] in (("a", SERVING), ("b", TRIAL))  # one position drafted: the coin's
        assert [t for _, t in out[1:]] == [SHARED] * 4 and {d for d, _ in out} == set("abcde")
    # a bot that clicks everything, or always the last result, wins nothing by a longer list
    wins = {"win": 0, "loss": 0, "tie": 0, "none": 0}
    rng = random.Random(3)
    for _ in range(2000):
        out = team_draft(["p", "q"], list("cdefgh"), 6, rng)
        wins[credit(dict(out), [out[-1][0]])] += 1
        wins[credit(dict(out), [d for d, _ in out][2:])] += 1
    assert wins["win"] == wins["loss"] == 0
    # equal rankings: all shared; plain team-draft alternates the teams down the shared list
    assert team_draft(list("abcd"), list("abcd"), 4, random.Random(1)) == [(d, SHARED) for d in "abcd"]
    out = team_draft(list("abcd"), list("abcd"), 4, random.Random(1), common_prefix=False)
    assert [d for d, _ in out] == list("abcd") and [t for _, t in out].count(SERVING) == 2
    # the prefix stops at the first disagreement and never runs past k
    assert team_draft(list("abcx"), list("abyz"), 2, random.Random(0)) == [("a", SHARED), ("b", SHARED)]
    assert [t for _, t in team_draft(list("abcx"), list("abyz"), 6, random.Random(0))][:2] == [SHARED, SHARED]
    assert team_draft([], [], 5, random.Random(0)) == []
    assert team_draft(["a", "b"], ["c"], 0, random.Random(0)) == []


def test_rank_one_comes_from_each_team_about_half_the_time():
    rng = random.Random(7)
    n = 4000
    first = {SERVING: 0, TRIAL: 0}
    three = {SERVING: 0, TRIAL: 0}  # which team gets the extra pick of an odd-length list
    for _ in range(n):
        out = team_draft(["s1", "s2", "s3", "x", "s4"], ["t1", "x", "t2", "t3", "t4"], 5, rng)
        first[out[0][1]] += 1
        teams = [t for _, t in out]
        three[SERVING if teams.count(SERVING) == 3 else TRIAL] += 1
    # binomial(4000, 0.5): sd ~ 32; 5 sd either side
    assert abs(first[SERVING] - n / 2) < 160
    assert abs(three[SERVING] - n / 2) < 160
    # the same rankings, the same coins: the same list
    assert team_draft(list("abc"), list("cba"), 3, random.Random(5)) == team_draft(list("abc"), list("cba"), 3, random.Random(5))


class _Coins(random.Random):
    """Plays a fixed sequence of coin flips (``random()`` below or above one half)."""

    def __init__(self, bits: tuple[int, ...]) -> None:
        super().__init__(0)
        self.bits = iter(bits)

    def random(self) -> float:
        return 0.25 if next(self.bits) else 0.75


@pytest.mark.parametrize("seed", range(4))
def test_clicks_that_depend_only_on_positions_credit_both_teams_alike_exactly(seed):
    """Over every sequence of coin flips, any set of clicked positions wins as often as it loses.

    Exact, not sampled: rankings of different lengths and contents (where a ranking runs short of
    unpicked documents mid-draft), any k; clicks on one or several positions.
    """
    import itertools

    rng = random.Random(seed)
    for _ in range(60):
        pool = [f"d{i}" for i in range(7)]
        a = rng.sample(pool, rng.randint(1, 5))
        b = rng.sample(pool, rng.randint(1, 5))
        k = rng.randint(1, 6)
        lists = [team_draft(a, b, k, _Coins(bits)) for bits in itertools.product((0, 1), repeat=k)]
        for size in range(1, k + 1):
            for clicked in itertools.combinations(range(k), size):
                tally = {"win": 0, "loss": 0, "tie": 0, "none": 0}
                for out in lists:
                    tally[credit(dict(out), [out[i][0] for i in clicked if i < len(out)])] += 1
                assert tally["win"] == tally["loss"], (a, b, k, clicked, tally)


def test_a_document_both_rank_first_is_shared_or_drafted():
    """Both rankings put x first: shown first, credited to neither; plain team-draft gives it to the coin's winner."""
    seen = set()
    for seed in range(40):
        out = dict(team_draft(["x", "s"], ["x", "t"], 3, random.Random(seed)))
        assert out["x"] == SHARED and sorted([out["s"], out["t"]]) in ([SERVING, SHARED], [SHARED, TRIAL])  # one position left to draft
        assert dict(team_draft(["x", "s", "u"], ["x", "t", "v"], 3, random.Random(seed))) == {"x": SHARED, "s": SERVING, "t": TRIAL}
        plain = dict(team_draft(["x", "s"], ["x", "t"], 3, random.Random(seed), common_prefix=False))
        assert set(plain) == {"x", "s", "t"} and plain["s"] in (SERVING, SHARED) and plain["t"] in (TRIAL, SHARED)
        seen.add(plain["x"])
    assert seen == {SERVING, TRIAL}
    # agreement further down is not a prefix: drafted as usual
    out = dict(team_draft(["s", "x", "u"], ["t", "x", "v"], 3, random.Random(0)))
    assert SHARED not in out.values()


@pytest.mark.parametrize(
    ("chosen", "outcome"),
    [
        ([], "none"),
        (["t1"], "win"),
        (["s1"], "loss"),
        (["t1", "s1"], "tie"),
        (["t1", "t2", "s1"], "win"),
        (["s1", "s2", "t1"], "loss"),
        (["t1", "t1", "t1", "s1", "s2"], "loss"),  # repeats count once
        (["s1", "s1", "t1"], "tie"),
        (["unshown"], "none"),  # a document that was not shown credits nobody
        (["unshown", "other", "t1"], "win"),
        (["s1", "unshown", "unshown2"], "loss"),
        (["x"], "none"),  # a shared result credits nobody
        (["x", "y", "t1"], "win"),
        (["x", "s1"], "loss"),
    ],
)
def test_credit(chosen, outcome):
    teams = {"x": SHARED, "y": SHARED, "t1": TRIAL, "t2": TRIAL, "s1": SERVING, "s2": SERVING}
    assert credit(teams, chosen) == outcome
    assert credit(teams, iter(chosen)) == outcome  # any iterable


def test_credit_of_a_search_with_no_team_info():
    """An impression logged without a team (not interleaved) credits nobody."""
    assert credit({"a": None, "b": "serving"}, ["a"]) == "none"  # type: ignore[dict-item]
    assert credit({}, ["a"]) == "none"
