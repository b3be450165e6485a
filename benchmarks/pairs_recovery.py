"""Partner recovery on SynthDFF, whose true partners are known: precision, recall, time.

Writes (or reuses) a SynthDFF, decodes its wiki and insight files as ``prepare`` does
(centre crop at --image-size and the whole image squashed to 16x16), optionally
re-saves every insight fake at another JPEG quality first, runs the matching of
``dfflab data pairs`` and scores it against ``partners.csv``. Prints one line per
setting: reals, decode seconds, matching seconds, confident pairs, precision at the
confident threshold, recall, nearest-real accuracy.

    python benchmarks/pairs_recovery.py --n-real 3000
    python benchmarks/pairs_recovery.py --root results/data/synthdff-30k --n-real 30000 --reencode 0,75,50
"""

from __future__ import annotations

import argparse
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from dfflab.data.links import read_partners
from dfflab.data.neighbours import THUMB, thumbnails
from dfflab.data.pairs import recover_pairs, score_pairs
from dfflab.data.reader import EntryReader, list_entries, load_pixels, squash
from dfflab.data.synth import SynthSpec, synthesize


def _load(job):
    entries, size, reencode = job
    reader, out = EntryReader(), []
    for e in entries:
        data = reader.read(e)
        if reencode and e.source == "insight":
            buf = io.BytesIO()
            Image.open(io.BytesIO(data)).save(buf, "JPEG", quality=reencode)
            data = buf.getvalue()
        pixels, d = load_pixels(data, e.location, size)
        out.append((pixels, squash(d.rgb, THUMB)))
    return out


def views(entries, size, reencode, workers):
    chunks = [(entries[i:i + 512], size, reencode) for i in range(0, len(entries), 512)]
    with ProcessPoolExecutor(workers) as pool:
        got = [x for part in pool.map(_load, chunks) for x in part]
    crop = np.stack([g[0] for g in got])
    flat = np.stack([g[1] for g in got])
    return [thumbnails(crop, min(THUMB, size)), thumbnails(flat, min(THUMB, size))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="results/data/synthdff-pairs", help="SynthDFF folder (written if missing)")
    ap.add_argument("--n-real", type=int, default=3000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--reencode", default="0,50", help="insight JPEG qualities to try (0 = as written)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    root = Path(args.root)
    if not (root / "partners.csv").is_file():
        t = time.time()
        synthesize(root, SynthSpec(n_real=args.n_real, difficulty=0.85), workers=args.workers)
        print(f"wrote SynthDFF ({args.n_real} reals) in {time.time() - t:.0f} s")
    truth = dict(read_partners(root / "partners.csv"))
    entries = list_entries(root, ("wiki", "insight"))
    reals = [e for e in entries if e.source == "wiki"]
    fakes = [e for e in entries if e.source == "insight"]
    t = time.time()
    real_views = views(reals, args.image_size, 0, args.workers)
    t_real = time.time() - t
    print(f"{'reals':>7} {'insight q':>9} {'decode s':>9} {'match s':>8} {'confident':>10} "
          f"{'precision':>10} {'recall':>8} {'top1':>8}")
    for q in [int(v) for v in args.reencode.split(",")]:
        t = time.time()
        fake_views = views(fakes, args.image_size, q, args.workers)
        t_dec = time.time() - t + t_real
        t = time.time()
        pairs = recover_pairs(np.array([e.relpath for e in fakes]), fake_views, np.array([e.relpath for e in reals]),
                              real_views)
        t_match = time.time() - t
        s = score_pairs(pairs, truth)
        print(f"{len(reals):>7} {q or 'as is':>9} {t_dec:>9.1f} {t_match:>8.1f} {s['confident']:>10} "
              f"{s['precision']:>10.4f} {s['recall']:>8.4f} {s['top1']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
