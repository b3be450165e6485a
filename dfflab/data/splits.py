"""Grouped, stratified, deterministic train/val/test splits.

The unit of splitting is the relative path: a real photo and its fakes share it, so
they always land in the same split (no identity leaks from train into test). Groups
are stratified by which sources they contain, and within a stratum ordered by a
seeded hash of the path, so the split is the same on every machine and does not move
when unrelated files are added.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from dfflab.data.layout import SPLITS
from dfflab.runs import atomic_write_text


def _key(seed: int, relpath: str) -> str:
    return hashlib.sha1(f"{seed}:{relpath}".encode()).hexdigest()


def assign_splits(groups: Iterable[tuple[str, str]], val_frac: float = 0.15,
                  test_frac: float = 0.15, seed: int = 0) -> dict[str, str]:
    """Map each relative path to ``train``, ``val`` or ``test``.

    Args:
        groups: (relpath, source) pairs; several sources may share a relpath.
        val_frac, test_frac: shares of groups (rounded per stratum).
        seed: changes the assignment.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac} and test_frac={test_frac} must be in [0, 1) and sum below 1")
    members: dict[str, set[str]] = defaultdict(set)
    for relpath, source in groups:
        members[relpath].add(source)
    strata: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for relpath, sources in members.items():
        strata[tuple(sorted(sources))].append(relpath)
    out: dict[str, str] = {}
    for paths in strata.values():
        paths.sort(key=lambda p: _key(seed, p))
        n = len(paths)
        n_test, n_val = round(n * test_frac), round(n * val_frac)
        for i, p in enumerate(paths):
            out[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def write_splits(path: Path | str, splits: dict[str, str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["relpath", "split"])
    for rel in sorted(splits):
        w.writerow([rel, splits[rel]])
    atomic_write_text(path, buf.getvalue())


def read_splits(path: Path | str) -> dict[str, str]:
    """Read a ``relpath,split`` CSV; raises ValueError naming the file and line on bad rows."""
    out = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"relpath", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV with columns relpath,split")
        for i, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise ValueError(f"{path}:{i}: split '{row['split']}' is not one of {SPLITS}")
            out[row["relpath"]] = row["split"]
    return out
