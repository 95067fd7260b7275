"""The HTTP service: a FastAPI app over one :class:`~ragtune.Ragtune` (``ragtune serve`` runs it with uvicorn).

Endpoints (OpenAPI docs at ``/docs`` and ``/redoc``, served from local files: no network needed):

* ``POST /search`` ``{query, k, log}`` → hits and the logged ``query_id`` (interleaved while a trial is live;
  ``log: false`` logs nothing: a preview, as the dashboard's search box).
* ``POST /feedback`` ``{query_id, doc_id, type: click|rating, value, dwell, feedback_id}``: idempotent
  by ``feedback_id``; late feedback is accepted; an unknown query or doc id is a 404.
* ``GET /status``, ``GET /versions``, ``GET /trial``, ``GET /health``.
* ``POST /refresh`` (a background job: ``202``, then ``GET /refresh/{job_id}``; ``GET /refresh`` lists
  them) and ``POST /rollback``: only with the API key (``Authorization: Bearer <key>`` or ``X-API-Key``); ``403`` when the service has none.

Endpoints are plain (sync) functions: uvicorn runs them in its thread pool, and the facade is
thread-safe (the feedback log opens one SQLite connection per thread; the serving version is
loaded under a lock). The process keeps the model loaded and follows ``CURRENT`` and ``TRIAL``:
an ``index``, ``refresh`` or ``rollback`` run by another process is served from the next search on.

Errors are the library's, mapped to a status: unknown id 404, malformed input 422, a feedback id
reused with other content or a busy workspace 409, an unwritable log 503; the body is
``{"detail": message, "error": class name}``, never a traceback (a body that fails validation:
``{"detail": [field errors], "error": "ValidationError"}``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from ragtune.errors import MissingDependencyError

try:
    import fastapi_offline
    from fastapi import Body, Depends, FastAPI, Request, Response, status
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError(
        f"the HTTP service needs FastAPI, uvicorn and fastapi-offline ({exc.name} is missing): pip install 'ragtune[serve]'"
    ) from exc

from ragtune.api import Ragtune
from ragtune.errors import (
    ConfigError,
    FeedbackConflictError,
    FeedbackError,
    FeedbackLogError,
    InputError,
    ModelError,
    NotEnoughFeedbackError,
    RagtuneError,
    RefreshLockedError,
    UnknownIdError,
    VectorIndexError,
    WorkspaceError,
)
from ragtune.server.deps import RagtuneDep, require_api_key
from ragtune.server.jobs import JobStore
from ragtune.server.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    HitModel,
    RefreshJobModel,
    RefreshRequest,
    RollbackRequest,
    RollbackResponse,
    SearchRequest,
    SearchResponse,
    StatusResponse,
    TrialResponse,
    VersionModel,
)

__all__ = ["DOCS_STATIC", "create_app", "error_status"]

logger = logging.getLogger(__name__)

#: Seconds a stopping service waits for a running refresh job before abandoning it (with a warning).
SHUTDOWN_WAIT = 5.0
#: Where /docs and /redoc load Swagger UI's and ReDoc's scripts from (the files of the fastapi-offline package).
DOCS_STATIC = "/docs-static"

#: The status of each library error, most specific first (the first class an error is an instance of decides).
#: 422 is written as a number: Starlette renamed its constant (HTTP_422_UNPROCESSABLE_CONTENT exists only from 0.48).
_STATUS: tuple[tuple[type[RagtuneError], int], ...] = (
    (UnknownIdError, status.HTTP_404_NOT_FOUND),
    (FeedbackConflictError, status.HTTP_409_CONFLICT),
    (FeedbackLogError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (FeedbackError, 422),
    (InputError, 422),
    (ConfigError, 422),
    (RefreshLockedError, status.HTTP_409_CONFLICT),
    (NotEnoughFeedbackError, status.HTTP_409_CONFLICT),
    (WorkspaceError, status.HTTP_409_CONFLICT),  # no index yet, a version that cannot serve: the workspace's state
    (ModelError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (VectorIndexError, status.HTTP_503_SERVICE_UNAVAILABLE),
)

#: The error responses each kind of endpoint documents in the OpenAPI schema.
_ERR: dict[str, Any] = {"model": ErrorResponse}
_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "No API key, or a wrong one"}, 403: {"description": "The service has no API key (RAGTUNE_API_KEY unset): the endpoint is off"}}


def error_status(exc: RagtuneError) -> int:
    """The HTTP status that answers a library error (500 for one this table does not know)."""
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), status.HTTP_500_INTERNAL_SERVER_ERROR)


def _ragtune_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagtuneError)
    code = error_status(exc)
    if code >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=code)


#: The ``error`` field of HTTP-level errors (no key, a wrong key, no such route).
_HTTP_ERRORS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed"}


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTP errors (the API key's 401/403, an unknown route) with ``error`` like the others."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail, "error": _HTTP_ERRORS.get(exc.status_code, "HTTPError")}, status_code=exc.status_code, headers=exc.headers)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A body or query that fails validation: FastAPI's 422 (``detail``: the field errors) with ``error`` like the others."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _printable(jsonable_encoder(exc.errors())), "error": "ValidationError"}, status_code=422)


def _printable(value: Any) -> Any:
    """``value`` as strict JSON can hold it: the caller's input is echoed in field errors, and a NaN,
    an infinity or a lone surrogate there must not turn a 422 into a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    return value


def create_app(
    rt_or_workspace: Ragtune | str | Path,
    *,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
    warm: bool = True,
) -> FastAPI:
    """The HTTP service of a workspace, as a FastAPI app (run it with uvicorn, or ``ragtune serve``).

    Args:
        rt_or_workspace: An open :class:`~ragtune.Ragtune`, or a workspace directory to open.
        api_key: The key ``POST /refresh`` and ``POST /rollback`` require (``Authorization: Bearer``
            or ``X-API-Key``); ``None`` or ``""`` turns those endpoints off (403). ``ragtune serve``
            reads it from ``RAGTUNE_API_KEY``.
        cors_origins: Origins allowed to call the service from a browser (e.g.
            ``["https://app.example.com"]``, or ``["*"]``), so that a front end can post clicks
            directly; none by default.
        warm: Load the serving version's model when the app starts (the first search is then as
            fast as the others); a workspace without an index starts all the same.

    Returns:
        The app; ``app.state.ragtune`` is the facade it serves.

    Example:
        >>> import uvicorn                                                # doctest: +SKIP
        >>> uvicorn.run(create_app("my-ws", api_key="s3cret"), port=8000)  # doctest: +SKIP
    """
    rt = rt_or_workspace if isinstance(rt_or_workspace, Ragtune) else Ragtune(rt_or_workspace, progress=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            _warm(rt)
        yield
        app.state.jobs.shutdown(SHUTDOWN_WAIT)  # a running refresh is waited for briefly, then abandoned (logged)

    app = FastAPI(
        title="ragtune",
        summary="Search a ragtune workspace, log what users click, and refresh its retriever from that feedback.",
        version=_version(),
        docs_url=None,  # served below from local files (FastAPI's default pages load Swagger UI from a CDN)
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ragtune = rt
    app.state.api_key = api_key or None
    app.state.jobs = JobStore()
    app.add_exception_handler(RagtuneError, _ragtune_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key"],
        )
    _add_docs(app)
    _add_routes(app)
    from ragtune.server import dashboard  # GET / (the page) and GET /api/dashboard

    app.include_router(dashboard.router)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragtune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def _warm(rt: Ragtune) -> None:
    """Load the serving version and its model now, not on the first search (nothing indexed yet: fine)."""
    try:
        if rt.current_version is not None:
            rt.serving().embedder.encode_queries(["warm up"])
            logger.info("serving %s from %s", rt.current_version, rt.ws.root)
    except RagtuneError as exc:  # searches answer with the error; status says more
        logger.warning("cannot load the serving version yet: %s", exc)


def _add_docs(app: FastAPI) -> None:
    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=static), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title="ragtune - API docs",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title="ragtune - API docs",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def _add_routes(app: FastAPI) -> None:
    jobs: JobStore = app.state.jobs

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    def health() -> HealthResponse:
        """The process answers (the cheapest endpoint: nothing is read)."""
        return HealthResponse()

    @app.post("/search", response_model=SearchResponse, tags=["search"], responses={409: _ERR, 422: _ERR})
    def search(body: SearchRequest, rt: RagtuneDep) -> SearchResponse:
        """The top ``k`` for ``query``, logged: send clicks and ratings with the returned ``query_id``
        (``log: false``: a preview, nothing logged, ``query_id`` null).

        While a trial is live, a share of searches is answered by interleaving the serving and the
        trial rankings (``trial`` is then set); users' clicks decide the trial.
        """
        results = rt.search(body.query, body.k, log=body.log)
        return SearchResponse(
            query_id=results.query_id, version=results.version, trial=results.trial, hits=[HitModel(**h.to_dict()) for h in results]
        )

    @app.post("/feedback", response_model=FeedbackResponse, tags=["search"], responses={404: _ERR, 409: _ERR, 422: _ERR, 503: _ERR})
    def feedback(body: FeedbackRequest, rt: RagtuneDep) -> FeedbackResponse:
        """Record a click or a rating on a hit of a logged search.

        Idempotent by ``feedback_id``: posting the same event again answers ``status: duplicate``
        and adds nothing (the same id with other content is a 409). Feedback may come late: a
        query id stays valid after the serving version changed.
        """
        if body.type == "click":
            recorded = rt.click(body.query_id, body.doc_id, dwell=body.dwell, feedback_id=body.feedback_id)
        else:
            assert body.value is not None  # the model requires it for a rating
            recorded = rt.rate(body.query_id, body.doc_id, body.value, feedback_id=body.feedback_id)
        return FeedbackResponse(
            status="recorded" if recorded else "duplicate", recorded=recorded, type=body.type,
            query_id=body.query_id, doc_id=body.doc_id, feedback_id=body.feedback_id,
        )  # fmt: skip

    @app.get("/status", response_model=StatusResponse, tags=["workspace"])
    def get_status(rt: RagtuneDep) -> dict[str, Any]:
        """Workspace, serving model and version, documents, sources, feedback counts and health, the live trial."""
        return rt.status()

    @app.get("/versions", response_model=list[VersionModel], tags=["workspace"])
    def versions(rt: RagtuneDep) -> list[dict[str, Any]]:
        """Every version on disk, oldest first (kind, model, metrics, trial, feedback counts, dates)."""
        return rt.versions()

    @app.get("/trial", response_model=TrialResponse, tags=["workspace"])
    def trial(rt: RagtuneDep) -> TrialResponse:
        """The live trial with what its test says now (wins, losses, ties, p-value, verdict), or ``trial: null``."""
        live = rt.trial()
        return TrialResponse(live=live is not None, trial=live)

    @app.post(
        "/refresh", status_code=status.HTTP_202_ACCEPTED, response_model=RefreshJobModel, tags=["operations"],
        dependencies=[Depends(require_api_key)], responses={**_AUTH, 409: _ERR},
    )  # fmt: skip
    def refresh(response: Response, rt: RagtuneDep, body: Annotated[RefreshRequest | None, Body()] = None) -> dict[str, Any]:
        """Start a refresh (settle the live trial, mine, train, check, stage a trial) in the background.

        Answers 202 with the job at once (a refresh takes minutes); poll ``GET /refresh/{job_id}``.
        409 while a refresh, index or rollback holds the workspace.
        """
        holder = rt.ws.lock_holder()
        if holder is not None:
            raise RefreshLockedError(f"workspace {rt.ws.root} is locked by {holder}; wait for it to finish, then retry")
        options = (body or RefreshRequest.model_validate({})).model_dump()
        job = jobs.start(options, lambda: rt.refresh(**options))
        response.headers["Location"] = f"/refresh/{job.job_id}"
        return job.to_dict()

    @app.get("/refresh", response_model=list[RefreshJobModel], tags=["operations"], dependencies=[Depends(require_api_key)], responses=_AUTH)
    def refresh_jobs() -> list[dict[str, Any]]:
        """The refresh jobs this process started, newest first (with the API key: their reports name files on the server)."""
        return [j.to_dict() for j in jobs.all()]

    @app.get(
        "/refresh/{job_id}", response_model=RefreshJobModel, tags=["operations"], dependencies=[Depends(require_api_key)],
        responses={**_AUTH, 404: _ERR},
    )  # fmt: skip
    def refresh_job(job_id: str) -> dict[str, Any]:
        """A refresh job: ``running``, ``done`` (with its report) or ``failed`` (with the error)."""
        job = jobs.get(job_id)
        if job is None:
            raise UnknownIdError(f"no refresh job {job_id!r} in this process; GET /refresh lists them")
        return job.to_dict()

    @app.post(
        "/rollback", response_model=RollbackResponse, tags=["operations"], dependencies=[Depends(require_api_key)],
        responses={**_AUTH, 404: _ERR, 409: _ERR},
    )  # fmt: skip
    def rollback(rt: RagtuneDep, body: Annotated[RollbackRequest | None, Body()] = None) -> RollbackResponse:
        """Make ``version`` (default: the current one's parent) current at once; a live trial is dropped."""
        body = body or RollbackRequest.model_validate({})
        if body.version is not None and body.version not in {v.name for v in rt.ws.list_versions()}:
            raise UnknownIdError(f"no version {body.version!r} in {rt.ws.root}; GET /versions lists them")
        try:
            previous = rt.ws.current_version()
        except WorkspaceError:
            previous = None
        return RollbackResponse(version=rt.rollback(body.version), previous=previous)
