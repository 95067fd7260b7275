"""The query-side click memory, re-exported from :mod:`ragtune.query_tier`.

The memory is serving-time math (pure numpy) and lives in :mod:`ragtune.query_tier`, where its
explanation and the numbers its defaults were picked from are; nothing is trained here. These names
stay importable from here for existing callers.
"""

from __future__ import annotations

from ragtune.query_tier import QueryMemory, apply_query_memory

__all__ = ["QueryMemory", "apply_query_memory"]
