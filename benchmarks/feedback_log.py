"""Feedback-log throughput and durability: 4 processes write 40,000 events at once.

    python benchmarks/feedback_log.py [--events 40000] [--procs 4] [--out benchmarks/results/feedback_log.json]

Each event is one durable SQLite (WAL) transaction through the public FeedbackLog API: a query
with 10 impressions, or a click. Reports events/s and checks that the final counts equal what was
written.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from ragtune.feedback import FeedbackLog, Impression


def writer(path: str, n_events: int, tag: int, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)
    log = FeedbackLog(path)
    imps = [Impression(f"doc{r}", r, 1.0 - r / 20) for r in range(1, 11)]
    qid = None
    for i in range(n_events):
        if i % 2 == 0:
            qid = log.log_query(f"query {tag}-{i}", imps, version="v0001")
        else:
            assert qid is not None
            log.click(qid, "doc3")
    log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "feedback_log.json")
    args = ap.parse_args()
    per = args.events // args.procs
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "feedback.sqlite")
        FeedbackLog(path).stats()
        ctx = mp.get_context("spawn")
        start = time.time() + 2.0
        procs = [ctx.Process(target=writer, args=(path, per, t, start)) for t in range(args.procs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.time() - start
        stats = FeedbackLog(path).stats()
    written = per * args.procs
    counted = stats["queries"] + stats["clicks"]
    result = {
        "command": "python benchmarks/feedback_log.py " + " ".join(sys.argv[1:]),
        "processes": args.procs,
        "events_written": written,
        "events_counted": counted,
        "impressions_counted": stats["impressions"],
        "lost": written - counted,
        "seconds": round(elapsed, 2),
        "events_per_s": round(written / elapsed, 1),
        "target_events_per_s": 5000,
        "ok": counted == written and all(p.exitcode == 0 for p in procs),
        "machine": "2 CPU cores",
        "note": "each event is its own transaction (BEGIN IMMEDIATE ... COMMIT), WAL, synchronous=NORMAL; a query event also writes 10 impressions",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
