"""Fault injection: a real `ragtune` child process is paused at each named stage of index, refresh and
trial (the test-only ``RAGTUNE_FAULT_PAUSE`` hook of :mod:`ragtune.faults`) and killed there with
SIGKILL. Then: serving is intact and answering, the next command works, nothing is left behind, and
``refresh-log.jsonl`` holds every decision exactly once (none lost, none doubled)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ragtune import Ragtune
from ragtune.doctor import diagnose
from ragtune.faults import STAGES
from tests.conftest import play, play_trial

# the command each stage is reached by, and the base workspace it starts from
JOBS: dict[str, tuple[str, list[str]]] = {
    "index.loaded": ("indexed", ["index", "{extra}"]),
    "index.embedded": ("indexed", ["index", "{extra}"]),
    "index.staged": ("indexed", ["index", "{extra}"]),
    "index.swapped": ("indexed", ["index", "{extra}"]),
    "refresh.trained": ("played", ["refresh", "--mode", "query"]),
    "refresh.staged": ("played", ["refresh", "--mode", "query"]),
    "refresh.swapped": ("played", ["refresh", "--mode", "query", "--no-trial"]),
    "trial.started": ("played", ["refresh", "--mode", "query"]),
    "trial.started@won": ("played", ["refresh", "--mode", "query"]),  # then users prefer the trial before the next refresh
    "trial.promoted": ("won", ["trial", "decide"]),
    "trial.labelled": ("won", ["trial", "decide"]),
    "trial.logged": ("won", ["trial", "decide"]),
    "trial.labelled@stop": ("live", ["trial", "stop"]),
    "trial.logged@stop": ("live", ["trial", "stop"]),
}


def test_every_stage_has_a_job():
    assert {j.split("@")[0] for j in JOBS} == set(STAGES)


@pytest.fixture()
def bases(workspace, tmp_path):  # type: ignore[no-untyped-def]
    """Workspaces at the starting points: indexed, with feedback, with a live trial, with a trial users preferred."""
    rt = workspace
    rt.config = rt.config.with_overrides({"trial.share": 1.0, "gate.confidence": 0.0})
    rt.config.save(rt.ws.config_path)
    out = {}

    def snap(name: str) -> None:
        rt.feedback.close()
        out[name] = tmp_path / f"base-{name}"
        shutil.copytree(rt.ws.root, out[name])

    snap("indexed")
    play(rt)
    snap("played")
    rep = rt.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    snap("live")
    play_trial(rt, 40, "trial")
    assert rt.trial()["verdict"] == "promote"  # type: ignore[index]
    snap("won")
    return out


def _decisions_once(ws_root: Path) -> None:
    rt = Ragtune(ws_root, progress=False)
    log = rt.ws.read_log()
    ids = Counter(e["decision"] for e in log if e.get("decision"))
    assert all(n == 1 for n in ids.values()), ids
    for v in rt.ws.list_versions():
        if v.decision:
            assert v.decision["decision"] in ids, f"{v.name}'s decision was lost"
    for event in ("trial_started", "trial_promoted", "trial_dropped"):
        per_trial = Counter(e.get("trial") for e in log if e["event"] == event and e.get("trial"))
        assert all(n == 1 for n in per_trial.values()), (event, per_trial)
    marks = Counter(json.dumps(e["mark"], sort_keys=True) for e in log if e.get("mark") and e["event"] in ("trial_started", "promoted", "refresh_refused"))
    assert all(n == 1 for n in marks.values()), f"the same feedback was trained on twice: {marks}"


def test_kill_minus_nine_at_every_stage(bases, tmp_path, docs_jsonl):
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "extra-1", "text": "a brand new document about modems"}) + "\n", encoding="utf-8")
    runs: dict[str, tuple[Path, subprocess.Popen[bytes], Path]] = {}
    for job, (base, args) in JOBS.items():
        ws = tmp_path / f"ws-{job}"
        shutil.copytree(bases[base], ws)
        flags = tmp_path / f"flags-{job}"
        env = {**os.environ, "RAGTUNE_FAULT_PAUSE": job.split("@")[0], "RAGTUNE_FAULT_DIR": str(flags), "TQDM_DISABLE": "1"}
        cmd = [sys.executable, "-m", "ragtune.cli", "-q", "-w", str(ws), *(a.format(extra=extra) for a in args)]
        runs[job] = (ws, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), flags)
    deadline = time.time() + 300
    for job, (_ws, proc, flags) in runs.items():
        stage = job.split("@")[0]
        while not (flags / stage).exists():
            if proc.poll() is not None:
                pytest.fail(f"{job}: the command ended (rc {proc.returncode}) before reaching the stage: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            assert time.time() < deadline, f"{job}: stage never reached"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    for job, (ws, _proc, _flags) in runs.items():
        base, args = JOBS[job]
        before = Ragtune(bases[base], progress=False).current_version
        rt = Ragtune(ws, progress=False)
        # serving intact and answering, logged or not, at once after the kill
        assert rt.current_version in {before, "v0002", "v0003"}, job
        for log in (True, False):
            assert len(rt.search("reset the router", k=3, log=log)) == 3, job
        # the next command works: the killed one again, then a refresh
        if args[0] == "index":
            rep = rt.index([extra])
            assert rt.search("modems", k=1, log=False)[0].doc_id == "extra-1", job
            assert rep.n_docs == 9
        elif args[0] == "trial":
            rt.decide_trial()
            assert rt.ws.read_trial() is None, job
        if job == "trial.started@won":  # the half-started trial is live: users' clicks decide it as any other
            play_trial(rt, 40, "trial")
            rep = rt.refresh(mode="query")
            assert rep.settled and rep.settled["verdict"] == "promote", (job, rep.to_dict())
            assert rt.current_version == "v0002" and rt.ws.read_version("v0002").trial["state"] == "promoted", job
            assert len(rt.search("reset the router", k=3)) == 3
        rt.refresh(mode="query")
        # no leftovers, a consistent log, a healthy workspace
        assert not list(rt.ws.versions_dir.glob(".tmp-*")) and not rt.ws.work_dir.exists(), job
        _decisions_once(ws)
        report = diagnose(ws)
        assert report.healthy, (job, report.to_dict())
        if job.startswith("trial.") and "stop" not in job and job != "trial.started":  # the users' verdict stands
            assert rt.ws.read_version("v0002").trial["state"] == "promoted", job
