"""Do repeated clicks on the same result outweigh the per-rank click-noise posterior? (dev split only)

    python benchmarks/repeat_trust.py --dataset ../shared/datasets/scifact --users pbm,trust-cascade,deep \
        --seeds 0,1,2 --out benchmarks/results/dev/repeat_trust.json

The click-noise correction (``ragtune.mining.click_trust``) reads the noise rate from the deepest
ranks, so a click there is mostly read as noise, even when users keep opening the same deep result
for the same query. ``ragtune.mining.repeat_trusted`` keeps the clicks of a (query, document) pair
whole when it was clicked in more of its query's searches than the noise rate explains. This
compares one query-tier candidate made without that rule (``ragtune.mining.REPEAT_LEVEL = 0``) and
one with it, from the same log.

For each kind of simulated users and seed, users ask two thirds of the *train* queries
(``closed_loop.dev_split``; ``--sessions`` searches with Zipf popularity, all under the base model)
and the other third judges: the test split is never consulted. Users: ``pbm`` and
``trust-cascade`` (``ragtune.simulate`` presets) and ``deep``: users who look at every shown result
and open the relevant ones wherever they are (position-based with ``eta`` 0), with the same 5%
click noise as ``pbm``. ``gate.confidence`` is 0 so that every candidate is made and measured.
Writes the JSON with this command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from closed_loop import dev_comparison, dev_parser, patched_query_refresh, write_dev_result  # the script's own folder is on sys.path

import ragtune.mining
from ragtune import Ragtune
from ragtune.simulate import ClickModel, click_model


def users_model(users: str, seed: int) -> ClickModel:
    if users == "deep":
        return ClickModel(seed=seed, users="pbm", eta=0.0, p_noise=0.05, p_relevant=0.9)
    return click_model(users, seed)


def main() -> None:
    ap = dev_parser(__doc__, "pbm,trust-cascade,deep", 600)
    args = ap.parse_args()
    t0 = time.perf_counter()
    default_level = ragtune.mining.REPEAT_LEVEL

    def at_level(level: float) -> Callable[[Ragtune], Any]:
        return patched_query_refresh(lambda: setattr(ragtune.mining, "REPEAT_LEVEL", level), lambda: setattr(ragtune.mining, "REPEAT_LEVEL", default_level))

    rows = dev_comparison(
        args.dataset, args.users.split(","), [int(x) for x in args.seeds.split(",")], args.sessions, "repeat-trust", users_model,
        {"per-rank posterior only": at_level(0.0), f"repeated pairs kept whole (level {default_level:g})": at_level(default_level)},
        lambda report: {"untrusted_clicks": report.mined.get("untrusted_clicks"), "repeat_trusted_pairs": report.mined.get("repeat_trusted_pairs")},
    )  # fmt: skip
    write_dev_result(args.out, rows, args.users.split(","), t0)

if __name__ == "__main__":
    main()
