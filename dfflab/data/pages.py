"""Memory-mapped arrays larger than memory: passes over them without growing the resident set.

Reading or writing a memory-mapped store maps its pages into the process, and Linux counts
every touched page in the process's resident set: one pass over DFF's 5.6 GB store at 128 px
would show as 5.6 GB of RSS (reclaimable page cache, but it is what a user's monitor, a batch
scheduler or a container limit sees). :func:`release` hands the pages of a mapping back after
each batch; they stay in the page cache, so reading them again costs no disk I/O.
"""

from __future__ import annotations

import mmap

import numpy as np


def _mapping(arr: np.ndarray) -> mmap.mmap | None:
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def release(arr: np.ndarray) -> None:
    """Drop the pages of the memory-mapped array ``arr`` (or of the mapping it views) from this
    process's resident set, writing back what it wrote first. No-op for in-memory arrays."""
    mm = _mapping(arr)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    if isinstance(arr, np.memmap) and arr.mode in ("r+", "w+"):
        arr.flush()  # msync: the written pages reach the file before the process lets go of them
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed or unusual mapping: keeping the pages is harmless
        pass


def batches(arr: np.ndarray, rows: np.ndarray | None = None, batch: int = 4096):
    """``(start, arr[rows[start:start + batch]])`` (an in-memory copy) in order, all rows when
    ``rows`` is None; the mapping's pages are released after each batch."""
    n = len(arr) if rows is None else len(rows)
    for i in range(0, n, batch):
        part = np.array(arr[i:i + batch]) if rows is None else np.asarray(arr[rows[i:i + batch]])
        release(arr)
        yield i, part
