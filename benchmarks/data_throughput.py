"""Data throughput: prepare vs reading the store vs decoding JPEGs every epoch.

Prints, side by side in one run:
  * prepare          images/s of `dfflab data prepare` (decode + crop + resize + write, all cores);
  * store batches    images/s of Store.batches (shuffled, memory-mapped uint8 -> tensors);
  * plain loader     images/s of a torch DataLoader that decodes and resizes each JPEG per epoch.
Goal: store >= 10x plain loader.

    python benchmarks/data_throughput.py                       # SynthDFF, 1000 reals, 64 px
    python benchmarks/data_throughput.py --data data/dff --image-size 128 --limit 20000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dfflab.data.prepare import prepare
from dfflab.data.reader import EntryReader, crop_resize, decode, list_entries
from dfflab.data.store import Store


class PlainJPEGDataset(Dataset):
    """Decode + crop + resize every image on every access (the usual ImageFolder way)."""

    def __init__(self, entries, size):
        self.entries, self.size, self.reader = entries, size, None

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        if self.reader is None:
            self.reader = EntryReader()
        e = self.entries[i]
        x = crop_resize(decode(self.reader.read(e)).rgb, self.size)
        return torch.from_numpy(x.copy()).permute(2, 0, 1), e.label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset root (default: synthesize SynthDFF into a temp folder)")
    ap.add_argument("--n-real", type=int, default=1000, help="SynthDFF size when --data is not given")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for prepare and the plain loader")
    ap.add_argument("--epochs", type=int, default=3, help="store passes to time")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dfflab-bench-"))
    root = Path(args.data) if args.data else tmp / "synthdff"
    if not args.data:
        from dfflab.config import load_config
        from dfflab.data.synth import SynthSpec, write_synth

        t = time.time()
        write_synth(root, SynthSpec(n_real=args.n_real), load_config("quick"), progress=False)
        print(f"synthesized {4 * args.n_real} images in {time.time() - t:.1f}s")

    t = time.time()
    out = prepare(root, tmp / "store", args.image_size, workers=args.workers, progress=False, force=True)
    t_prep = time.time() - t
    store = Store(out)
    n = len(store)
    rows = np.arange(n)

    t = time.time()
    seen = 0
    for epoch in range(args.epochs):
        for x, _, _ in store.batches(rows, args.batch_size, shuffle=True, seed=epoch):
            seen += len(x)
            x.float()  # the conversion the training loop does
    t_store = time.time() - t

    ds = PlainJPEGDataset(list_entries(root), args.image_size)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    t = time.time()
    plain = 0
    for x, _ in loader:
        plain += len(x)
        x.float()
    t_plain = time.time() - t

    rates = {"prepare (once)": n / t_prep, "store batches": seen / t_store, "plain JPEG loader": plain / t_plain}
    print(f"{n} images at {args.image_size}px, {args.workers} workers, batch {args.batch_size}")
    for k, v in rates.items():
        print(f"  {k:<20}{v:>12,.0f} img/s")
    print(f"  store / plain ratio {rates['store batches'] / rates['plain JPEG loader']:>10.1f}x  (goal >= 10x)")


if __name__ == "__main__":
    main()
