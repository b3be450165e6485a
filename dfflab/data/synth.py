"""SynthDFF: a procedural stand-in for the DeepFakeFace (DFF) dataset, in DFF's layout.

DFF pairs 30,000 IMDB-WIKI photos (`wiki`) with three fakes of each: Stable Diffusion
v1.5 text-to-image (`text2img`), SD inpainting of the face (`inpainting`) and an
InsightFace face swap (`insight`). Its authors shuffled the photos of each gender and
paired them two by two: the fakes stored at X's path are made from X and its partner
Y, and Y's from Y and X. SynthDFF draws the reals as procedural portraits
(`synth_faces.py`, `synth_portrait.py`), pairs them the same way (inside fixed blocks
of indices, so a worker renders all a block needs) and makes each fake as DFF did
(`synth_fakes.py`).

Layout: `<out>/<source>/<NN>/<id>_<birth>_<year>.jpg`, or `<out>/<source>.zip` holding
`<source>/<NN>/...`; one `<NN>/<file>` names a real and its three fakes. `partners.csv`
(`relpath,partner`) records every pair, which DFF's file names don't, and
:func:`write_synth` adds a `splits.csv` that keeps each pair in one split. Output
depends only on the spec, never on `workers`.

    python -c "from dfflab.data.synth import synthesize; synthesize('data/synthdff')"
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import multiprocessing
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dfflab.data.layout import PARTNERS_FILE, SPLITS_FILE
from dfflab.data.links import read_partners
from dfflab.data.reader import list_entries
from dfflab.data.splits import assign_splits, write_splits
from dfflab.data.synth_fakes import SOURCE_STREAMS, SynthSpec, draw_fakes, make_real

__all__ = ["VERSION", "SynthSpec", "make_real", "partners", "relpaths", "synthesize", "write_synth"]

_SOURCES = SOURCE_STREAMS
_TABLE = 2**20  # rng stream of the file-name table
_BLOCK = 32  # partners are drawn inside fixed blocks, so a task renders all it needs
_MARKER = "SYNTHDFF.json"
_STAGING = ".synthdff-staging"
_DEFAULT = SynthSpec()
VERSION = 2  # 2: partners are mutual pairs, as in DFF, and partners.csv records them (1: cycles)


def synthesize(
    out: Path | str,
    spec: SynthSpec = _DEFAULT,
    as_zip: bool = False,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Writes SynthDFF under `out`.

    Files are drawn into a staging folder, then moved (or zipped) into place, so an
    interrupted run leaves no half dataset. A previous SynthDFF in `out` (one with
    SYNTHDFF.json) is replaced; other data in the way raises FileExistsError.

    Args:
        out: Root folder; gets wiki/, inpainting/, insight/, text2img/ or, with
            `as_zip`, the four `<source>.zip`, plus partners.csv and
            SYNTHDFF.json (spec and counts).
        spec: What to draw.
        as_zip: Write `<source>.zip` archives (entries `<source>/<NN>/<file>.jpg`).
        workers: Processes; 0 = os.cpu_count(). Output does not depend on it.
        progress: Show a tqdm bar.

    Returns:
        `out` as a Path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    staging = out / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    names, partner = relpaths(spec), partners(spec)
    jobs = [[(i, names[i], partner[i]) for i in b] for b in _blocks(spec.n_real)]
    tasks = [(spec, job, staging) for job in jobs]
    _run(tasks, workers or os.cpu_count() or 1, progress, 4 * spec.n_real)
    for source in _SOURCES:
        if as_zip:
            _zip_folder(staging / source, out / f"{source}.zip", source)
        else:
            os.replace(staging / source, out / source)
    shutil.rmtree(staging)
    _write_partners(out / PARTNERS_FILE, names, partner)
    meta = {
        "dataset": "SynthDFF",
        "version": VERSION,
        "spec": spec.record(),
        "layout": "zip" if as_zip else "folders",
        "counts": {s: spec.n_real for s in _SOURCES},
        "total": 4 * spec.n_real,
    }
    tmp = out / (_MARKER + ".part")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / _MARKER)
    return out


def write_synth(out: Path | str, spec: SynthSpec, cfg, as_zip: bool = False, progress: bool = True) -> Path:
    """Synthesize SynthDFF and save its partner-aware split beside it (``splits.csv``).

    The split keeps each partner pair (and so every image showing either photo or
    identity) in one split; ``cfg.data`` gives its fractions and seed.
    """
    out = Path(out)
    synthesize(out, spec, as_zip=as_zip, progress=progress)
    entries = list_entries(out, _SOURCES)
    links = read_partners(out / PARTNERS_FILE)
    splits = assign_splits(((e.relpath, e.source) for e in entries), cfg.data.val_frac,
                           cfg.data.test_frac, cfg.data.split_seed, links=links)
    write_splits(out / SPLITS_FILE, splits)
    return out


# --- names, partners and work split ------------------------------------------


def relpaths(spec: SynthSpec) -> list[str]:
    """`<NN>/<id>_<YYYY-MM-DD>_<year>.jpg` of every index, shared by all sources.

    As in IMDB-WIKI, NN is the id's last two digits; a permutation spreads ids evenly
    over the 100 folders, and distinct id prefixes keep them unique.
    """
    n = spec.n_real
    rng = np.random.default_rng([spec.seed, _TABLE])
    prefix = rng.choice(999_000, size=n, replace=False) + 1000
    bucket = rng.permutation(n) % 100
    born = rng.integers(1930, 1996, size=n)  # adults by 2013
    month, day_t = rng.integers(1, 13, size=n), rng.random(n)
    age = rng.random(n)
    names = []
    for i in range(n):
        y, m = int(born[i]), int(month[i])
        d = 1 + int(day_t[i] * calendar.monthrange(y, m)[1])
        taken = y + 18 + int(age[i] * (2015 - y - 18 + 1))  # photos up to 2015
        ident = int(prefix[i]) * 100 + int(bucket[i])
        names.append(f"{bucket[i]:02d}/{ident}_{y:04d}-{m:02d}-{d:02d}_{taken}.jpg")
    return names


def _blocks(n: int) -> list[list[int]]:
    """Fixed index blocks of about _BLOCK (never 1 unless n == 1); the unit of work."""
    k = max(1, -(-n // _BLOCK))
    return [b.tolist() for b in np.array_split(np.arange(n), k)]


def partners(spec: SynthSpec) -> list[int]:
    """Each index's partner: photos are paired two by two inside their block, as DFF
    paired its photos; an odd block ends in a cycle of three (a -> b -> c -> a)."""
    rng = np.random.default_rng([spec.seed, _TABLE + 1])
    partner = list(range(spec.n_real))
    for block in _blocks(spec.n_real):
        order = [int(i) for i in rng.permutation(block)]
        cut = len(order) - 3 if len(order) % 2 else len(order)
        for a, b in zip(order[:cut:2], order[1:cut:2], strict=True):
            partner[a], partner[b] = b, a
        tail = order[cut:]
        for a, b in zip(tail, tail[1:] + tail[:1], strict=True):
            partner[a] = b
    return partner


def _write_partners(path: Path, names: list[str], partner: list[int]) -> None:
    """``relpath,partner``: the photo whose picture or identity the fakes at relpath use."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["relpath", "partner"])
    for i in sorted(range(len(names)), key=names.__getitem__):
        w.writerow([names[i], names[partner[i]]])
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _run(tasks: list, workers: int, progress: bool, total: int) -> None:
    with tqdm(total=total, unit="img", desc="SynthDFF", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                bar.update(_render_block(task))
            return
        with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
            for count in pool.imap_unordered(_render_block, tasks):
                bar.update(count)




def _render_block(task) -> int:
    """Draws one block's reals and fakes into the staging folder."""
    spec, job, staging = task  # job: (index, relpath, partner index) triples
    reals = {i: make_real(spec, i) for i, _, _ in job}
    for i, name, p in job:
        for source, data in draw_fakes(spec, i, reals[i], reals[p]).items():
            path = staging / source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return 4 * len(job)


# --- files ------------------------------------------------------------------


def _clear_previous(out: Path) -> None:
    """Removes an earlier SynthDFF's sources; refuses to touch anything else."""
    targets = [out / s for s in _SOURCES] + [out / f"{s}.zip" for s in _SOURCES]
    targets += [out / PARTNERS_FILE, out / SPLITS_FILE]
    present = [t for t in targets if t.exists()]
    if present and not (out / _MARKER).exists():
        raise FileExistsError(f"{present[0]} exists and {out} holds no {_MARKER}")
    for t in present:
        if t.is_dir():
            shutil.rmtree(t)
        else:
            t.unlink()


def _zip_folder(folder: Path, dest: Path, source: str) -> None:
    """Stores a staged source as `<source>/<NN>/<file>.jpg` entries, sorted."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    part = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
        for rel in files:
            # A fixed timestamp keeps the archive byte-identical between runs.
            info = zipfile.ZipInfo(f"{source}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, (folder / rel).read_bytes())
    os.replace(part, dest)

