"""Peak resident memory (RSS) of a LoRA and of a full refresh, each in its own process.

    python benchmarks/refresh_memory.py --dataset ../shared/datasets/scifact --sessions 600 \
        [--modes lora,full] [--set train.batch_size=64 ...] [--out benchmarks/results/refresh_memory.json]

Each run keeps its own command (a second invocation with ``--modes full`` replaces only the full run).
Indexes ``--dataset`` with the default model once (cached under benchmarks/work/, as closed_loop.py
does), plays ``--sessions`` searches of its *train* queries (Zipf popularity, position-based
simulated users: ``ragtune.simulate``) into a copy, then for each mode runs one forced refresh in a
fresh Python process (``--child``) on a fresh copy of that clicked workspace, with ``gate.confidence``
0 so that every candidate is staged and the corpus re-embedded (the step that holds the corpus
matrix). A thread samples the child's RSS every 10 ms and keeps the peak per stage: ``load``
(imports, opening the workspace), ``mine``, ``train``, ``offline_check``, ``reembed`` (the corpus
encode), ``write_version`` (vectors.npy, the faiss index), ``other``; the process's own
``ru_maxrss`` is the overall peak. The stages are found by wrapping public functions of the child's
ragtune modules. Records wall time per refresh, the refresh report's figures (train/re-embed seconds,
the offline-check numbers, a quality cross-check on the dev split), and the exact command.

The held-out figure of the offline check (``check``: nDCG@10 on held-out feedback queries of the
candidate vs the serving model) is the quality guard: a memory fix must not lower it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent


class StagePeaks:
    """Samples this process's RSS in a thread; keeps the peak of each named stage."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.stage = "load"
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self._entered = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = self._proc.memory_info().rss / 2**20
        if rss > self.peaks.get(self.stage, 0.0):
            self.peaks[self.stage] = rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def enter(self, stage: str) -> str:
        self._sample()
        now = time.perf_counter()
        self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + now - self._entered
        self._entered = now
        previous, self.stage = self.stage, stage
        self._sample()
        return previous

    def wrap(self, owner: Any, name: str, stage: str, *, only_from: str | None = None) -> None:
        """Replace ``owner.name`` with a wrapper that counts its time as ``stage`` (only when called from ``only_from``, if given)."""
        fn = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if only_from is not None and self.stage != only_from:
                return fn(*args, **kwargs)
            previous = self.enter(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self.enter(previous)

        setattr(owner, name, wrapper)


def child(workspace: Path, mode: str, out: Path) -> None:
    """One forced refresh of ``workspace`` in ``mode``; writes its figures to ``out``."""
    peaks = StagePeaks()
    peaks.start()
    t0 = time.perf_counter()
    import ragtune.refresh
    import ragtune.training.sentence
    from ragtune import Ragtune
    from ragtune.embedder import Embedder
    from ragtune.workspace import Workspace

    rt = Ragtune(workspace, progress=False)
    rt.serving()
    peaks.wrap(ragtune.refresh, "mine", "mine")
    peaks.wrap(ragtune.training.sentence, "train_sentence_model", "train")
    peaks.wrap(ragtune.refresh, "score_candidate", "offline_check")
    peaks.wrap(Embedder, "encode_documents", "reembed", only_from="other")
    peaks.wrap(Workspace, "write_version", "write_version")
    peaks.enter("other")
    t_refresh = time.perf_counter()
    report = rt.refresh(mode=mode, force=True)
    refresh_wall = time.perf_counter() - t_refresh
    peaks.enter("done")
    peaks.stop()
    ru_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    import torch

    gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None  # GPU memory is not in the RSS
    data = {
        "mode": mode,
        "peak_rss_mib": round(ru_mib, 1),
        "peak_cuda_allocated_mib": None if gpu_mib is None else round(gpu_mib, 1),
        "stage_peak_rss_mib": {k: round(v, 1) for k, v in peaks.peaks.items() if k != "done"},
        "stage_seconds": {k: round(v, 1) for k, v in peaks.seconds.items()},
        "refresh_wall_s": round(refresh_wall, 1),
        "process_wall_s": round(time.perf_counter() - t0, 1),
        "status": report.status,
        "train_s": round(report.train_s, 1),
        "reembed_s": round(report.reembed_s, 1),
        "check": report.check.to_dict() if report.check else None,
        "mined": report.mined,
        "n_docs": len(rt.serving().docs),
    }
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")


def clicked_workspace(dataset: Path, sessions: int, seed: int, overrides: list[str]) -> Path:
    """The indexed corpus with ``sessions`` simulated searches and their clicks logged (cached)."""
    from closed_loop import base_workspace, user_split  # the script's own folder is on sys.path

    from ragtune import Ragtune, RagtuneConfig
    from ragtune.evaluate import load_beir_queries
    from ragtune.simulate import ClickModel, draw_sessions, simulate_users

    path = HERE / "work" / f"memory-{dataset.name}-n{sessions}-s{seed}"
    if (path / "clicked.json").is_file():
        return path
    base_workspace(dataset, path)
    rt = Ragtune(path, progress=False)
    qids, train, _ = user_split(dataset, "dev", seed)  # users ask two thirds of the train queries; the test split stays unseen
    got = simulate_users(rt, load_beir_queries(dataset), train, draw_sessions(qids, sessions, seed=seed), ClickModel(seed=seed))
    (path / "clicked.json").write_text(json.dumps(got) + "\n")
    del rt
    RagtuneConfig().save(path / "config.json")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--sessions", type=int, default=600, help="Simulated searches before the refresh.")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=JSON", help="Config override for the refreshes (repeatable).")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "refresh_memory.json")
    ap.add_argument("--child", nargs=3, metavar=("WORKSPACE", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], Path(args.child[2]))
        return
    if args.dataset is None:
        ap.error("--dataset is required")

    from ragtune import RagtuneConfig

    clicked = clicked_workspace(args.dataset, args.sessions, args.seed, args.overrides)
    overrides: dict[str, Any] = {"gate.confidence": 0.0}  # every candidate is staged: the re-embedding is measured
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    command = "python benchmarks/" + Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:])
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    modes = args.modes.split(",")
    runs = [r for r in previous.get("runs", []) if r.get("mode") not in modes]  # the other modes' runs are kept
    for mode in modes:
        work = HERE / "work" / f"memory-run-{mode}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(clicked, work)
        RagtuneConfig.load(work / "config.json").with_overrides(overrides).save(work / "config.json")
        out = work.with_suffix(".json")
        t = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(work), mode, str(out)], check=True)
        run = json.loads(out.read_text())
        run["child_wall_s"] = round(time.perf_counter() - t, 1)
        run["command"] = command
        run["overrides"] = overrides
        run["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
        runs.append(run)
        print(f"{mode}: peak RSS {run['peak_rss_mib']:.0f} MiB; stages {run['stage_peak_rss_mib']}; refresh {run['refresh_wall_s']}s ({run['status']})", flush=True)
        shutil.rmtree(work, ignore_errors=True)
        out.unlink()
    result = {
        "command": command,
        "dataset": args.dataset.name,
        "sessions": args.sessions,
        "clicks": json.loads((clicked / "clicked.json").read_text()),
        "runs": sorted(runs, key=lambda r: str(r["mode"])),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
    }
    try:
        import torch

        result["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a hard dependency
        result["cuda"] = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
