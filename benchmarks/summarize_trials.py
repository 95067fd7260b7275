"""Summarise the closed-loop trial runs: one markdown row per JSON, and the targets' roll-up.

    python benchmarks/summarize_trials.py benchmarks/results/trials/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: Settings whose removal changed what a run with the same command does: a run whose config still has
#: one was made by the older rule, and its row says so.
RETIRED_RULES = {("feedback", "propensity_eta"): "1/rank position curve (retired)"}


#: A document-side run whose offline checks do not record their ``bar`` was made when a LoRA/full
#: candidate had to be ahead of the serving model offline to be tried at all.
DOC_CHECK_AHEAD = "doc-side check asked for a gain (retired)"


#: A run with trials none of which records ``repeats`` (nor names them in its reason) was made when
#: every interleaved search counted, before a query counted in at most 5 decided searches of a trial.
EVERY_SEARCH = "every search counted (retired)"


#: A run whose mining reports do not record ``searches_with_choice`` was made when a training pair
#: weighed the mean of its document's click weights, before it weighed the share of its query's
#: searches that chose the document (the click memory's votes alike).
PER_DOCUMENT = "pair weight a mean per document (retired)"


def _counted_per_query(trial: dict) -> bool:
    return "repeats" in trial or "repeated queries not counted" in trial.get("reason", "")


def overrides(run: dict) -> str:
    """The run's ``--set`` overrides, and any retired rule it ran under; ``defaults`` if none."""
    out = [a for a in run["command"].split() if "=" in a]
    config = run.get("config", {})
    out += [label for (section, key), label in RETIRED_RULES.items() if key in config.get(section, {})]
    checks = [r["check"] for r in run.get("rounds", []) if r.get("check") and r["check"].get("candidate") in ("lora", "full")]
    checked = config.get("gate", {}).get("confidence", 1) != 0  # with the check off its rule did not matter
    if run.get("mode") in ("lora", "full") and checked and checks and not any("bar" in c for c in checks):
        out.append(DOC_CHECK_AHEAD)
    if run.get("trials") and not any(_counted_per_query(t) for t in run["trials"]):
        out.append(EVERY_SEARCH)
    mined = [r["mined"] for r in run.get("rounds", []) if r.get("mined")]
    if mined and not any("searches_with_choice" in m for m in mined):
        out.append(PER_DOCUMENT)
    if run.get("complete") is False:
        out.append(f"stopped after round {run['rounds_done']}")
    return " ".join(out) or "defaults"


def main() -> None:
    rows = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    rows = [r for r in rows if "users" in r]
    print("| mode | users | seed | overrides | final test nDCG@10 (gain) | cold change | trials: promoted / dropped | promoted worse on test | interleaved searches to each decision | plain reference (`--reference`) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["mode"], r["users"], r["command"], r["seed"])):
        over = overrides(r)
        trials = r["trials"]
        promoted = sum(t["verdict"] == "promote" for t in trials)
        dropped = sum(t["verdict"] == "drop" for t in trials)
        decided = ", ".join(f"{t['searches']}{'P' if t['verdict'] == 'promote' else 'D'}" for t in trials) or "-"
        ref = r.get("reference")
        reference = f"{ref['ndcg@10']:.4f} (final {r['final']['ndcg@10'] - ref['ndcg@10']:+.4f})" if ref else "-"
        print(
            f"| {r['mode']} | {r['users']} | {r['seed']} | {over} | {r['final']['ndcg@10']:.4f} ({r['gain']:+.4f} {r['gain_ci95']}) | {r['cold_change']:+.4f} | "
            f"{promoted} / {dropped} | {r['n_promotions_worse_on_test']} | {decided} | {reference} |"
        )
    by: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        over = overrides(r)
        by.setdefault((r["mode"], r["users"], over), []).append(r)
    print()
    for (mode, users, over), rs in sorted(by.items()):
        gains = [r["gain"] for r in rs]
        colds = [r["cold_change"] for r in rs]
        n_prom = sum(r["n_promotions"] for r in rs)
        worse = sum(r["n_promotions_worse_on_test"] for r in rs)
        print(f"- {mode}, {users} users ({over}), {len(rs)} seeds: mean gain {sum(gains) / len(gains):+.4f}, mean cold change {sum(colds) / len(colds):+.4f}, {n_prom} promotions, {worse} worse on test")


if __name__ == "__main__":
    main()
