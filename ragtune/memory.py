"""Giving memory back: pages of memory-mapped files, and the C heap after a large transient working set.

At a million documents an ``index`` run holds gigabytes only for a while (the documents read, the
vectors): these helpers make that memory leave the process's resident set once it is done with, so
that a long-lived process (a server, a notebook) does not keep the peak as its baseline.
"""

from __future__ import annotations

import ctypes

import numpy as np

__all__ = ["release_heap", "release_pages"]


def release_pages(matrix: np.ndarray) -> None:
    """Drop a memory-mapped matrix's pages from this process's resident set (no-op for an in-memory one).

    Reading a memory-mapped ``vectors.npy`` through leaves every page resident (and counted in RSS)
    for as long as the mapping lives; the kernel keeps them in its page cache either way, so a later
    read costs a page fault, not a disk read. Only shared mappings (modes ``r``, ``r+``, ``w+``) are
    released: dropping a copy-on-write (``c``) map's pages would discard its in-memory edits.
    """
    import mmap

    base: np.ndarray | None = matrix
    while base is not None and not isinstance(base, np.memmap):
        base = base.base if isinstance(base.base, np.ndarray) else None
    handle = getattr(base, "_mmap", None)
    if getattr(base, "mode", "c") == "c":
        return
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # a closed mapping, or a platform without it: only memory is at stake
            pass


def release_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    Python frees a million documents' strings to the C allocator, which keeps most of the pages
    (they sit between live allocations); ``malloc_trim(0)`` hands every free page back.
    """
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded in this process: no library search, no subprocess
    except OSError:  # only memory is at stake
        return
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
