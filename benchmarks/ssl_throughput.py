"""SSL pretraining throughput: the real loop vs the model's step alone, in one run.

Prints images/s (one image = two views) of
  * loop        ``dfflab.ssl.loop.ssl_epoch`` as ``pretrain`` runs it: shuffled batches read
                from the prepared store (background thread + pinned memory on a GPU), copied
                to the device, two batched views made there, step;
  * model step  the same method's ``ssl_step`` on views already on the device;
  * ratio       loop / model step (goal on a GPU: >= 0.8),
plus the parts (store reads alone, views alone) to show where a gap comes from.

    python benchmarks/ssl_throughput.py                              # quick preset, this machine
    python benchmarks/ssl_throughput.py --device cuda --batch-size 512 --steps 100
    python benchmarks/ssl_throughput.py --preset full --method byol --views imagenet
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from dfflab.config import load_config
from dfflab.data import ensure_store
from dfflab.device import prepare_model, resolve_device, set_threads, to_device_images
from dfflab.models import build_backbone
from dfflab.ssl.loop import prefetch, ssl_epoch, ssl_step
from dfflab.ssl.methods import build_method
from dfflab.ssl.views import make_view


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def store_batches(store, rows, batch_size: int):
    """Shuffled store batches, epoch after epoch, as pretraining reads them."""
    for epoch in itertools.count():
        yield from store.batches(rows, batch_size, shuffle=True, seed=epoch, drop_last=True)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default=None, help="default: train.device")
    ap.add_argument("--batch-size", type=int, default=None, help="default: ssl.batch-size")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per figure")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernels, allocator)")
    ap.add_argument("--method", default=None, help="default: ssl.method")
    ap.add_argument("--views", default=None, help="default: ssl.views")
    args = ap.parse_args()

    cfg = load_config(args.preset, args.overrides)
    s = cfg.ssl
    bs, method_name, views = args.batch_size or s.batch_size, args.method or s.method, args.views or s.views
    set_threads(cfg.train.threads)
    device = resolve_device(args.device or cfg.train.device)
    store = ensure_store(cfg, progress=False)
    rows = store.select("train")
    method = prepare_model(build_method(method_name, build_backbone(cfg.model.backbone, cfg.model.width), s),
                           device)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=s.lr)
    view, gen = make_view(views), torch.Generator(device=device).manual_seed(0)
    total = args.warmup * 2 + args.steps * 2
    print(f"{method_name}, views {views}, {cfg.model.backbone}(width {cfg.model.width}) at "
          f"{store.image_size}px, batch {bs}, device {device}, {torch.get_num_threads()} CPU threads")

    def loop(n: int, step: int):
        batches = prefetch(itertools.islice(store_batches(store, rows, bs), n), device)
        ssl_epoch(method, batches, opt, view, device, step=step, total_steps=total, gen=gen, amp=cfg.train.amp)

    x = to_device_images(store.batch(rows[:bs])[0], device)
    x0, x1 = view(x, gen), view(x, gen)

    def steps(n: int, step: int):
        for i in range(n):
            ssl_step(method, opt, x0, x1, step + i, total, amp=cfg.train.amp)

    loop(args.warmup, 0)
    steps(args.warmup, args.warmup)
    t_loop = timed(lambda: loop(args.steps, 2 * args.warmup), device)
    t_step = timed(lambda: steps(args.steps, 2 * args.warmup + args.steps), device)
    it = store_batches(store, rows, bs)
    t_read = timed(lambda: [to_device_images(b[0], device) for b in itertools.islice(it, args.steps)], device)
    t_view = timed(lambda: [(view(x, gen), view(x, gen)) for _ in range(args.steps)], device)

    n = args.steps * bs
    print(f"loop (store -> device -> 2 views -> step): {n / t_loop:10.0f} img/s")
    print(f"model step on device tensors:              {n / t_step:10.0f} img/s")
    print(f"ratio loop / model step:                   {t_step / t_loop:10.2f}   (goal on a GPU: >= 0.8)")
    print(f"  parts: store reads + copy {n / t_read:.0f} img/s, two views {n / t_view:.0f} img/s")


if __name__ == "__main__":
    main()
