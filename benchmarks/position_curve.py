"""Does an assumed position-bias curve help when the log has no randomised traffic? (dev split only)

    python benchmarks/position_curve.py --dataset ../shared/datasets/scifact --users pbm,trust-cascade \
        --seeds 0,1,2 --out benchmarks/results/dev/position_curve.json

For each kind of simulated users and seed, users ask two thirds of the *train* queries
(``closed_loop.dev_split``; ``--sessions`` searches with Zipf popularity, all under the base model)
and the other third judges: the test split is never consulted. From that one log, ``refresh --mode
query --no-trial`` makes one query-tier candidate per variant of the propensities that weight each
click (``1 / propensity(rank)``): ``none`` (ragtune's rule without randomised traffic: every
propensity 1) and the curves ``(1 / rank) ** eta`` for each ``--eta`` (the rule ragtune had before,
with eta 1 as its default). The curves are put in place by wrapping the public
``ragtune.mining.estimate_propensities``. ``gate.confidence`` is 0 so that every candidate is made
and measured; the offline check's figures (cross-fitted log-likelihood of the held-out clicks,
candidate against serving) are recorded beside its dev nDCG@10. Writes the JSON with this command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from closed_loop import dev_comparison, dev_parser, patched_query_refresh, write_dev_result  # the script's own folder is on sys.path

import ragtune.mining
from ragtune import Ragtune
from ragtune.simulate import click_model

_ESTIMATE = ragtune.mining.estimate_propensities


def use_curve(eta: float | None) -> None:
    """Make mining weight clicks by ``(1 / rank) ** eta`` (``None``: ragtune's own estimate)."""
    if eta is None:
        ragtune.mining.estimate_propensities = _ESTIMATE
        return
    exponent = float(eta)

    def curve(records: Any, max_rank: int = 100) -> tuple[np.ndarray, str]:
        ranks = np.arange(1, max_rank + 1, dtype=np.float64)
        return np.clip((1.0 / ranks) ** exponent, ragtune.mining.PROPENSITY_CLIP, 1.0), f"curve (1/rank)^{exponent:g}"

    ragtune.mining.estimate_propensities = curve


def main() -> None:
    ap = dev_parser(__doc__, "pbm,trust-cascade", 1200)
    ap.add_argument("--eta", default="1,0.5", help="Curves to compare with 'none'.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    variants: list[float | None] = [None] + [float(e) for e in args.eta.split(",")]

    def with_curve(eta: float | None) -> Callable[[Ragtune], Any]:
        return patched_query_refresh(lambda: use_curve(eta), lambda: use_curve(None))

    rows = dev_comparison(
        args.dataset, args.users.split(","), [int(x) for x in args.seeds.split(",")], args.sessions, "position-curve", click_model,
        {("none" if eta is None else f"eta={eta:g}"): with_curve(eta) for eta in variants},
        lambda report: {"click_noise_source": report.mined.get("click_noise_source")},
    )  # fmt: skip
    write_dev_result(args.out, rows, args.users.split(","), t0)

if __name__ == "__main__":
    main()
