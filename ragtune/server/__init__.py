"""``ragtune serve``: the HTTP service (FastAPI + uvicorn; ``pip install 'ragtune[serve]'``).

:func:`create_app` builds the FastAPI app over a workspace (for tests, or to mount in another
ASGI app); :func:`serve` runs it with uvicorn. See :mod:`ragtune.server.app` for the endpoints.
"""

from __future__ import annotations

from ragtune.server.app import create_app
from ragtune.server.run import serve

__all__ = ["create_app", "serve"]
