"""A trial's life through the public API: promoted or dropped by users' clicks, ended by `index` and
`rollback`, recorded in versions() and refresh-log.jsonl, driven from the CLI, swapped under a
concurrent reader, and killed with SIGKILL at the points where its state changes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragtune import Ragtune
from ragtune.cli import main
from tests.conftest import ROUTER, play, play_trial, teams_of

ROOT = Path(__file__).resolve().parent.parent
OUTCOME_KEYS = ("wins", "losses", "ties", "searches", "p_value", "verdict", "reason")


def _start_trial(rt: Ragtune, **overrides) -> dict:
    """Feedback a query tier learns, every logged search interleaved (saved: other processes see it), a trial started."""
    rt.config = rt.config.with_overrides({"trial.share": 1.0, **overrides})
    rt.config.save(rt.ws.config_path)
    play(rt)
    rep = rt.refresh(mode="query")
    assert rep.status == "trial_started", rep.reason
    assert rep.trial is not None
    return rep.trial


@pytest.fixture()
def live(workspace):
    """The workspace with a live query-tier trial (v0002 against v0001)."""
    trial = _start_trial(workspace)
    assert trial["version"] == "v0002" and trial["baseline"] == "v0001"
    return workspace, trial


def _events(rt: Ragtune, event: str) -> list[dict]:
    return [e for e in rt.ws.read_log() if e["event"] == event]


def test_doctor_finds_nothing_to_warn_about_in_a_live_trial(live):
    rt, _ = live
    report = rt.doctor()
    assert report.healthy and not [f for f in report.findings if f.status != "ok"], report.to_dict()


def test_an_interleaved_search_logs_each_results_team(live):
    rt, trial = live
    hits = rt.search(ROUTER.format(500), k=5)
    assert hits.trial == trial["id"] and hits.version == "v0001" and len(hits) == 5
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5] and len({h.doc_id for h in hits}) == 5
    teams = teams_of(rt, hits.query_id)
    assert set(teams) == {h.doc_id for h in hits} and set(teams.values()) <= {"serving", "trial", "shared"}
    labels = [teams[h.doc_id] for h in hits]
    n_shared = labels.count("shared")
    assert labels[:n_shared] == ["shared"] * n_shared  # the rankings' common prefix comes first, credited to neither
    assert abs(labels.count("serving") - labels.count("trial")) <= 1
    # the serving ranking's own top, and each team's results in the order of its own ranking
    order = [d for d, _ in rt.search_batch([ROUTER.format(500)], k=5)[0]]
    assert [h.doc_id for h in hits[:n_shared]] == order[:n_shared]
    shown = [h.doc_id for h in hits if teams[h.doc_id] == "serving"]
    assert [order.index(d) for d in shown] == sorted(order.index(d) for d in shown)
    assert set(order[: len(hits) // 2]) <= {h.doc_id for h in hits}  # the serving top r//2 is always within the first r
    rec = next(r for r in rt.feedback.records() if r.qid == hits.query_id)
    assert rec.trial == trial["id"] and rec.version == "v0001"
    # an exported log keeps the teams
    event = next(e for e in rt.feedback.export_events() if e.get("query_id", e.get("qid")) == hits.query_id)
    assert event["trial"] == trial["id"] and all("team" in im for im in event["impressions"])


@pytest.mark.parametrize("prefer", ["trial", "serving"])
def test_users_clicks_decide_the_trial_and_every_state_is_recorded(live, prefer):
    rt, trial = live
    got = play_trial(rt, 25, prefer)
    n = got["clicks"]
    assert got["interleaved"] == 25 and n >= 20
    status = rt.trial()
    assert status["id"] == trial["id"] and status["searches"] == 25 and status["ties"] == 0
    assert (status["wins"], status["losses"]) == ((n, 0) if prefer == "trial" else (0, n))
    assert status["verdict"] == ("promote" if prefer == "trial" else "drop")
    assert rt.ws.read_trial() is not None and rt.current_version == "v0001"  # status only reads
    rep = rt.refresh(mode="query", min_new_events=10_000)  # settles the trial; too little news to train again
    assert rep.settled is not None and rep.settled["id"] == trial["id"] and rep.settled["verdict"] == status["verdict"]
    assert rep.status == "skipped" and rt.trial() is None and rt.ws.read_trial() is None
    info = rt.ws.read_version("v0002")
    rows = {v["name"]: v for v in rt.versions()}
    assert not rows["v0002"]["trial_live"] and rows["v0002"]["trial"]["state"] == info.trial["state"]
    (entry,) = _events(rt, "trial_promoted" if prefer == "trial" else "trial_dropped")
    assert entry["trial"] == trial["id"] and entry["version"] == "v0002" and entry["baseline"] == "v0001"
    assert (entry["wins"], entry["losses"], entry["ties"]) == (status["wins"], status["losses"], 0) and 0 <= entry["p_value"] <= 1
    (started,) = _events(rt, "trial_started")
    assert started["trial"] == trial["id"] and started["version"] == "v0002"
    if prefer == "trial":
        assert rt.current_version == "v0002" and info.trial["state"] == "promoted" and rows["v0002"]["current"]
        assert entry["p_value"] <= rt.config.trial.alpha and info.trial["wins"] == n
        assert rt.search(ROUTER.format(0), k=3).version == "v0002"
    else:
        assert rt.current_version == "v0001" and info.trial["state"] == "dropped" and info.discarded
        assert "users preferred the serving version" in entry["reason"]
        assert not (rt.ws.version_dir("v0002") / "query_map.safetensors").exists()


def test_index_ends_a_live_trial_and_so_does_rollback(live, docs_jsonl, tmp_path, caplog):
    rt, trial = live
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "extra-1", "text": "a brand new document about routers"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        report = rt.index([docs_jsonl, extra])
    v3 = report.version
    assert v3 == "v0003" and rt.current_version == v3 and rt.trial() is None
    # said, not only logged in refresh-log.jsonl: in the report (and its --json) and as a warning
    assert report.trial_ended is not None and report.trial_ended["id"] == trial["id"] and report.to_dict()["trial_ended"]["version"] == "v0002"
    assert any(f"trial {trial['id']} (v0002) dropped: `index` made a new serving version" in r.getMessage() for r in caplog.records)
    assert rt.ws.read_version("v0002").trial["state"] == "dropped"
    (dropped,) = _events(rt, "trial_dropped")
    assert dropped["trial"] == trial["id"] and "index" in dropped["reason"] and {"wins", "losses", "ties", "p_value"} <= set(dropped)
    assert rt.search("reset the router", k=3).trial is None
    # a trial on the new index, ended by a rollback to the version before it
    play(rt, start=100)
    rep = rt.refresh(mode="query", force=True)
    assert rep.status == "trial_started", rep.reason
    assert rep.trial["baseline"] == v3 and {v["name"]: v for v in rt.versions()}[rep.version]["trial_live"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        assert rt.rollback() == "v0001" and rt.current_version == "v0001"
    assert any(f"trial {rep.trial['id']} ({rep.version}) dropped: rollback to v0001" in r.getMessage() for r in caplog.records)
    assert rt.trial() is None and rt.ws.read_version(rep.version).trial["state"] == "dropped"
    assert "rollback" in _events(rt, "trial_dropped")[-1]["reason"]
    rows = {v["name"]: v for v in rt.versions()}
    assert not any(v["trial_live"] for v in rows.values()) and [n for n, v in rows.items() if v["current"]] == ["v0001"]
    extra.write_text(json.dumps({"id": "extra-2", "text": "another new document about modems"}) + "\n")
    again = rt.index([docs_jsonl, extra])
    assert again.written and again.trial_ended is None  # a new version with no trial live: nothing to say


def test_a_trial_whose_baseline_changed_behind_its_back_is_dropped(live):
    """Another writer made a new version current: the trial's wins were against another ranking, so it is dropped, not promoted."""
    rt, _ = live
    play_trial(rt, 25, "trial")
    assert rt.trial()["verdict"] == "promote"
    serving = rt.serving()
    with rt.ws.lock("test"):
        v3 = rt.ws.write_version(rt.config, serving.spec, kind="query", parent="v0001", index_version="v0001", note="made elsewhere")
    assert rt.current_version == v3 == "v0003"
    assert rt.search("reset", k=3).trial is None  # not interleaved against a ranking it was not tested on
    done = rt.decide_trial()
    assert done["verdict"] == "drop" and "the serving version changed from v0001 to v0003" in done["reason"]
    assert rt.current_version == "v0003" and rt.trial() is None and rt.ws.read_version("v0002").discarded


def test_cli_trial_and_refresh_no_trial(live):
    rt, trial = live
    root = str(rt.ws.root)

    def cli(*args: str):
        r = CliRunner().invoke(main, ["-q", "-w", root, *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    data = json.loads(cli("trial", "--json"))
    assert data["id"] == trial["id"] and data["verdict"] == "continue" and all(k in data for k in OUTCOME_KEYS)
    out = cli("trial")
    assert out.startswith(f"trial {trial['id']}: v0002 vs v0001 (query tier, 100% of searches)") and "undecided" in out
    assert f"trial {trial['id']}" in cli("status")
    assert f"trial {trial['id']}: v0001's ranking interleaved with the trial's" in cli("query", "router question 0")
    assert "~ v0002" in cli("versions") and "trial live" in cli("versions")
    assert json.loads(cli("trial", "decide", "--json"))["verdict"] == "continue"  # nothing to act on yet
    n = play_trial(rt, 25, "trial")["clicks"]
    assert json.loads(cli("trial", "status", "--json"))["verdict"] == "promote"
    assert "would be promoted now" in cli("trial")
    done = json.loads(cli("trial", "decide", "--json"))
    assert done["verdict"] == "promote" and done["wins"] == n
    assert json.loads(cli("trial", "--json")) is None
    assert "* v0002" in cli("versions") and f"trial promoted: {n}W/0L/0T" in cli("versions")
    # --no-trial: the next candidate is promoted at once
    play(rt, start=200)
    rep = json.loads(cli("refresh", "--mode", "query", "--no-trial", "--force", "--json"))
    assert rep["status"] in ("promoted", "refused"), rep["reason"]
    assert rep["trial"] is None and json.loads(cli("trial", "--json")) is None
    if rep["status"] == "promoted":
        assert rep["version"] == rt.ws.current_version() != "v0002" and "--no-trial" in rep["reason"]
    # and a trial can be stopped from the CLI
    play(rt, start=300)
    rep = json.loads(cli("refresh", "--mode", "query", "--force", "--json"))
    if rep["status"] == "trial_started":
        out = cli("trial", "stop")
        assert "dropped: stopped by the operator" in out and json.loads(cli("trial", "--json")) is None


def test_an_outcome_a_decision_counted_is_not_changed_by_a_later_click(live):
    """A user opens a trial result, the trial is looked at, then the user opens a serving one: still a win.

    Otherwise each look would re-flip counted searches (a win turning into a tie) and peeking often
    would raise the false-promotion rate above alpha.
    """
    rt, _ = live
    for i in range(40):
        hits = rt.search(f"router question {i}", k=5)
        teams = teams_of(rt, hits.query_id)
        if {"trial", "serving"} <= set(teams.values()):
            break
    else:
        pytest.fail("no interleaved search showed both teams")
    ours = next(h.doc_id for h in hits if teams[h.doc_id] == "trial")
    theirs = next(h.doc_id for h in hits if teams[h.doc_id] == "serving")
    rt.click(hits.query_id, ours)
    looked = rt.decide_trial()  # a look that may act: it counts this search as won
    assert looked is not None and looked["verdict"] == "continue" and (looked["wins"], looked["ties"]) == (1, 0)
    rt.click(hits.query_id, theirs)  # a minute later
    now = rt.trial()
    assert now is not None and (now["wins"], now["losses"], now["ties"]) == (1, 0, 0)
    # a search no decision has counted yet is read as it stands: one click each is a tie
    hits2 = next(h for h in (rt.search(f"router question {j}", k=5) for j in range(50, 90)) if {"trial", "serving"} <= set(teams_of(rt, h.query_id).values()))
    teams2 = teams_of(rt, hits2.query_id)
    for team in ("trial", "serving"):
        rt.click(hits2.query_id, next(h.doc_id for h in hits2 if teams2[h.doc_id] == team))
    now = rt.trial()
    assert now is not None and (now["wins"], now["losses"], now["ties"]) == (1, 0, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_workers_forked_from_one_app_flip_their_own_coins(live, tmp_path):
    """gunicorn --preload, a multiprocessing pool: a copied coin source would interleave every worker's searches alike."""
    rt, _ = live
    rt.search("warm up", k=5)  # the trial loaded before the fork, as in a preloaded app
    kids = []
    for w in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's own coverage is not collected
            try:
                layouts = []
                for j in range(12):
                    hits = rt.search(f"router question {j}", k=6)  # the same queries in every worker
                    teams = teams_of(rt, hits.query_id)
                    layouts.append("".join(teams[h.doc_id][:2] for h in hits))
                (tmp_path / f"w{w}.json").write_text(json.dumps(layouts))
            finally:
                os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    seqs = [json.loads((tmp_path / f"w{w}.json").read_text()) for w in range(3)]
    assert all(len(s) == 12 for s in seqs)
    assert seqs[0] != seqs[1] and seqs[1] != seqs[2] and seqs[0] != seqs[2]  # 12 searches alike by chance: < 2**-12


def test_a_concurrent_reader_sees_old_or_new_never_an_error(live):
    """A second Ragtune on the workspace searches in a loop while this one drops a trial, starts
    another and promotes it: every search succeeds, from the serving version of the moment."""
    rt, first = live
    reader = Ragtune(rt.ws.root, progress=False)
    seen: list[tuple[str | None, str | None, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        i = 0
        while not stop.is_set():
            try:
                hits = reader.search(ROUTER.format(1000 + i % 50), k=4, log=i % 2 == 0)
                seen.append((hits.version, hits.trial, len(hits)))
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)
            i += 1

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        assert rt.stop_trial()["verdict"] == "drop"  # a trial dropped under the reader
        time.sleep(0.3)
        rep = rt.refresh(mode="query", force=True)
        assert rep.status == "trial_started", rep.reason
        second = rep.trial
        play_trial(rt, 25, "trial", text="router trial question {}")
        assert rt.decide_trial()["verdict"] == "promote"  # promoted under the reader
        n = len(seen)
        deadline = time.time() + 30
        while (len(seen) < n + 20 or seen[-1][0] != second["version"]) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors[:3]
    assert len(seen) > 40
    assert {v for v, _, _ in seen} <= {"v0001", second["version"]}
    assert all(k == 4 for _, _, k in seen)
    assert seen[0][0] == "v0001" and seen[-1][0] == second["version"]
    assert {t for _, t, _ in seen} <= {None, first["id"], second["id"]}
    # once promoted, the reader answered from the new version and stopped interleaving
    after = seen[[v for v, _, _ in seen].index(second["version"]) :]
    assert all(v == second["version"] and t is None for v, t, _ in after)


def test_loading_a_trial_version_never_stalls_other_searches(live, monkeypatch):
    """While one thread loads the trial version (slow for a LoRA one), another thread's search is
    answered at once by the serving version, not held behind the load."""
    import ragtune.serving

    rt, trial = live
    fresh = Ragtune(rt.ws.root, progress=False)
    fresh.search("warm up the serving version", k=3, log=False)
    original = ragtune.serving.ServingVersion.__init__
    loading, release = threading.Event(), threading.Event()

    def slow_init(self, ws, config, name, share_with=None):  # type: ignore[no-untyped-def]
        if name == trial["version"]:
            loading.set()
            assert release.wait(30)
        original(self, ws, config, name, share_with)

    monkeypatch.setattr(ragtune.serving.ServingVersion, "__init__", slow_init)
    loader = threading.Thread(target=lambda: fresh.search(ROUTER.format(900), k=4), daemon=True)
    loader.start()
    assert loading.wait(30)
    done: list[object] = []
    other = threading.Thread(target=lambda: done.append(fresh.search(ROUTER.format(901), k=4)), daemon=True)
    other.start()
    other.join(20)
    served_while_loading = bool(done)
    release.set()
    loader.join(30)
    assert served_while_loading, "a search waited for the trial version to load"
    hits = done[0]
    assert hits.trial is None and len(hits) == 4 and hits.version == "v0001"  # type: ignore[attr-defined]
    assert fresh.search(ROUTER.format(902), k=4).trial == trial["id"]  # loaded: interleaving resumes


# -- SIGKILL at the points where a trial's state changes ------------------------------------------

KILLER = r"""
import json, os, signal, sys, traceback
from pathlib import Path
sys.path.insert(0, {root!r})
import sentence_transformers, torch  # imported once: each kill point runs in a child forked from here
from ragtune import Ragtune
from ragtune.workspace import Workspace

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def kill_after(name, when=lambda *a, **k: True):
    original = getattr(Workspace, name)
    def wrapped(self, *a, **k):
        out = original(self, *a, **k)
        if when(self, *a, **k):
            die()
        return out
    setattr(Workspace, name, wrapped)

def state_is(state):
    return lambda self, name, **changes: (changes.get("trial") or {{}}).get("state") == state

def run(point, ws, extra):
    rt = Ragtune(ws, progress=False)
    if point == "promote-manifest":  # CURRENT swapped and the manifest says promoted; TRIAL not removed yet
        kill_after("update_manifest", state_is("promoted")); rt.decide_trial()
    elif point == "promote-swap":  # CURRENT swapped; TRIAL not removed yet
        kill_after("set_current"); rt.decide_trial()
    elif point == "drop-manifest":  # the manifest says dropped; nothing else done
        kill_after("update_manifest", state_is("dropped")); rt.stop_trial()
    elif point == "drop-clear":  # TRIAL removed
        kill_after("clear_trial"); rt.stop_trial()
    elif point == "refresh-train":  # a refresh settled the trial and is training the next candidate
        import ragtune.training.crossfit as crossfit
        crossfit.fit_query_tier = lambda *a, **k: die()
        rt.refresh(mode="query")
    elif point == "index-stage":  # `index` is writing its version into versions/.tmp-* (it ends the trial only after)
        kill_after("write_manifest", lambda self, directory, info: Path(directory).name.startswith(".tmp-"))
        rt.index(extra)
    elif point == "searching":  # users searching and clicking, killed from outside
        with open(extra[0], "a") as out:
            i = 0
            while True:
                hits = rt.search("router question %d" % i, k=5)
                if hits.trial:
                    rec = next(r for r in rt.feedback.records() if r.qid == hits.query_id)
                    ours = [im.doc_id for im in rec.impressions if im.team == "trial"]
                    if ours:
                        rt.click(hits.query_id, ours[0])
                out.write("%d\n" % i); out.flush()
                i += 1

children = {{}}
for point, ws, *extra in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        try:
            run(point, ws, extra)
            os._exit(3)  # the kill point was never reached
        except BaseException:
            traceback.print_exc()
            os._exit(4)
    children[pid] = point
    print(json.dumps({{"point": point, "pid": pid}}), flush=True)
codes = {{}}
while children:
    pid, status = os.wait()
    codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes), flush=True)
"""


def _kill_at_points(jobs: list[list[str]], searching_out: Path) -> dict[str, int]:
    """Run each ``[point, workspace, *extra]`` in a child process; kill the searcher from outside after a few searches."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER.format(root=str(ROOT)), json.dumps(jobs)],
        env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    pids = {}
    for _ in jobs:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        pids[json.loads(line)["point"]] = json.loads(line)["pid"]
    deadline = time.time() + 240
    while not searching_out.exists() or len(searching_out.read_text().splitlines()) < 5:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(pids["searching"], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    codes = json.loads(out.strip().splitlines()[-1])
    assert codes == {p: -signal.SIGKILL for p in pids}, err[-3000:]
    return codes


def _no_debris(ws: Path) -> None:
    assert not any(p.name.startswith(".tmp-") for p in (ws / "versions").iterdir())
    assert not (ws / "work").exists() or not any((ws / "work").iterdir())


def test_kill_minus_nine_during_a_trial(live, docs_jsonl, tmp_path):
    rt, trial = live
    base = rt.ws.root
    copies = {p: tmp_path / p for p in ("drop-manifest", "drop-clear", "index-stage")}
    for dst in copies.values():  # these start from a trial nobody has clicked in yet
        shutil.copytree(base, dst)
    play_trial(rt, 25, "trial")  # the rest from one users prefer (its verdict: promote)
    assert rt.trial()["verdict"] == "promote"
    for point in ("promote-manifest", "promote-swap", "refresh-train", "searching"):
        copies[point] = tmp_path / point
        shutil.copytree(base, copies[point])
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "extra-1", "text": "a brand new document about routers"}) + "\n")
    searching_out = tmp_path / "searching.out"
    jobs = [[p, str(ws), *((str(docs_jsonl), str(extra)) if p == "index-stage" else (str(searching_out),) if p == "searching" else ())] for p, ws in copies.items()]
    _kill_at_points(jobs, searching_out)

    def opened(point: str) -> Ragtune:
        r = Ragtune(copies[point], progress=False)
        for log in (True, False):  # search works, logged or not
            assert len(r.search("reset the router", k=3, log=log)) == 3
        return r

    # promotion killed after the swap and the manifest: v0002 serves, labelled; the next refresh removes TRIAL and logs it
    r = opened("promote-manifest")
    assert r.current_version == "v0002" and r.search("reset", k=3).trial is None
    assert r.ws.read_version("v0002").trial["state"] == "promoted"
    rep = r.refresh(mode="query")
    assert rep.settled["verdict"] == "promote" and "interrupted promotion" in rep.settled["reason"] and r.current_version == "v0002"
    assert [e["trial"] for e in _events(r, "trial_promoted")] == [trial["id"]]

    # killed after the swap: v0002 serves (not interleaved against itself); the next refresh finishes the job
    r = opened("promote-swap")
    assert r.current_version == "v0002" and r.search("reset", k=3).trial is None
    status = r.trial()
    assert status is None or status["id"] == trial["id"]
    rep = r.refresh(mode="query")
    assert rep.settled["verdict"] == "promote" and "interrupted promotion" in rep.settled["reason"]
    assert r.current_version == "v0002" and r.ws.read_version("v0002").trial["state"] == "promoted"
    assert (r.ws.read_trial() or {}).get("id") != trial["id"]  # resolved (a refresh with new feedback may start the next one)

    # a drop killed after the manifest: never half-alive; the next refresh drops it for good
    r = opened("drop-manifest")
    assert r.current_version == "v0001"
    status = r.trial()
    assert status is None or status["id"] == trial["id"]
    assert r.search("reset", k=3).trial is None  # a dropped version is never shown
    rep = r.refresh(mode="query")
    assert rep.status != "trial_running", rep.reason
    assert (r.ws.read_trial() or {}).get("id") != trial["id"] and r.ws.read_version("v0002").discarded
    assert [e["trial"] for e in _events(r, "trial_dropped")] == [trial["id"]]
    assert not (copies["drop-manifest"] / "versions" / "v0002" / "query_map.safetensors").exists()

    # a drop killed after TRIAL was removed: resolved, and recorded
    r = opened("drop-clear")
    assert r.trial() is None and r.current_version == "v0001"
    assert [e["trial"] for e in _events(r, "trial_dropped")] == [trial["id"]]
    r.refresh(mode="query")

    # a refresh killed while training the next candidate: the trial it settled stays settled
    r = opened("refresh-train")
    assert r.current_version == "v0002" and r.trial() is None
    assert [e["trial"] for e in _events(r, "trial_promoted")] == [trial["id"]]
    assert any((copies["refresh-train"] / "work").iterdir())  # its work directory was left behind
    rep = r.refresh(mode="query")
    assert rep.status in ("trial_started", "refused"), rep.reason  # its feedback was not consumed: it trains again

    # `index` killed while staging its version: serving and the trial are intact (index ends a trial only once its version serves)
    r = opened("index-stage")
    assert r.current_version == "v0001" and r.trial()["id"] == trial["id"]
    assert any(p.name.startswith(".tmp-") for p in (copies["index-stage"] / "versions").iterdir())
    r.refresh(mode="query")

    # users killed mid-search: the trial is live with what was logged
    r = opened("searching")
    status = r.trial()
    assert status is not None and status["id"] == trial["id"] and status["searches"] >= 25 + 5
    assert status["wins"] + status["losses"] + status["ties"] <= status["searches"] and status["losses"] == 0
    r.refresh(mode="query")

    for point, ws in copies.items():
        _no_debris(ws)
        assert len(Ragtune(ws, progress=False).search("reset the router", k=3)) == 3, point


def test_a_query_tier_trial_shares_the_serving_index_and_is_served_as_loaded_once_promoted(live):
    """One index in memory, not two: the trial version searches the serving version's store, and the promoted trial is the object that was live."""
    rt, trial = live
    rt.search(ROUTER.format(1), k=3)  # loads the trial
    serving = rt.serving()
    loaded = rt.server.trial()
    assert loaded is not None and loaded[1].name == trial["version"]
    assert loaded[1].store is serving.store and loaded[1].docs is serving.docs
    play_trial(rt, 25, "trial")
    rt.decide_trial()
    assert rt.current_version == trial["version"] and rt.serving() is loaded[1]
    assert len(rt.search(ROUTER.format(2), k=3)) == 3
