"""Named stages of the write paths, and a test-only hook that pauses a process at one of them.

``index``, ``refresh`` and the trial lifecycle call :func:`checkpoint` at each stage where the
workspace's state changes. Normally that does nothing. With ``RAGTUNE_FAULT_PAUSE=STAGE`` and
``RAGTUNE_FAULT_DIR=DIR`` in the environment, the process writes ``DIR/STAGE`` (its pid) when it
reaches the stage and then sleeps, so that a fault-injection test can ``kill -9`` it exactly
there. The hook is for tests: nothing in ragtune sets these variables.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["STAGES", "checkpoint"]

#: Every stage a process can be paused at, in the order each command reaches them.
STAGES = (
    # ragtune index
    "index.loaded",  # sources read and validated, nothing written
    "index.embedded",  # the vectors saved to a scratch file beside the versions, no version written yet
    "index.staged",  # the new version is complete under versions/, CURRENT not moved yet
    "index.swapped",  # CURRENT moved; a live trial not ended yet
    # ragtune refresh
    "refresh.trained",  # the candidate is trained and checked, nothing written to the workspace
    "refresh.staged",  # the candidate version is complete under versions/, not serving nor live
    "refresh.swapped",  # (--no-trial) CURRENT moved to the candidate, the decision not logged yet
    "trial.started",  # TRIAL written, the manifest and the log not updated yet
    # ragtune trial decide / stop, refresh settling a trial
    "trial.promoted",  # CURRENT moved to the trial version, TRIAL still there
    "trial.labelled",  # the trial version's manifest records the verdict, TRIAL still there
    "trial.logged",  # the verdict is in refresh-log.jsonl, TRIAL still there
)


def checkpoint(stage: str) -> None:
    """Pause here for ever when ``$RAGTUNE_FAULT_PAUSE`` names ``stage`` (test-only; see the module docstring)."""
    if os.environ.get("RAGTUNE_FAULT_PAUSE") != stage:
        return
    folder = Path(os.environ.get("RAGTUNE_FAULT_DIR") or ".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / stage).write_text(str(os.getpid()), encoding="utf-8")
    while True:  # pragma: no cover - killed here by the test
        time.sleep(3600)
