"""POST /refresh and /rollback: off without a key, 401 with a wrong one, and what they do with the right one (real uvicorn)."""

from __future__ import annotations

import time

import pytest

from ragtune import Ragtune
from tests.conftest import play
from tests.server.live import Client, running

KEY = {"Authorization": "Bearer s3cret"}


def _two_versions(rt: Ragtune, docs_jsonl) -> None:
    docs_jsonl.write_text(docs_jsonl.read_text(encoding="utf-8").replace("ten seconds", "twelve seconds"), encoding="utf-8")
    assert rt.index([docs_jsonl]).version == "v0002"


@pytest.mark.parametrize("path", ["/refresh", "/rollback"])
def test_without_a_key_the_write_endpoints_are_off(service: Client, path: str):
    r = service.post(path, {}, headers=KEY)
    assert r.status == 403 and "RAGTUNE_API_KEY" in r.json()["detail"] and "disabled" in r.json()["detail"] and r.json()["error"] == "Forbidden"


@pytest.mark.parametrize("path", ["/refresh", "/rollback"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic czNjcmV0"}, {"Authorization": "Bearer s3cre"}],
)
def test_a_missing_or_wrong_key_is_401(keyed: Client, workspace: Ragtune, docs_jsonl, path: str, headers: dict):
    _two_versions(workspace, docs_jsonl)
    r = keyed.post(path, {}, headers=headers)
    assert r.status == 401 and r.headers.get("www-authenticate") == "Bearer" and r.json()["error"] == "Unauthorized"
    assert workspace.current_version == "v0002" and keyed.get("/refresh", headers=KEY).json() == []


@pytest.mark.parametrize("headers", [KEY, {"X-API-Key": "s3cret"}])
def test_rollback_with_the_key(keyed: Client, workspace: Ragtune, docs_jsonl, headers: dict):
    _two_versions(workspace, docs_jsonl)
    r = keyed.post("/rollback", {}, headers=headers)
    assert r.status == 200 and r.json() == {"version": "v0001", "previous": "v0002"}
    assert keyed.post("/search", {"query": "reset", "k": 2}).json()["version"] == "v0001"
    r = keyed.post("/rollback", {"version": "v0002"}, headers=headers)
    assert r.json() == {"version": "v0002", "previous": "v0001"} and workspace.current_version == "v0002"
    r = keyed.post("/rollback", {"version": "v0042"}, headers=headers)
    assert r.status == 404 and "v0042" in r.json()["detail"] and r.json()["error"] == "UnknownIdError"


def test_refresh_runs_in_the_background_and_is_polled(keyed: Client, workspace: Ragtune):
    play(workspace)
    r = keyed.post("/refresh", {"mode": "query", "force": True}, headers=KEY)
    assert r.status == 202
    job = r.json()
    assert r.headers["location"] == f"/refresh/{job['job_id']}" and job["request"]["mode"] == "query"
    deadline = time.monotonic() + 300
    while job["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
        job = keyed.get(f"/refresh/{job['job_id']}", headers=KEY).json()
    assert job["state"] == "done", job
    assert job["report"]["status"] in ("trial_started", "refused", "promoted") and job["finished"] >= job["started"]
    assert keyed.get("/refresh", headers={"X-API-Key": "s3cret"}).json()[0]["job_id"] == job["job_id"]
    # the jobs' options and reports (paths on the server) need the key like POST /refresh
    for path in ("/refresh", f"/refresh/{job['job_id']}", "/refresh/nope"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = keyed.get(path, headers=headers)
            assert r.status == 401 and "report" not in r.body.decode(), (path, headers)
    r = keyed.get("/refresh/nope", headers=KEY)
    assert r.status == 404 and r.json() == {"detail": "no refresh job 'nope' in this process; GET /refresh lists them", "error": "UnknownIdError"}


def test_refresh_and_rollback_while_the_workspace_is_locked_are_409(keyed: Client, workspace: Ragtune, docs_jsonl):
    _two_versions(workspace, docs_jsonl)
    with workspace.ws.lock("index"):  # what another process's refresh or index holds
        r = keyed.post("/refresh", {}, headers=KEY)
        assert r.status == 409 and "locked" in r.json()["detail"] and r.json()["error"] == "RefreshLockedError"
        r = keyed.post("/rollback", {}, headers=KEY)
        assert r.status == 409 and "locked" in r.json()["detail"]
    assert workspace.current_version == "v0002"
    assert keyed.post("/rollback", {}, headers=KEY).status == 200


@pytest.mark.parametrize("path", ["/refresh", "/refresh/abc123"])
def test_without_a_key_the_refresh_jobs_cannot_be_read(service: Client, path: str):
    r = service.get(path, headers=KEY)
    assert r.status == 403 and "RAGTUNE_API_KEY" in r.json()["detail"]


def test_an_empty_key_is_no_key(workspace: Ragtune):
    with running(workspace, api_key="") as port:
        c = Client(port)
        assert c.post("/rollback", {}, headers={"Authorization": "Bearer "}).status == 403
        c.close()
