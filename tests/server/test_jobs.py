"""Refresh jobs when the service stops: a running one is waited for briefly, then abandoned with a warning naming it."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import pytest

from ragtune import Ragtune
from ragtune.server import app as server_app
from ragtune.server.jobs import JobStore


@dataclass
class _Report:
    status: str = "skipped"

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status}


def test_shutdown_waits_for_a_job_that_ends_and_abandons_one_that_does_not(caplog: pytest.LogCaptureFixture):
    jobs = JobStore()
    release = threading.Event()
    quick = jobs.start({"mode": "query"}, lambda: (release.wait(0.2), _Report())[1])
    with caplog.at_level(logging.WARNING, logger="ragtune.server.jobs"):
        assert jobs.shutdown(timeout=10) == []
    assert quick.state == "done" and quick.report == {"status": "skipped"}
    assert quick.job_id in caplog.text  # it was running when the shutdown began: logged before the wait

    caplog.clear()
    stuck = jobs.start({"mode": "lora"}, lambda: (release.wait(30), _Report())[1])
    with caplog.at_level(logging.WARNING, logger="ragtune.server.jobs"):
        assert jobs.shutdown(timeout=0.2) == [stuck]
    abandoned = [r.getMessage() for r in caplog.records if "abandoned" in r.getMessage()]
    assert len(abandoned) == 1 and stuck.job_id in abandoned[0] and "next write command" in abandoned[0]
    assert stuck.state == "running"
    release.set()


def test_the_service_logs_a_refresh_it_abandons_on_shutdown(workspace: Ragtune, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(server_app, "SHUTDOWN_WAIT", 0.2)
    app = server_app.create_app(workspace, warm=False)
    release = threading.Event()

    async def serve_then_stop() -> None:
        async with app.router.lifespan_context(app):  # what uvicorn runs at startup and shutdown
            job = app.state.jobs.start({"mode": "lora"}, lambda: (release.wait(30), _Report())[1])  # what POST /refresh starts
        assert job.state == "running"

    with caplog.at_level(logging.WARNING, logger="ragtune.server.jobs"):
        asyncio.run(serve_then_stop())
    release.set()
    (job,) = app.state.jobs.all()
    assert any(job.job_id in r.getMessage() and "abandoned" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
