"""Load on `ragtune serve`: N concurrent keep-alive clients on loopback doing searches and feedback.

    python benchmarks/serve_load.py [--model tiny|default] [--clients 8] [--searches 2000] [--feedback 6000]
        [--seconds 60] [--out benchmarks/results/serve_load.json]

The service is the real thing: `ragtune serve` in its own process (uvicorn, one loaded model),
over a workspace holding examples/data/scifact-mini (455 docs), with the bundled default model or
a tiny random 2-layer BERT (`--model tiny`: the HTTP layer's cost, not the model's). Clients are
separate processes (no shared GIL with each other), each with one keep-alive HTTP/1.1 connection.
Every phase is bounded by a request count and by `--seconds`.

Phases and what they report:

1. ``empty``: one client, sequential ``GET /health``: the HTTP round trip of an endpoint that does nothing.
2. ``in_process``: ``Ragtune.search`` in this process on the same queries (logged, as the service logs them).
3. ``search_sequential``: one client, sequential ``POST /search``: p50 to compare with in-process p50 + the empty round trip
   (target: within 1.3x).
4. ``search_concurrent``: N clients searching at once: requests/s, p50/p99.
5. ``feedback``: N clients posting clicks and ratings with fresh feedback ids (plus 10% re-posts of an
   id already sent, which must come back ``duplicate``): posts/s, p50/p99 (target: >= 300/s).
6. ``mixed``: N clients each searching then clicking a hit, as an app's users do.

Then the log is read: every feedback answered ``recorded`` must be in it once (``lost`` = answered
recorded but not in the log; ``extra`` = in the log more often than answered), and no ``duplicate`` adds a row.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "data" / "scifact-mini"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _ms(values: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": None if not values else round(1000 * statistics.median(values), 3),
        "p99_ms": None if not values else round(1000 * (_pct(values, 99) or 0.0), 3),
        "mean_ms": None if not values else round(1000 * statistics.fmean(values), 3),
    }


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None


def _client(args: tuple[str, int, int, float, int, list[Any]]) -> dict[str, Any]:
    """One client process: run ``n`` requests of phase ``kind`` (or until ``deadline``); latencies and outcomes."""
    kind, port, n, deadline, seed, items = args
    rng = random.Random(seed)
    conn = _Conn(port)
    lat: list[float] = []
    out: dict[str, Any] = {"lat": lat, "errors": 0, "status": {}, "recorded": [], "duplicates": 0, "qids": [], "first": None, "last": None}
    sent: list[dict[str, Any]] = []
    out["first"] = time.time()
    for i in range(n):
        if time.time() > deadline:
            break
        t0 = time.perf_counter()
        if kind == "empty":
            status, _ = conn.call("GET", "/health")
        elif kind == "search":
            status, body = conn.call("POST", "/search", {"query": items[i % len(items)], "k": 10})
            if status == 200:
                out["qids"].append([body["query_id"], [h["doc_id"] for h in body["hits"]]])
        elif kind == "feedback":
            if sent and rng.random() < 0.1:  # a client retrying an event it already sent
                ev = rng.choice(sent)
            else:
                qid, docs = items[rng.randrange(len(items))]
                ev = {"query_id": qid, "doc_id": rng.choice(docs[:5]), "feedback_id": f"s{seed}-{i}"}
                ev.update({"type": "click", "dwell": round(rng.uniform(1, 60), 2)} if rng.random() < 0.8 else {"type": "rating", "value": rng.choice([1, -1])})
            status, body = conn.call("POST", "/feedback", ev)
            if status == 200:
                if body["recorded"]:
                    out["recorded"].append(ev["feedback_id"])
                    sent.append(ev)
                else:
                    out["duplicates"] += 1
        else:  # mixed: a user searches, then clicks a hit
            status, body = conn.call("POST", "/search", {"query": items[i % len(items)], "k": 10})
            if status == 200 and body["hits"]:
                ev = {"query_id": body["query_id"], "doc_id": body["hits"][min(len(body["hits"]) - 1, rng.randrange(3))]["doc_id"], "type": "click", "feedback_id": f"m{seed}-{i}"}
                s2, b2 = conn.call("POST", "/feedback", ev)
                if s2 == 200 and b2["recorded"]:
                    out["recorded"].append(ev["feedback_id"])
                status = status if s2 == 200 else s2
        lat.append(time.perf_counter() - t0)
        out["status"][str(status)] = out["status"].get(str(status), 0) + 1
        if status != 200:
            out["errors"] += 1
    out["last"] = time.time()
    return out


def _phase(pool: Any, kind: str, port: int, clients: int, total: int, seconds: float, items: list[Any], seed: int) -> dict[str, Any]:
    per = max(1, total // clients)
    deadline = time.time() + seconds
    t0 = time.perf_counter()
    results = pool.map(_client, [(kind, port, per, deadline, seed * 1000 + c, items[c::clients] or items) for c in range(clients)])
    wall = time.perf_counter() - t0
    lat = [x for r in results for x in r["lat"]]
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    status: dict[str, int] = {}
    for r in results:
        for k, v in r["status"].items():
            status[k] = status.get(k, 0) + v
    return {
        "clients": clients,
        "requests": len(lat),
        "seconds": round(span, 3),
        "wall_seconds": round(wall, 3),
        "requests_per_s": round(len(lat) / span, 1) if span > 0 else None,
        **_ms(lat),
        "status": status,
        "errors": sum(r["errors"] for r in results),
        "_results": results,
    }


def _strip(phase: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in phase.items() if not k.startswith("_")}


def _workspace(root: Path, model: str) -> tuple[Path, str]:
    from ragtune import Ragtune, RagtuneConfig

    overrides: dict[str, Any] = {"feedback.randomize_prob": 0.0}
    if model == "tiny":
        sys.path.insert(0, str(ROOT))
        from tests.conftest import make_tiny_model

        overrides["model.name"] = str(make_tiny_model(root / "tiny-model"))
    ws = root / "ws"
    rt = Ragtune.init(ws, RagtuneConfig().with_overrides(overrides), progress=False)
    rt.index([CORPUS])
    return ws, rt.serving().spec.label()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["tiny", "default"], default="default")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--searches", type=int, default=2000, help="Searches in each search phase (at most).")
    ap.add_argument("--feedback", type=int, default=6000, help="Feedback posts (at most).")
    ap.add_argument("--mixed", type=int, default=1000, help="Search-then-click rounds in the mixed phase (at most).")
    ap.add_argument("--sequential", type=int, default=300, help="Requests of each one-client phase.")
    ap.add_argument("--seconds", type=float, default=60.0, help="Time bound of each phase.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args()

    from ragtune import Ragtune

    queries = [json.loads(line)["text"] for line in (CORPUS / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="ragtune-serve-load-"))
    proc = None
    try:
        ws, model_label = _workspace(tmp, args.model)
        rt = Ragtune(ws, progress=False)
        # in-process search on the same queries, logged like the service's (warm first)
        for q in queries[:10]:
            rt.search(q, k=10)
        inproc: list[float] = []
        for i in range(args.sequential):
            t0 = time.perf_counter()
            rt.search(queries[i % len(queries)], k=10)
            inproc.append(time.perf_counter() - t0)
        base = rt.feedback.stats()

        port = _free_port()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        env.pop("RAGTUNE_API_KEY", None)
        cmd = [sys.executable, "-m", "ragtune.cli", "-q", "-w", str(ws), "serve", "--port", str(port), "--no-access-log"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 180
        while True:
            try:
                if _Conn(port).call("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"ragtune serve did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)

        ctx = mp.get_context("spawn")
        with ctx.Pool(args.clients) as pool:
            pool.map(_client, [("empty", port, 20, time.time() + 30, c, []) for c in range(args.clients)])  # start the workers, warm the server
            empty = _phase(pool, "empty", port, 1, args.sequential, args.seconds, [], 1)
            empty_conc = _phase(pool, "empty", port, args.clients, args.searches, args.seconds, [], 2)
            seq = _phase(pool, "search", port, 1, args.sequential, args.seconds, queries, 3)
            conc = _phase(pool, "search", port, args.clients, args.searches, args.seconds, queries, 4)
            shown = [q for r in conc["_results"] + seq["_results"] for q in r["qids"]]
            fb = _phase(pool, "feedback", port, args.clients, args.feedback, args.seconds, shown, 5)
            mixed = _phase(pool, "mixed", port, args.clients, args.mixed, args.seconds, queries, 6)
        status = _Conn(port).call("GET", "/status")[1]
        proc.terminate()
        proc.wait(30)
        proc = None

        after = rt.feedback.stats()
        recorded = [f for ph in (fb, mixed) for r in ph["_results"] for f in r["recorded"]]
        duplicates = sum(r["duplicates"] for r in fb["_results"])
        counted = (after["clicks"] - base["clicks"]) + (after["ratings"] - base["ratings"])
        ids: dict[str, int] = {}
        for e in rt.feedback.export_events():
            fid = e.get("feedback_id")
            if fid is not None:
                ids[fid] = ids.get(fid, 0) + 1
        lost = sum(1 for f in recorded if f not in ids)
        extra = sum(n - 1 for n in ids.values() if n > 1) + len(set(ids) - set(recorded))
        searches_logged = after["queries"] - base["queries"]
        searches_answered = sum(ph["status"].get("200", 0) for ph in (seq, conc)) + mixed["status"].get("200", 0)

        in_p50 = statistics.median(inproc)
        rtt_p50 = (empty["p50_ms"] or 0.0) / 1000
        budget = 1.3 * (in_p50 + rtt_p50)
        result = {
            "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
            "model": model_label,
            "model_kind": args.model,
            "n_docs": status["n_docs"],
            "clients": args.clients,
            "server": "ragtune serve --no-access-log (uvicorn, one process; OMP_NUM_THREADS=" + env["OMP_NUM_THREADS"] + ")",
            "machine": {"cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()},
            "empty_endpoint": _strip(empty),
            "empty_endpoint_concurrent": _strip(empty_conc),
            "in_process_search": {"requests": len(inproc), **_ms(inproc)},
            "search_sequential": _strip(seq),
            "search_concurrent": _strip(conc),
            "feedback": {**_strip(fb), "duplicates_answered": duplicates},
            "mixed_search_then_click": _strip(mixed),
            "log": {
                "feedback_answered_recorded": len(recorded),
                "feedback_counted_in_log": counted,
                "lost": lost,
                "extra": extra,
                "duplicate_posts_added_nothing": counted == len(recorded),
                "searches_answered": searches_answered,
                "searches_logged": searches_logged,
            },
            "targets": {
                "feedback_posts_per_s": fb["requests_per_s"],
                "feedback_posts_per_s_target": 300,
                "feedback_posts_per_s_met": (fb["requests_per_s"] or 0) >= 300,
                "lost_feedback": lost,
                "search_p50_ms": seq["p50_ms"],
                "search_p50_budget_ms": round(1000 * budget, 3),
                "search_p50_budget": "1.3 x (in-process rt.search p50 + empty-endpoint round trip p50)",
                "search_p50_met": (seq["p50_ms"] or 0) / 1000 <= budget,
                "search_p50_ratio": round((seq["p50_ms"] or 0) / 1000 / (in_p50 + rtt_p50), 3),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(result["targets"], indent=2))
        print(json.dumps(result["log"], indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
