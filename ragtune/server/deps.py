"""What the service's routes depend on: the workspace's facade, and the API key of the write endpoints.

Routers (this package's and the dashboard's) take them with FastAPI's ``Depends``:
``rt: RagtuneDep`` (``Annotated[Ragtune, Depends(get_ragtune)]``); a route that changes what is served adds
``dependencies=[Depends(require_api_key)]``.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ragtune.api import Ragtune

__all__ = ["API_KEY_ENV", "RagtuneDep", "get_ragtune", "require_api_key"]

#: The environment variable `ragtune serve` reads the API key from.
API_KEY_ENV = "RAGTUNE_API_KEY"

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <RAGTUNE_API_KEY>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <RAGTUNE_API_KEY>`")


def get_ragtune(request: Request) -> Ragtune:
    """The :class:`~ragtune.Ragtune` the app serves (one per process: the model stays loaded)."""
    rt: Ragtune = request.app.state.ragtune
    return rt


#: A route's ``rt: RagtuneDep`` argument: the facade the app serves.
RagtuneDep = Annotated[Ragtune, Depends(get_ragtune)]


def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    """Let the request through only with the service's API key (``Authorization: Bearer`` or ``X-API-Key``).

    Raises:
        HTTPException: 403 when the service has no key (these endpoints are off), 401 when the
            request has none or another one.
    """
    key: str | None = request.app.state.api_key
    if not key:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{request.method} {request.url.path} is disabled: this service has no API key; set {API_KEY_ENV} "
            "(or create_app(..., api_key=...)) and restart `ragtune serve` to enable it",
        )
    given = bearer.credentials if bearer is not None else header
    if not given or not hmac.compare_digest(given.encode(), key.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>` with the service's RAGTUNE_API_KEY"
            if not given
            else "the API key is wrong: send the service's RAGTUNE_API_KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
