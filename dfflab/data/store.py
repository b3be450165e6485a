"""The prepared store: every image decoded once, centre-cropped and resized, as uint8.

``dfflab data prepare`` writes, into one folder:

* ``images.npy``   (N, S, S, 3) uint8, read memory-mapped by every stage;
* ``index.csv``    one row per image: row, relpath, source, label, split, width, height,
                   file_size, jpeg_quality, mode (the metadata the shortcut audit uses);
* ``bad_files.csv`` every skipped file with the reason;
* ``meta.json``    image size, counts, dataset fingerprint (written last: its presence
                   means the store is complete).

Training stages read batches from :class:`Store` and augment tensors; no JPEG is decoded
after prepare. Decoding runs in parallel processes with a progress bar.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dfflab.data.layout import source_order
from dfflab.data.reader import (
    BadImage,
    DataError,
    Entry,
    EntryReader,
    crop_resize,
    decode,
    list_entries,
)
from dfflab.data.splits import assign_splits, read_splits, write_splits
from dfflab.runs import atomic_write_text, read_json, write_json

INDEX_COLUMNS = ("row", "relpath", "source", "label", "split", "width", "height",
                 "file_size", "jpeg_quality", "mode")

_reader: EntryReader | None = None


def _work(args: tuple[list[Entry], int]) -> list[tuple[np.ndarray | None, dict | str]]:
    """Decode a chunk of entries in a worker process: (pixels, meta) or (None, reason)."""
    global _reader
    if _reader is None:
        _reader = EntryReader()
    entries, size = args
    out = []
    for e in entries:
        try:
            d = decode(_reader.read(e), e.location)
            out.append((crop_resize(d.rgb, size), {"width": d.width, "height": d.height,
                                                   "jpeg_quality": d.jpeg_quality, "mode": d.mode}))
        except BadImage as err:
            out.append((None, str(err)))
        except (OSError, KeyError, RuntimeError) as err:  # unreadable member or file
            out.append((None, f"unreadable ({err})"))
    return out


def fingerprint(entries: list[Entry]) -> str:
    """A short hash of what the dataset holds (source, relpath, size of every file)."""
    h = hashlib.sha1()
    for e in sorted(entries, key=lambda e: (e.source, e.relpath)):
        h.update(f"{e.source}/{e.relpath}:{e.file_size}\n".encode())
    return h.hexdigest()[:12]


def prepare(root: Path | str, out: Path | str, image_size: int = 64, *, val_frac: float = 0.15,
            test_frac: float = 0.15, split_seed: int = 0, max_bad_frac: float = 0.05,
            workers: int = 0, progress: bool = True, force: bool = False) -> Path:
    """Decode ``root`` into a store at ``out`` (see the module docstring).

    Splits come from ``<root>/splits.csv`` when the dataset ships one (SynthDFF does),
    else they are computed with :func:`assign_splits`. A complete store with the same
    fingerprint and size is kept unless ``force``.

    Raises:
        DataError: a source is missing, or more than ``max_bad_frac`` of files are bad
            (the bad-files report is written first, so the reason can be read).
    """
    root, out = Path(root), Path(out)
    t0 = time.time()
    entries = list_entries(root)
    fp = fingerprint(entries)
    if not force and (out / "meta.json").is_file():
        meta = read_json(out / "meta.json")
        if meta.get("fingerprint") == fp and meta.get("image_size") == image_size:
            return out
    out.mkdir(parents=True, exist_ok=True)
    n = len(entries)
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(256, n // (workers * 8) or 1))
    jobs = [(entries[i:i + chunk], image_size) for i in range(0, n, chunk)]
    tmp_images = out / "images.npy.partial"
    arr = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8,
                                    shape=(n, image_size, image_size, 3))
    metas: list[dict | str] = []
    bar = tqdm(total=n, desc=f"prepare {root.name} @ {image_size}px", unit="img",
               disable=not progress, dynamic_ncols=True)
    i = 0
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for results in pool.map(_work, jobs):
            for pixels, meta in results:
                if pixels is not None:
                    arr[i] = pixels
                metas.append(meta)
                i += 1
            bar.update(len(results))
    bar.close()

    good = [k for k, m in enumerate(metas) if isinstance(m, dict)]
    bad = [(entries[k], metas[k]) for k, m in enumerate(metas) if isinstance(m, str)]
    _write_bad_report(out / "bad_files.csv", bad)
    if bad:
        print(f"{len(bad)} of {n} files skipped; see {out / 'bad_files.csv'}")
        for e, reason in bad[:5]:
            print(f"  {e.location}: {reason}")
    if n == 0 or len(bad) / n > max_bad_frac:
        del arr
        tmp_images.unlink(missing_ok=True)
        raise DataError(f"{root}: {len(bad)} of {n} files are unusable "
                        f"(more than max-bad-frac={max_bad_frac:.0%}); see {out / 'bad_files.csv'}")
    if bad:  # compact: keep only good rows
        dense = np.lib.format.open_memmap(out / "images.npy.compact", mode="w+", dtype=np.uint8,
                                          shape=(len(good), image_size, image_size, 3))
        for j, k in enumerate(good):
            dense[j] = arr[k]
        dense.flush()
        del dense, arr
        tmp_images.unlink()
        tmp_images = out / "images.npy.compact"
    else:
        arr.flush()
        del arr
    os.replace(tmp_images, out / "images.npy")

    split_file = root / "splits.csv"
    kept = [entries[k] for k in good]
    if split_file.is_file():
        splits = read_splits(split_file)
        missing = {e.relpath for e in kept} - splits.keys()
        if missing:
            raise DataError(f"{split_file}: {len(missing)} relative paths have no split "
                            f"(e.g. {sorted(missing)[0]})")
    else:
        splits = assign_splits(((e.relpath, e.source) for e in entries), val_frac, test_frac, split_seed)
    write_splits(out / "splits.csv", {e.relpath: splits[e.relpath] for e in kept})
    rows = []
    for row, k in enumerate(good):
        e, m = entries[k], metas[k]
        rows.append({"row": row, "relpath": e.relpath, "source": e.source, "label": e.label,
                     "split": splits[e.relpath], "file_size": e.file_size, **m})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "index.csv", buf.getvalue())
    counts = Counter((r["source"], r["split"]) for r in rows)
    write_json(out / "meta.json", {
        "root": str(root.resolve()), "image_size": image_size, "fingerprint": fp,
        "n_images": len(rows), "n_bad": len(bad), "seconds": round(time.time() - t0, 2),
        "counts": {f"{s}/{sp}": c for (s, sp), c in sorted(counts.items())},
    })
    return out


class _Inline:
    """A stand-in for a process pool when one worker is asked for (tests, debugging)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, jobs):
        return map(fn, jobs)


def _write_bad_report(path: Path, bad: list[tuple[Entry, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "source", "relpath", "reason"])
    for e, reason in bad:
        w.writerow([e.location, e.source, e.relpath, reason])
    atomic_write_text(path, buf.getvalue())


class Store:
    """Read side of a prepared store.

    Attributes:
        images: (N, S, S, 3) uint8, memory-mapped (or in RAM with ``in_memory``).
        labels: (N,) int64, 0 real / 1 fake.
        source_names: sources present, reals first.
        source_ids: (N,) int64 index into ``source_names``.
        split: (N,) str array of train/val/test.
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
        return [s for s in self.source_names if s not in ("wiki", "real")]

    def select(self, split: str | None = None, sources: list[str] | None = None,
               include_reals: bool = True) -> np.ndarray:
        """Row indices of one split, keeping reals (if asked) and the named fake sources."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= self.split == split
        if sources is not None:
            unknown = set(sources) - set(self.source_names)
            if unknown:
                raise ValueError(f"unknown sources {sorted(unknown)} (store has {self.source_names})")
            is_fake_kept = np.isin(self.sources, list(sources)) & (self.labels == 1)
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
        return "\n".join(lines)


def remove_store(path: Path | str) -> None:
    shutil.rmtree(path, ignore_errors=True)
