"""Refreshes run in the background of the HTTP service: one at a time, each a job whose state can be polled.

A refresh mines, trains and re-embeds: minutes. An HTTP request that waited that long would meet
client and proxy timeouts, and a retried request would start a second refresh; so ``POST /refresh``
starts a job in a thread of the serving process and answers ``202`` at once with its id, and
``GET /refresh/{job_id}`` says ``running``, ``done`` (with the refresh report) or ``failed`` (with
the error). Searches go on meanwhile: the new version is picked up by the next search once the
refresh swaps it in, as for a refresh run by another process. Jobs live in memory: a restarted
service forgets them (the versions and ``refresh-log.jsonl`` keep what refreshes did). A service
stopped while a refresh runs waits for it a few seconds (:meth:`JobStore.shutdown`), then abandons
it with a warning naming the job; the workspace recovers the interrupted refresh on its next write
command (its lock and any half-made version are cleaned up then).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ragtune.errors import RagtuneError, RefreshLockedError

__all__ = ["JobStore", "RefreshJob"]

logger = logging.getLogger(__name__)


@dataclass
class RefreshJob:
    """One refresh started over HTTP.

    Attributes:
        job_id: Its id.
        request: The options it was started with.
        state: ``"running"``, ``"done"`` or ``"failed"``.
        started: Unix time it started.
        finished: Unix time it ended (``None`` while running).
        report: The refresh report's dict once done.
        error: ``{"detail", "error"}`` once failed.
    """

    job_id: str
    request: dict[str, Any]
    state: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The job as a JSON-able dict."""
        return dict(self.__dict__)


class JobStore:
    """The refresh jobs of one service process (the newest ``keep`` are remembered).

    Args:
        keep: How many finished jobs to remember.
    """

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._jobs: dict[str, RefreshJob] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, request: dict[str, Any], run: Callable[[], Any]) -> RefreshJob:
        """Start ``run`` (returning an object with ``to_dict()``) in a thread, as a new job.

        Raises:
            RefreshLockedError: a job of this process is still running.
        """
        with self._lock:
            running = next((j for j in self._jobs.values() if j.state == "running"), None)
            if running is not None:
                raise RefreshLockedError(f"refresh job {running.job_id} is still running; poll GET /refresh/{running.job_id} until it ends")
            job = RefreshJob(uuid.uuid4().hex[:12], request)
            self._jobs[job.job_id] = job
            while len(self._jobs) > self.keep:
                self._threads.pop(self._jobs.pop(next(iter(self._jobs))).job_id, None)
            thread = threading.Thread(target=self._run, args=(job, run), name=f"ragtune-refresh-{job.job_id}", daemon=True)
            self._threads[job.job_id] = thread
        thread.start()
        return job

    def _run(self, job: RefreshJob, run: Callable[[], Any]) -> None:
        try:
            report = run().to_dict()
        except RagtuneError as exc:
            job.error = {"detail": exc.cli_message(), "error": type(exc).__name__}
            logger.warning("refresh job %s failed: %s", job.job_id, exc)
        except Exception as exc:  # a bug: reported on the job, logged with its traceback here
            job.error = {"detail": f"{type(exc).__name__}: {exc}", "error": type(exc).__name__}
            logger.exception("refresh job %s failed", job.job_id)
        else:
            job.report = report
            logger.info("refresh job %s: %s", job.job_id, report.get("status"))
        job.finished = time.time()
        job.state = "failed" if job.error is not None else "done"  # last: a poller that sees it ended sees the rest

    def get(self, job_id: str) -> RefreshJob | None:
        """The job, or ``None`` when this process does not know it."""
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[RefreshJob]:
        """Every remembered job, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def shutdown(self, timeout: float = 5.0) -> list[RefreshJob]:
        """Called as the service stops: wait up to ``timeout`` seconds in all for running jobs to end.

        Each job still running is logged (a warning with its id) before the wait, and again if
        it is abandoned: its thread dies with the process, and the workspace recovers the
        interrupted refresh on its next write command.

        Returns:
            The jobs still running after the wait (abandoned).
        """
        with self._lock:
            running = [(j, self._threads.get(j.job_id)) for j in self._jobs.values() if j.state == "running"]
        for job, _ in running:
            logger.warning("the service is stopping while refresh job %s runs (since %s); waiting up to %.0f s for it", job.job_id, time.ctime(job.started), timeout)
        deadline = time.monotonic() + timeout
        for _, thread in running:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        abandoned = [job for job, _ in running if job.state == "running"]
        for job in abandoned:
            logger.warning(
                "refresh job %s abandoned: the service stopped before it ended; the workspace recovers it on its next write command "
                "(ragtune refresh, index or rollback)", job.job_id,
            )  # fmt: skip
        return abandoned
