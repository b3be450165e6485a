"""``dfflab data prepare``: decode a dataset once into the store every stage reads.

Steps, each visible in the store folder:

1. list the files; on a DFF layout check that fakes and reals line up by path;
2. decode every file (in parallel, with a progress bar), re-encode it as a JPEG at
   ``data.jpeg-quality`` when that is set, centre-crop and resize it:
   ``images.npy`` (N, S, S, 3) uint8, plus ``thumbs.npy``, each whole image squashed
   to 16 x 16 (for the partner matching); unusable files go to ``bad_files.csv``;
3. on a DFF layout without a ``partners.csv``, recover each insight fake's partner
   from the pixels (``pairs.csv``, ``pairs.png``; see ``pairs.py``);
4. split: the dataset's own ``splits.csv`` if it has one, else partner- and
   group-aware splits (``splits.py``) -> ``splits.csv``, ``index.csv``;
5. the leak audit (``leaks.json``, ``leaks.png``; see ``leaks.py``), with a warning
   when val/test images have near-copies in train;
6. ``meta.json`` last: its presence means the store is complete.

A complete store with the same dataset fingerprint and settings is kept as it is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dfflab.data.layout import GROUPS_FILE, PAIRS_FILE, PARTNERS_FILE, SPLITS_FILE
from dfflab.data.links import check_dff_alignment, dataset_links
from dfflab.data.neighbours import THUMB
from dfflab.data.pages import release
from dfflab.data.reader import (
    BadImage,
    DataError,
    Entry,
    EntryReader,
    detect_layout,
    list_entries,
    load_pixels,
    squash,
)
from dfflab.data.splits import components, plan_splits, read_splits, write_splits
from dfflab.data.store import INDEX_COLUMNS
from dfflab.runs import atomic_write_text, read_json, write_json

SIDE_FILES = (SPLITS_FILE, PARTNERS_FILE, GROUPS_FILE)  # part of what a dataset is
RELEASE_EVERY = 2048  # images written between hand-backs of the store's pages (dfflab.data.pages)

_reader: EntryReader | None = None


def _work(args: tuple[list[Entry], int, int]) -> list[tuple[np.ndarray | None, np.ndarray | None, dict | str]]:
    """Decode a chunk of entries in a worker process: (pixels, thumb, meta) or (None, None, reason)."""
    global _reader
    if _reader is None:
        _reader = EntryReader()
    entries, size, quality = args
    out = []
    for e in entries:
        try:
            pixels, d = load_pixels(_reader.read(e), e.location, size, quality)
            out.append((pixels, squash(d.rgb, THUMB), {"width": d.width, "height": d.height,
                                                        "jpeg_quality": d.jpeg_quality, "mode": d.mode}))
        except BadImage as err:
            out.append((None, None, str(err)))
        except (OSError, KeyError, RuntimeError) as err:  # unreadable member or file
            out.append((None, None, f"unreadable ({err})"))
    return out


def fingerprint(entries: list[Entry], root: Path | str | None = None) -> str:
    """A short hash of what the dataset holds: every file's source, path and size, and
    the bytes of the root's splits.csv, partners.csv and groups.csv."""
    h = hashlib.sha1()
    for e in sorted(entries, key=lambda e: (e.source, e.relpath)):
        h.update(f"{e.source}/{e.relpath}:{e.file_size}\n".encode())
    for name in SIDE_FILES if root is not None else ():
        p = Path(root) / name
        if p.is_file():
            h.update(f"{name}:".encode() + hashlib.sha1(p.read_bytes()).digest())
    return h.hexdigest()[:12]


def prepare(root: Path | str, out: Path | str, image_size: int = 64, *, val_frac: float = 0.15,
            test_frac: float = 0.15, split_seed: int = 0, max_bad_frac: float = 0.05, workers: int = 0,
            jpeg_quality: int = 0, progress: bool = True, force: bool = False) -> Path:
    """Decode ``root`` into a store at ``out`` (see the module docstring).

    Raises:
        DataError: a source is missing, a DFF layout's fakes don't line up with its
            reals, a side file is malformed, or more than ``max_bad_frac`` of files are
            bad (the bad-files report is written first, so the reason can be read).
    """
    root, out = Path(root), Path(out)
    t0 = time.time()
    if not 0 <= jpeg_quality <= 100:
        raise DataError(f"data.jpeg-quality must be 0 (off) or 1-100, got {jpeg_quality}")
    layout = detect_layout(root)
    entries = list_entries(root)
    if layout == "dff":
        check_dff_alignment(root, entries)
    links, link_notes = dataset_links(root, layout, {e.relpath for e in entries})
    fp = fingerprint(entries, root)
    settings = {"image_size": image_size, "jpeg_quality": jpeg_quality, "val_frac": val_frac,
                "test_frac": test_frac, "split_seed": split_seed}
    if not force and (out / "meta.json").is_file():
        meta = read_json(out / "meta.json")
        if meta.get("fingerprint") == fp and meta.get("settings") == settings:
            return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # the store is incomplete from here on
    kept, metas, bad = _decode(root, out, entries, image_size, jpeg_quality, max_bad_frac, workers, progress)
    images = np.load(out / "images.npy", mmap_mode="r")
    relpaths = np.array([e.relpath for e in kept])
    sources = np.array([e.source for e in kept])

    pairs_note = None
    if layout == "dff" and not (root / PARTNERS_FILE).is_file():
        from dfflab.data import pairs as pairs_mod

        found = pairs_mod.pairs_from_store(images, np.load(out / "thumbs.npy"), sources, relpaths, progress)
        if found is not None:
            pairs_mod.write_pairs(out / PAIRS_FILE, found)
            pairs_mod.plot_pairs(found, out / "pairs.png")
            links = links + found.links()
            pairs_note = pairs_mod.summary(found)

    splits, split_note = _splits(root, kept, links, val_frac, test_frac, split_seed)
    comp = components({e.relpath for e in kept}, links)
    write_splits(out / SPLITS_FILE, {e.relpath: splits[e.relpath] for e in kept})
    rows = [{"row": i, "relpath": e.relpath, "source": e.source, "label": e.label, "split": splits[e.relpath],
             "group": comp[e.relpath], "file_size": e.file_size, **m}
            for i, (e, m) in enumerate(zip(kept, metas, strict=True))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "index.csv", buf.getvalue())

    leaks = _leak_audit(out, images, rows, progress)
    counts = Counter((r["source"], r["split"]) for r in rows)
    write_json(out / "meta.json", {
        "root": str(root.resolve()), "layout": layout, "image_size": image_size, "jpeg_quality": jpeg_quality,
        "settings": settings, "fingerprint": fp, "n_images": len(rows), "n_bad": len(bad),
        "seconds": round(time.time() - t0, 2),
        "counts": {f"{s}/{sp}": c for (s, sp), c in sorted(counts.items())},
        "links": link_notes, "splits": split_note, "pairs": pairs_note, "leaks": leaks,
    })
    return out


def _decode(root: Path, out: Path, entries: list[Entry], size: int, quality: int, max_bad_frac: float,
            workers: int, progress: bool) -> tuple[list[Entry], list[dict], list[tuple[Entry, str]]]:
    """Write images.npy and thumbs.npy (good files only); returns (kept, their metadata, bad)."""
    n = len(entries)
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(256, n // (workers * 8) or 1))
    jobs = [(entries[i:i + chunk], size, quality) for i in range(0, n, chunk)]
    tmp = out / "images.npy.partial"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    thumbs = np.zeros((n, THUMB, THUMB, 3), dtype=np.uint8)
    metas: list[dict | str] = []
    bar = tqdm(total=n, desc=f"prepare {root.name} @ {size}px", unit="img", disable=not progress,
               dynamic_ncols=True)
    i = 0
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for results in pool.map(_work, jobs):
            for pixels, thumb, meta in results:
                if pixels is not None:
                    arr[i], thumbs[i] = pixels, thumb
                metas.append(meta)
                i += 1
            bar.update(len(results))
            if i % RELEASE_EVERY < len(results):  # written pages go to the file, not the resident set
                release(arr)
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
        tmp.unlink(missing_ok=True)
        raise DataError(f"{root}: {len(bad)} of {n} files are unusable "
                        f"(more than max-bad-frac={max_bad_frac:.0%}); see {out / 'bad_files.csv'}")
    if bad:  # compact: keep only good rows
        dense = np.lib.format.open_memmap(out / "images.npy.compact", mode="w+", dtype=np.uint8,
                                          shape=(len(good), size, size, 3))
        for j, k in enumerate(good):
            dense[j] = arr[k]
            if j % RELEASE_EVERY == RELEASE_EVERY - 1:
                release(dense)
                release(arr)
        dense.flush()
        del dense, arr
        tmp.unlink()
        tmp = out / "images.npy.compact"
    else:
        arr.flush()
        del arr
    os.replace(tmp, out / "images.npy")
    np.save(out / "thumbs.npy.partial.npy", thumbs[good])
    os.replace(out / "thumbs.npy.partial.npy", out / "thumbs.npy")
    return [entries[k] for k in good], [metas[k] for k in good], bad


def _splits(root: Path, kept: list[Entry], links: list[tuple[str, str]], val_frac: float, test_frac: float,
            seed: int) -> tuple[dict[str, str], dict]:
    """The dataset's own splits.csv, or partner- and group-aware splits; and a note for meta.json."""
    split_file = root / SPLITS_FILE
    if split_file.is_file():
        try:
            splits = read_splits(split_file)
        except ValueError as e:
            raise DataError(str(e)) from None
        missing = {e.relpath for e in kept} - splits.keys()
        if missing:
            raise DataError(f"{split_file}: {len(missing)} relative paths have no split "
                            f"(e.g. {sorted(missing)[0]})")
        return splits, {"from": str(split_file)}
    plan = plan_splits(((e.relpath, e.source) for e in kept), val_frac, test_frac, seed, links)
    if plan.train_only:
        print(f"{len(plan.train_only)} linked groups of relative paths (largest {plan.largest}) are too large for "
              "the val/test shares and were kept whole in train")
    return plan.splits, {"from": "computed", "components": plan.n_components, "largest": plan.largest,
                         "train_only": len(plan.train_only)}


def _leak_audit(out: Path, images: np.ndarray, rows: list[dict], progress: bool) -> dict:
    """Run the leak audit on the new store; write leaks.json and leaks.png; return its summary."""
    from dfflab.data.leaks import leak_audit, leak_grid, store_embedding

    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    labels, sources, split = col("label").astype(np.int64), col("source"), col("split")
    emb, what = store_embedding(images)
    result = leak_audit(emb, labels, sources, split, col("group"))
    result["embedding"] = what
    write_json(out / "leaks.json", result)
    leak_grid(images, result, sources, split, out / "leaks.png")
    if progress or result.get("leak_free") is False:
        print(result["message"])
    return {k: result[k] for k in ("leak_free", "message", "threshold") if k in result} | {
        k: {m: result[k][m] for m in ("n", "near_duplicate_share", "label_agreement")}
        for k in ("cross_split", "within_train") if k in result}


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
