"""What ties relative paths together beyond a shared path: partners, groups, DFF's pairing.

A *link* is a pair of relative paths that must land in the same split, because an
image at one shows the photo or the person of the other. Links come from

* ``partners.csv`` (``relpath,partner``) at the dataset root: SynthDFF writes the truth;
  a user who knows DFF's pairing can write it too;
* ``groups.csv`` (``path,group``) at the dataset root: every file of one group (a
  person, a source video) is linked to every other;
* ``pairs.csv`` in the store: partners recovered from the pixels (``pairs.py``).

:func:`check_dff_alignment` also lives here: DFF's reals and fakes are tied by their
relative path, and a layout where they don't line up would silently make every file
its own group.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from dfflab.data.layout import GENERIC_REAL, REAL_SOURCE, SOURCES
from dfflab.data.reader import DataError, Entry

ALIGN_MIN = 0.99  # share of DFF fake paths that must have a wiki counterpart


def _rows(path: Path, columns: tuple[str, ...]) -> Iterable[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV that must have ``columns``; DataError names the file."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(columns) <= {c.strip() for c in reader.fieldnames}:
            raise DataError(f"{path}: expected a CSV with columns {','.join(columns)} "
                            f"(found {','.join(reader.fieldnames or []) or 'nothing'})")
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not all(row.get(c) for c in columns):
                raise DataError(f"{path}:{i}: empty {' or '.join(columns)}")
            yield i, row


def read_partners(path: Path | str) -> list[tuple[str, str]]:
    """(relpath, partner) rows of a ``partners.csv``; [] when the file doesn't exist."""
    path = Path(path)
    if not path.is_file():
        return []
    return [(r["relpath"], r["partner"]) for _, r in _rows(path, ("relpath", "partner"))]


def group_relpath(path: str, layout: str) -> str:
    """The relative path (group key) of a root-relative file path, per layout.

    Raises:
        ValueError: the path is not under a source folder of the layout.
    """
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if layout == "generic":
        if len(parts) >= 2 and parts[0] == GENERIC_REAL:
            return "/".join(parts[1:])
        if len(parts) >= 3 and parts[0] == "fake":
            return "/".join(parts[2:])
        raise ValueError(f"path '{path}' is not under {GENERIC_REAL}/ or fake/<source>/")
    if len(parts) >= 2 and parts[0] in SOURCES:
        return "/".join(parts[1:])
    raise ValueError(f"path '{path}' is not under one of {', '.join(f'{s}/' for s in SOURCES)}")


def read_groups(path: Path | str, layout: str) -> dict[str, str]:
    """``{relpath: group}`` from a ``groups.csv``; {} when the file doesn't exist.

    Raises:
        DataError: missing columns, a path outside the layout's source folders, or one
            relative path given two different groups (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for i, row in _rows(path, ("path", "group")):
        try:
            rel = group_relpath(row["path"], layout)
        except ValueError as e:
            raise DataError(f"{path}:{i}: {e}") from None
        if out.setdefault(rel, row["group"]) != row["group"]:
            raise DataError(f"{path}:{i}: {row['path']} is in group '{row['group']}' but a file with the "
                            f"same relative path {rel} is in group '{out[rel]}'; a real and its fakes share a group")
    return out


def group_links(groups: dict[str, str]) -> list[tuple[str, str]]:
    """Links that chain the relative paths of each group (a chain connects them all)."""
    members: dict[str, list[str]] = defaultdict(list)
    for rel, g in groups.items():
        members[g].append(rel)
    return [(a, b) for rels in members.values() for a, b in zip(sorted(rels), sorted(rels)[1:], strict=False)]


def dataset_links(root: Path | str, layout: str, relpaths: set[str]) -> tuple[list[tuple[str, str]], dict]:
    """Links from the root's ``partners.csv`` and ``groups.csv``, restricted to ``relpaths``.

    Returns:
        (links, notes): ``notes`` counts what was read and what named no known file.
    """
    from dfflab.data.layout import GROUPS_FILE, PARTNERS_FILE

    root = Path(root)
    partners = read_partners(root / PARTNERS_FILE)
    groups = read_groups(root / GROUPS_FILE, layout)
    links = partners + group_links(groups)
    kept = [(a, b) for a, b in links if a in relpaths and b in relpaths]
    notes = {"partners": len(partners), "grouped_paths": len(groups),
             "groups": len(set(groups.values())), "links_unknown_path": len(links) - len(kept)}
    unknown = [p for p in groups if p not in relpaths]
    if unknown:
        print(f"{root / GROUPS_FILE}: {len(unknown)} paths name no image of the dataset (e.g. {unknown[0]}); ignored")
    return kept, notes


def check_dff_alignment(root: Path | str, entries: list[Entry], min_share: float = ALIGN_MIN) -> float:
    """Share of DFF fake files whose relative path also exists under wiki/.

    Raises:
        DataError: below ``min_share``, naming the likeliest cause (other extensions,
            an extra folder level, other file names).
    """
    reals = {e.relpath for e in entries if e.source == REAL_SOURCE}
    fakes = [e for e in entries if e.source != REAL_SOURCE]
    if not fakes:
        return 1.0
    matched = sum(e.relpath in reals for e in fakes)
    share = matched / len(fakes)
    if share >= min_share:
        return share
    miss = next(e for e in fakes if e.relpath not in reals)

    def stem(p: str) -> str:
        return str(PurePosixPath(p).with_suffix(""))

    def tail(p: str) -> str:
        return p.split("/", 1)[-1]

    stems, tails = {stem(r) for r in reals}, {tail(r) for r in reals}
    by_stem = sum(stem(e.relpath) in stems for e in fakes) / len(fakes)
    by_tail = sum(e.relpath in reals or tail(e.relpath) in reals or e.relpath in tails for e in fakes) / len(fakes)
    if by_stem >= min_share:
        why = "the file extensions differ between wiki/ and the fake folders"
    elif by_tail >= min_share:
        why = "one side has an extra folder level (e.g. insight/insight/00/... or wiki/wiki/00/...)"
    else:
        why = "the file names don't match; DFF pairs <source>/<NN>/<file> with wiki/<NN>/<file>"
    raise DataError(f"{root}: only {matched:,} of {len(fakes):,} fake files ({share:.1%}) have a real at the same "
                    f"relative path under {REAL_SOURCE}/ (need {min_share:.0%}; e.g. {miss.location} has no "
                    f"{REAL_SOURCE}/{miss.relpath}): {why}")
