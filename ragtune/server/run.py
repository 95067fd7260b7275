"""Run the HTTP service with uvicorn (what ``ragtune serve`` calls)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ragtune.api import Ragtune
from ragtune.errors import MissingDependencyError
from ragtune.server.app import create_app

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def serve(
    rt_or_workspace: Ragtune | str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve a workspace over HTTP until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    One process, one loaded model: uvicorn runs the endpoints in a thread pool. Run several
    processes behind a proxy for more search throughput; they share the workspace (the feedback
    log takes concurrent writers, and each follows version swaps).

    Args:
        rt_or_workspace: An open :class:`~ragtune.Ragtune` or a workspace directory.
        host: The interface to listen on (``0.0.0.0`` for every one).
        port: The TCP port.
        api_key: Enables ``POST /refresh`` and ``POST /rollback`` (see :func:`~ragtune.server.create_app`).
        cors_origins: Browser origins allowed to call the service.
        log_level: uvicorn's log level.
        access_log: Log each request.

    Raises:
        MissingDependencyError: uvicorn is not installed.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("the HTTP service needs uvicorn: pip install 'ragtune[serve]'") from exc
    app = create_app(rt_or_workspace, api_key=api_key, cors_origins=cors_origins)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log)).run()
