"""Plain data passed between rooms: what a search returns.

Kept apart from the facade so that the serving layer, the integrations and the CLI can share these
types without importing :mod:`ragtune.api`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hit", "SearchResults"]


@dataclass
class Hit:
    """One search result.

    Attributes:
        doc_id: The document id.
        score: Cosine similarity to the query under the serving version (also in an interleaved trial list, so scores need not fall down such a list: they do not tell the teams apart).
        rank: 1-based rank as shown.
        text: Document text.
        title: Document title ('' if none).
        metadata: Document metadata.
    """

    doc_id: str
    score: float
    rank: int
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SearchResults(list[Hit]):
    """A list of :class:`Hit` that also carries the feedback ``query_id`` (``None`` if not logged).

    Attributes:
        query_id: The logged query's id, for :meth:`ragtune.Ragtune.click` / ``rate``.
        version: The serving version that answered.
        trial: The id of the live trial whose interleaved ranking this is, or ``None``.
    """

    def __init__(self, hits: Iterable[Hit] = (), query_id: str | None = None, version: str | None = None, trial: str | None = None) -> None:
        super().__init__(hits)
        self.query_id = query_id
        self.version = version
        self.trial = trial
