"""The HTTP service's request and response bodies (pydantic): they make the OpenAPI schema and the 422s.

Each response model mirrors a typed ragtune record (:class:`~ragtune.records.Hit`,
:class:`~ragtune.workspace.VersionInfo`, ...) and is built from its ``to_dict()``; the models of
free-form reports (status, a refresh report) allow fields beyond the ones they name, so that a
field added to the record reaches clients without a change here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ragtune.feedback import MAX_FEEDBACK_ID_CHARS

__all__ = [
    "ErrorResponse",
    "FeedbackRequest",
    "FeedbackResponse",
    "HealthResponse",
    "HitModel",
    "RefreshJobModel",
    "RefreshRequest",
    "RollbackRequest",
    "RollbackResponse",
    "SearchRequest",
    "SearchResponse",
    "StatusResponse",
    "TrialResponse",
    "VersionModel",
]


#: Longest query text a search takes (characters).
MAX_QUERY_CHARS = 4096
#: Longest query id, doc id or feedback id a request takes (characters).
MAX_ID_CHARS = 512


def _rating_int(value: Any) -> Any:
    """A rating's value must be the JSON number 1 or -1: ``true`` and ``1.0`` are refused (pydantic's Literal takes them)."""
    if isinstance(value, bool) or (value is not None and not isinstance(value, int)):
        raise ValueError("a rating's value is the integer 1 or -1 (not true/false, 1.0 or a string)")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 422, not silently ignored


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorResponse(BaseModel):
    """An error: ``detail`` is the library's message (what was received, what to do); ``error`` its class.

    A body that fails validation answers 422 with ``error`` ``"ValidationError"`` and ``detail`` FastAPI's
    list of field errors (each with ``loc``, ``msg``, ``type``).
    """

    detail: str | list[dict[str, Any]]
    error: str


class HealthResponse(BaseModel):
    """``GET /health``: the process answers (nothing else is checked: it is the cheapest endpoint)."""

    ok: bool = True


class SearchRequest(_Request):
    """``POST /search``."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The query text.")
    k: int = Field(10, ge=1, le=1000, strict=True, description="Number of results.")
    log: bool = Field(
        True, strict=True, description="Record the query and what was shown, to be clicked on and learnt from; false: a preview (query_id null, nothing logged)."
    )


class HitModel(BaseModel):
    """One result (:class:`ragtune.records.Hit`)."""

    doc_id: str
    score: float
    rank: int
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    """``POST /search``: the hits and the query id to send feedback with."""

    query_id: str | None = Field(description="The logged query's id for POST /feedback (null when the log cannot be written: see GET /status).")
    version: str | None = Field(description="The serving version that answered.")
    trial: str | None = Field(None, description="The live trial this search was interleaved for, or null.")
    hits: list[HitModel]


class FeedbackRequest(_Request):
    """``POST /feedback``: a click or a rating on a hit of a logged search (late feedback is accepted)."""

    query_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="SearchResponse.query_id of the search.")
    doc_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="The document clicked or rated.")
    type: Literal["click", "rating"] = Field(description="'click' or 'rating'.")
    value: Annotated[Literal[1, -1], BeforeValidator(_rating_int)] | None = Field(
        None, description="A rating's value: the integer 1 (up) or -1 (down); not given for a click."
    )
    dwell: float | None = Field(None, ge=0, allow_inf_nan=False, description="A click's dwell time in seconds.")
    feedback_id: str | None = Field(
        None, min_length=1, max_length=MAX_FEEDBACK_ID_CHARS, description="The client's id for this event (e.g. a UUID): posting it again is a no-op, so retries are safe."
    )

    @model_validator(mode="after")
    def _fits_type(self) -> FeedbackRequest:
        if self.type == "rating" and self.value is None:
            raise ValueError("a rating needs 'value': 1 or -1")
        if self.type == "rating" and self.dwell is not None:
            raise ValueError("'dwell' is for clicks; a rating has 'value' only")
        if self.type == "click" and self.value is not None:
            raise ValueError("'value' is for ratings; send type 'rating', or leave 'value' out of a click")
        return self


class FeedbackResponse(BaseModel):
    """``POST /feedback``: ``recorded`` false means this ``feedback_id`` was recorded before (nothing was added)."""

    status: Literal["recorded", "duplicate"]
    recorded: bool
    type: Literal["click", "rating"]
    query_id: str
    doc_id: str
    feedback_id: str | None = None


class StatusResponse(_Open):
    """``GET /status``: :meth:`ragtune.Ragtune.status` (workspace, model, version, docs, sources, feedback counts and health, trial)."""

    workspace: str
    current_version: str | None = None
    model: str
    n_docs: int = 0
    feedback: dict[str, int] | None = None
    feedback_health: dict[str, Any]
    trial: dict[str, Any] | None = None
    problems: list[str] = Field(default_factory=list)


class VersionModel(_Open):
    """One version (:class:`ragtune.workspace.VersionInfo`) with ``current``, ``trial_live`` and ``never_served``."""

    name: str
    kind: str
    index_version: str
    created: str
    parent: str | None = None
    n_docs: int = 0
    note: str = ""
    current: bool
    trial_live: bool
    never_served: bool


class TrialResponse(BaseModel):
    """``GET /trial``: the live trial with what its test says now, or ``trial: null``."""

    live: bool
    trial: dict[str, Any] | None = None


class RefreshRequest(_Request):
    """``POST /refresh``: the options of :meth:`ragtune.Ragtune.refresh` that make sense over HTTP."""

    mode: Literal["query", "lora", "full", "auto"] | None = Field(None, description="Default: the workspace's train.mode.")
    force: bool = Field(False, description="Train even with fewer than refresh.min_new_events new events, or soon after a refused LoRA/full candidate.")
    trial: bool = Field(True, description="false: promote a candidate that passes the offline check at once, without a trial.")
    min_new_events: int | None = Field(None, ge=0, strict=True, description="Override refresh.min_new_events.")


class RefreshJobModel(BaseModel):
    """A refresh run in the background (``POST /refresh`` answers 202 with it; ``GET /refresh/{job_id}`` polls it)."""

    job_id: str
    state: Literal["running", "done", "failed"]
    request: dict[str, Any]
    started: float = Field(description="Unix time.")
    finished: float | None = None
    report: dict[str, Any] | None = Field(None, description="The RefreshReport once done (status: skipped, trial_running, refused, trial_started, promoted).")
    error: ErrorResponse | None = None


class RollbackRequest(_Request):
    """``POST /rollback``: ``version`` to make current (default: the current one's parent)."""

    version: str | None = Field(None, min_length=1)


class RollbackResponse(BaseModel):
    """``POST /rollback``: the version now current and the one it replaced."""

    version: str
    previous: str | None = None
