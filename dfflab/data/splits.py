"""Grouped, stratified, deterministic train/val/test splits.

The unit of splitting is the *component*: relative paths joined by links (see
``links.py``: a partner photo, a shared group) together with everything they link
to. A real photo and its fakes share a relative path, and the fakes made from a
partner link the two paths, so no photo or person known to be shared lands in two
splits. Components are stratified by which sources they contain and, within a
stratum, ordered by a seeded hash of their first path and cut at the split
fractions (counted in relative paths), so the split is the same on every machine and
moves little when unrelated files are added.

A component larger than the validation or test share (at least two paths, so a pair
always fits) is kept whole in train (reported by :func:`plan_splits`): it is never cut
across splits.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dfflab.data.layout import SPLITS
from dfflab.runs import atomic_write_text


def _key(seed: int, relpath: str) -> str:
    return hashlib.sha1(f"{seed}:{relpath}".encode()).hexdigest()


def components(nodes: Iterable[str], links: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """``{relpath: component id}``, the id being the component's smallest relpath.

    Links naming a path not in ``nodes`` are ignored.
    """
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees flat
            x = parent[x]
        return x

    for a, b in links:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # the root is always the smallest path
    return {n: find(n) for n in parent}


@dataclass
class SplitPlan:
    """The split of every relative path and how the components came out."""

    splits: dict[str, str]
    n_components: int = 0
    largest: int = 0  # relative paths in the largest component
    train_only: list[str] = field(default_factory=list)  # ids of components too large for val/test


def plan_splits(groups: Iterable[tuple[str, str]], val_frac: float = 0.15, test_frac: float = 0.15,
                seed: int = 0, links: Iterable[tuple[str, str]] = ()) -> SplitPlan:
    """Assign every component to ``train``, ``val`` or ``test`` (see the module docstring).

    Args:
        groups: (relpath, source) pairs; several sources may share a relpath.
        val_frac, test_frac: shares of relative paths (rounded per stratum).
        seed: changes the assignment.
        links: (relpath, relpath) pairs that must share a split.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac} and test_frac={test_frac} must be in [0, 1) and sum below 1")
    members: dict[str, set[str]] = defaultdict(set)
    for relpath, source in groups:
        members[relpath].add(source)
    comp_of = components(members, links)
    comps: dict[str, list[str]] = defaultdict(list)
    for rel, c in comp_of.items():
        comps[c].append(rel)
    strata: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for c, rels in comps.items():
        strata[tuple(sorted(set().union(*(members[r] for r in rels))))].append(c)
    plan = SplitPlan({}, len(comps), max((len(r) for r in comps.values()), default=0))
    for ids in strata.values():
        ids.sort(key=lambda c: _key(seed, c))
        n = sum(len(comps[c]) for c in ids)
        n_test, n_val = round(n * test_frac), round(n * val_frac)
        targets = [t for t in (n_test, n_val) if t > 0]
        cap = max(2, min(targets)) if targets else n  # larger: it would swamp val or test
        done = 0
        for c in ids:
            size = len(comps[c])
            if size > cap:
                split = "train"
                plan.train_only.append(c)
            else:
                # the midpoint rule: a component goes where most of it falls on the cut line
                mid = done + size / 2
                split = "test" if mid < n_test else "val" if mid < n_test + n_val else "train"
                done += size
            for rel in comps[c]:
                plan.splits[rel] = split
    return plan


def assign_splits(groups: Iterable[tuple[str, str]], val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 0, links: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """Map each relative path to ``train``, ``val`` or ``test``; see :func:`plan_splits`."""
    return plan_splits(groups, val_frac, test_frac, seed, links).splits


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
