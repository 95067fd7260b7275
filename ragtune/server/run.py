"""Run the HTTP service with uvicorn (what ``ragtune serve`` calls)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from ragtune.api import Ragtune
from ragtune.errors import MissingDependencyError
from ragtune.server.app import create_app

__all__ = ["exposure_warning", "is_loopback", "serve"]

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``): reachable from this machine only.

    A host name other than ``localhost`` counts as not loopback (what it resolves to may change).
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """The warning ``serve`` logs when it listens on ``host`` beyond loopback (``None`` on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"listening on {host}, not a loopback address: anyone who can reach it can search and POST /feedback without a key, "
        "and that feedback trains the model and decides trials (the API key guards only refresh and rollback); "
        "put the service behind your app's auth (e.g. a reverse proxy that checks it), or listen on 127.0.0.1"
    )


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
    warning = exposure_warning(host)
    if warning:
        logger.warning(warning)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log)).run()
