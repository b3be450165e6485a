"""GAN training-step throughput on this machine: ``train_epoch`` as ``dfflab generative train`` runs it.

Prints real images per second through D (one D step + one G step + EMA per batch of
``gan.batch-size``), milliseconds per G step, and the process CPU time per step. On a
shared machine wall time depends on the other load; CPU time per step with one thread
does much less, so both are printed (``cpu use`` = CPU seconds per wall second).
Run from the repository root (``PYTHONPATH=.`` when dfflab is installed from elsewhere):

    PYTHONPATH=. python benchmarks/gan_step.py                          # quick preset, all cores
    PYTHONPATH=. python benchmarks/gan_step.py --threads 1 --steps 60   # one thread (shared machine)
    PYTHONPATH=. python benchmarks/gan_step.py --set gan.precision=fp32 --set gan.diffaug=none
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dfflab.config import load_config
from dfflab.data import ensure_store
from dfflab.device import resolve_device, set_threads
from dfflab.generative.train import build_parts, load_train_data, train_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    ap.add_argument("--steps", type=int, default=40, help="timed G steps per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is printed)")
    ap.add_argument("--device", help="train.device (default: the preset's)")
    ap.add_argument("--store", help="a prepared store to train on (default: the preset's data)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON lines")
    args = ap.parse_args()

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.store:
        overrides.append(f"data.store={args.store}")
    cfg = load_config(args.preset, overrides)
    gc = cfg.gan
    set_threads(args.threads)
    device = resolve_device(cfg.train.device)
    store = ensure_store(cfg, progress=False)
    per = gc.batch_size * gc.d_steps
    rows = store.select("train")[: per * (args.steps + 3)]
    x, y = load_train_data(store, rows, gc.image_size, device)  # as training holds them: uint8 on the device
    parts = build_parts(cfg, len(store.source_names), device)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"GAN {gc.arch} {gc.image_size}px, G width {gc.g_width}, D width {gc.d_width}, batch {gc.batch_size}, "
          f"d-steps {gc.d_steps}, diffaug {gc.diffaug}, ema {gc.ema}, precision {gc.precision} "
          f"({parts.amp_dtype or 'fp32'}); device {device}, {torch.get_num_threads()} CPU threads")
    train_epoch(parts, (x[: 3 * per], y[: 3 * per]), cfg, gen, 0, 0)  # warm-up: kernels, allocator
    timed = (x[3 * per:], y[3 * per:])
    if len(timed[0]) < per:
        raise SystemExit(f"the store {store.path} has {len(rows)} train images: too few for a timed step of {per}")
    walls, cpus = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        train_epoch(parts, timed, cfg, gen, 0, 0)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    n_g = len(timed[0]) // per
    n_img = n_g * per
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"wall: {n_img / wall:8.0f} img/s  {1000 * wall / n_g:7.1f} ms per G step   (median of {args.repeats} x "
          f"{n_g} G steps)")
    print(f"cpu:  {1000 * cpu / n_g:7.1f} ms CPU time per G step, cpu use {cpu / wall:.2f}")
    if args.json:
        ctx = {"arch": gc.arch, "image_size": gc.image_size, "batch": gc.batch_size, "device": str(device),
               "g_steps": n_g}
        print(json.dumps({"figure": "gan_step_img_per_s", "value": round(n_img / wall, 1), "unit": "img/s", **ctx}))
        print(json.dumps({"figure": "gan_ms_per_g_step", "value": round(1000 * wall / n_g, 2), "unit": "ms", **ctx}))


if __name__ == "__main__":
    main()
