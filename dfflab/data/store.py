"""The prepared store: every image decoded once, centre-cropped and resized, as uint8.

``dfflab data prepare`` (``prepare.py``) writes, into one folder:

* ``images.npy``   (N, S, S, 3) uint8, read memory-mapped by every stage;
* ``thumbs.npy``   (N, 16, 16, 3) uint8, each whole image squashed to a square (pairs);
* ``index.csv``    one row per image: row, relpath, source, label, split, group, width,
                   height, file_size, jpeg_quality, mode (the metadata the shortcut audit
                   uses; ``group`` is the id of the linked relative paths it belongs to);
* ``splits.csv``, ``bad_files.csv``, ``leaks.json`` / ``leaks.png`` and, on DFF,
  ``pairs.csv`` / ``pairs.png``;
* ``meta.json``    image size, settings, counts, dataset fingerprint, leak summary
                   (written last: its presence means the store is complete).

Training stages read batches from :class:`Store` and augment tensors; no JPEG is decoded
after prepare.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dfflab.data.layout import is_real_source, source_order
from dfflab.data.reader import DataError
from dfflab.runs import read_json

INDEX_COLUMNS = ("row", "relpath", "source", "label", "split", "group", "width", "height",
                 "file_size", "jpeg_quality", "mode")


class Store:
    """Read side of a prepared store.

    Attributes:
        images: (N, S, S, 3) uint8, memory-mapped (or in RAM with ``in_memory``).
        labels: (N,) int64, 0 real / 1 fake.
        source_names: sources present, reals first.
        source_ids: (N,) int64 index into ``source_names``.
        split: (N,) str array of train/val/test.
        groups: (N,) str array: the id of the linked relative paths each image belongs
            to (its relative path where the index doesn't say).
    """

    def __init__(self, path: Path | str, in_memory: bool = False):
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise DataError(f"{self.path}: not a prepared store (no meta.json); run `dfflab data prepare`")
        self.meta = read_json(self.path / "meta.json")
        self.images = np.load(self.path / "images.npy", mmap_mode=None if in_memory else "r")
        with open(self.path / "index.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if len(rows) != len(self.images):
            raise DataError(f"{self.path}: index.csv has {len(rows)} rows but images.npy {len(self.images)}")
        self.rows = rows
        self.relpaths = np.array([r["relpath"] for r in rows])
        self.sources = np.array([r["source"] for r in rows])
        self.labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        self.split = np.array([r["split"] for r in rows])
        self.groups = np.array([r.get("group") or r["relpath"] for r in rows])
        self.source_names = source_order(set(self.sources.tolist()))
        self.source_ids = np.array([self.source_names.index(s) for s in self.sources], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def fake_sources(self) -> list[str]:
        return [s for s in self.source_names if not is_real_source(s)]

    @property
    def thumbs(self) -> np.ndarray | None:
        """(N, 16, 16, 3) uint8 whole-image thumbnails, or None for a store without them."""
        p = self.path / "thumbs.npy"
        return np.load(p, mmap_mode="r") if p.is_file() else None

    def resolve_sources(self, sources: list[str] | None) -> list[str]:
        """The fake sources ``sources`` names; empty or None means every one the store holds.

        Raises:
            ValueError: a name that is not one of the store's fake sources.
        """
        if not sources:
            return list(self.fake_sources)
        unknown = [s for s in sources if s not in self.fake_sources]
        if unknown:
            raise ValueError(f"unknown fake source(s) {unknown}; the store {self.path} has "
                             f"{', '.join(self.fake_sources)}")
        return list(sources)

    def select(self, split: str | None = None, sources: list[str] | None = None,
               include_reals: bool = True) -> np.ndarray:
        """Row indices of one split, keeping reals (if asked) and the named fake sources.

        ``sources`` None or empty keeps every fake source (``train.train-sources = []``).
        """
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= self.split == split
        unknown = set(sources or ()) - set(self.source_names)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)} (store has {self.source_names})")
        is_fake_kept = np.isin(self.sources, list(sources or self.fake_sources)) & (self.labels == 1)
        is_real = (self.labels == 0) if include_reals else np.zeros(len(self), dtype=bool)
        keep &= is_fake_kept | is_real
        return np.flatnonzero(keep)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 images (B, 3, S, S) channels-last, labels (B,), source ids (B,)."""
        order = np.sort(rows)  # sorted reads are sequential on the memory map
        perm = np.argsort(np.argsort(rows))
        x = np.ascontiguousarray(self.images[order])[perm]
        return (torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(self.labels[rows]),
                torch.from_numpy(self.source_ids[rows]))

    def batches(self, rows: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Iterate over ``rows`` in batches (shuffled per ``seed`` if asked)."""
        rows = np.asarray(rows)
        if shuffle:
            rows = rows[np.random.default_rng(seed).permutation(len(rows))]
        stop = len(rows) - (len(rows) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            yield self.batch(rows[i:i + batch_size])

    def summary(self) -> str:
        """A human-readable table of counts per source and split."""
        lines = [f"store {self.path}  ({len(self)} images, {self.image_size}px, fingerprint {self.fingerprint})",
                 f"{'source':<12}{'label':<7}" + "".join(f"{s:>8}" for s in ("train", "val", "test", "total"))]
        for s in self.source_names:
            m = self.sources == s
            counts = [int((m & (self.split == sp)).sum()) for sp in ("train", "val", "test")]
            lab = "real" if self.labels[m][0] == 0 else "fake"
            lines.append(f"{s:<12}{lab:<7}" + "".join(f"{c:>8}" for c in counts + [int(m.sum())]))
        w = np.array([int(r["width"]) for r in self.rows])
        h = np.array([int(r["height"]) for r in self.rows])
        for s in self.source_names:
            m = self.sources == s
            lines.append(f"native size {s:<11} width {w[m].min()}-{w[m].max()}  height {h[m].min()}-{h[m].max()}")
        if self.meta.get("n_bad"):
            lines.append(f"skipped files: {self.meta['n_bad']} (see {self.path / 'bad_files.csv'})")
        if self.meta.get("jpeg_quality"):
            q = self.meta["jpeg_quality"]
            lines.append(f"every image re-encoded as JPEG at quality {q} before crop and resize")
        pairs = self.meta.get("pairs") or {}
        if pairs:
            lines.append(f"insight partners recovered from pixels: {pairs['confident']:,} of {pairs['fakes']:,} "
                         f"confident (see {self.path / 'pairs.csv'})")
        leaks = self.meta.get("leaks") or {}
        if leaks.get("message"):
            lines.append(leaks["message"])
        return "\n".join(lines)


def remove_store(path: Path | str) -> None:
    shutil.rmtree(path, ignore_errors=True)
