"""The GPU readiness check: DFF-scale data and every training loop on one device, one JSON line per figure.

    bash benchmarks/gpu_check.sh                 # on a machine with an NVIDIA GPU, <= 8 minutes
    python benchmarks/gpu_check.py --cpu-smoke   # the same code paths at toy size on a CPU (< 2 minutes)

Figures (each line: {"figure", "value", "unit", ...context}; an "error" line for a section that
crashed, and a non-zero exit status if any did):

1. ``synth_img_per_s`` -- SynthDFF written as DFF's four zips with 512 px fakes (``--n-real`` reals;
   DFF itself is 30,000), and ``prepare_img_per_s`` -- decoding it into the store at 128 px;
2. ``store_to_device_img_per_s`` -- store batches to device tensors (what every loop is fed by);
3. ``detector_loop_img_per_s`` / ``detector_bare_img_per_s`` / ``detector_loop_over_bare`` -- the
   detector recipe's real epoch (:class:`dfflab.detector.recipe.Recipe`) against the bare model step
   on one fixed device batch (goal >= 0.8);
4. ``ssl_loop_img_per_s`` / ``ssl_bare_img_per_s`` / ``ssl_loop_over_bare`` -- the SSL epoch loop
   against its bare step (goal >= 0.8);
5. ``gan_step_img_per_s`` -- the GAN's training step;
6. ``fl_over_central_wall`` -- a 3-client federated run sharing the device against the centralized
   run of the same epochs (goal <= 1.15).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

FAILED: list[str] = []


def emit(figure: str, value, unit: str = "", **context) -> None:
    print(json.dumps({"figure": figure, "value": value, "unit": unit, **context}), flush=True)


def section(name: str):
    """Run a section; a crash prints an error line and is remembered (non-zero exit), the rest goes on."""

    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.time()
            try:
                out = fn(*args, **kwargs)
                emit(f"{name}_seconds", round(time.time() - t0, 2), "s")
                return out
            except Exception as e:  # a check reports every section, then fails
                FAILED.append(name)
                print(json.dumps({"figure": name, "error": f"{type(e).__name__}: {e}"}), flush=True)
                traceback.print_exc(file=sys.stderr)
                return None

        return run

    return wrap


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@section("data")
def data(cfg, tmp: Path, n_real: int, fake_size: int, image_size: int):
    from dfflab.data.prepare import prepare
    from dfflab.data.store import Store
    from dfflab.data.synth import SynthSpec, write_synth

    root = tmp / "synthdff-dff-scale"
    t0 = time.time()
    write_synth(root, SynthSpec(n_real=n_real, fake_size=fake_size, difficulty=cfg.data.difficulty), cfg,
                as_zip=True, progress=False)
    secs = time.time() - t0
    emit("synth_img_per_s", round(4 * n_real / secs, 1), "img/s", images=4 * n_real, fake_size=fake_size,
         zip_mb=round(sum(p.stat().st_size for p in root.glob("*.zip")) / 2**20, 1))
    t0 = time.time()
    out = prepare(root, tmp / "store", image_size, progress=False, force=True)
    secs = time.time() - t0
    store = Store(out)
    emit("prepare_img_per_s", round(len(store) / secs, 1), "img/s", images=len(store), image_size=image_size,
         store_mb=round((out / "images.npy").stat().st_size / 2**20, 1))
    return store


@section("store_to_device")
def store_to_device(store, device, batch_size: int):
    import numpy as np

    from dfflab.device import to_device_images

    rows, seen = np.arange(len(store)), 0
    sync(device)
    t0 = time.time()
    for x, _, _ in store.batches(rows, batch_size, shuffle=True, seed=0):
        to_device_images(x, device)
        seen += len(x)
    sync(device)
    emit("store_to_device_img_per_s", round(seen / (time.time() - t0), 1), "img/s", batch=batch_size,
         device=str(device))


def _bare(model, x, y, loss_fn, opt, steps: int, device, amp: bool, augment=None) -> float:
    """img/s of the bare step: forward, loss, backward, optimizer step on one fixed device batch."""
    from dfflab.device import autocast

    def step():
        xx = augment(x, None) if augment else x
        with autocast(device, amp):
            loss = loss_fn(model(xx).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    sync(device)
    t0 = time.time()
    for _ in range(steps):
        step()
    sync(device)
    return steps * len(x) / (time.time() - t0)


@section("detector")
def detector(cfg, store, device, steps: int):
    from dfflab.detector.recipe import initial_model, make_recipe
    from dfflab.detector.rows import select_rows
    from dfflab.device import to_device_images

    rows = select_rows(store, cfg.train)["train"][: steps * cfg.train.batch_size]
    model, _ = initial_model(cfg, device)
    recipe = make_recipe(cfg, store, rows, device, model, total_epochs=2)
    recipe.train_epoch(0)  # warm-up: kernels, allocator
    sync(device)
    t0 = time.time()
    stats = recipe.train_epoch(1)
    sync(device)
    loop = stats["images"] / (time.time() - t0)
    x, y, _ = store.batch(rows[: cfg.train.batch_size])
    x, y = to_device_images(x, device), y.to(device).float()
    bare = _bare(model, x, y, recipe.loss_fn, recipe.opt, steps, device, cfg.train.amp, recipe.augment)
    ctx = {"backbone": cfg.model.backbone, "image_size": store.image_size, "batch": cfg.train.batch_size}
    emit("detector_loop_img_per_s", round(loop, 1), "img/s", **ctx)
    emit("detector_bare_img_per_s", round(bare, 1), "img/s", **ctx)
    emit("detector_loop_over_bare", round(loop / bare, 3), "ratio", goal=">= 0.8", **ctx)


@section("ssl")
def ssl(cfg, store, device, steps: int):
    from dfflab.device import prepare_model, to_device_images
    from dfflab.models import build_backbone
    from dfflab.ssl.loop import prefetch, ssl_epoch, ssl_step
    from dfflab.ssl.methods import build_method
    from dfflab.ssl.views import make_view

    s = cfg.ssl
    method = prepare_model(build_method(s.method, build_backbone(cfg.model.backbone, cfg.model.width), s), device)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=s.lr)
    view, gen = make_view(s.views), torch.Generator(device=device).manual_seed(0)
    rows = store.select("train")[: steps * s.batch_size]
    total = 6 * steps

    def loop(step: int) -> float:
        batches = prefetch(store.batches(rows, s.batch_size, shuffle=True, seed=step, drop_last=True), device)
        sync(device)
        t0 = time.time()
        stats = ssl_epoch(method, batches, opt, view, device, step=step, total_steps=total, gen=gen,
                          amp=cfg.train.amp)
        sync(device)
        return stats["images"] / (time.time() - t0)

    loop(0)  # warm-up
    rate_loop = loop(steps)
    x = to_device_images(store.batch(rows[: s.batch_size])[0], device)
    x0, x1 = view(x, gen), view(x, gen)
    for i in range(2):
        ssl_step(method, opt, x0, x1, 2 * steps + i, total, amp=cfg.train.amp)
    sync(device)
    t0 = time.time()
    for i in range(steps):
        ssl_step(method, opt, x0, x1, 3 * steps + i, total, amp=cfg.train.amp)
    sync(device)
    rate_bare = steps * len(x) / (time.time() - t0)
    ctx = {"method": s.method, "batch": s.batch_size}
    emit("ssl_loop_img_per_s", round(rate_loop, 1), "img/s", **ctx)
    emit("ssl_bare_img_per_s", round(rate_bare, 1), "img/s", **ctx)
    emit("ssl_loop_over_bare", round(rate_loop / rate_bare, 3), "ratio", goal=">= 0.8", **ctx)


@section("gan")
def gan(preset: str, store, device, steps: int):
    import subprocess

    script = Path(__file__).with_name("gan_step.py")
    if not script.is_file():
        raise FileNotFoundError(f"{script} is missing")
    out = subprocess.run([sys.executable, str(script), "--preset", preset, "--steps", str(steps), "--repeats", "1",
                          "--device", str(device), "--store", str(store.path), "--json"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            print(line, flush=True)


@section("federated")
def federated(preset: str, sets: list[str], epochs: int, tmp: Path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fl_overhead import one

    m = one(preset, epochs, sets, tmp / "fl", "parallel")
    ctx = {"epochs": epochs, "central_auroc": round(m["central_auroc"], 4), "fed_auroc": round(m["fed_auroc"], 4)}
    emit("central_wall", round(m["central_wall"], 1), "s", **ctx)
    emit("fl_wall", round(m["fed_wall"], 1), "s", **ctx)
    emit("fl_over_central_wall", round(m["fed_wall"] / m["central_wall"], 3), "ratio", goal="<= 1.15", **ctx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU: the same code paths, in minutes")
    ap.add_argument("--n-real", type=int, help="SynthDFF reals (x4 images; default 3000, smoke 16)")
    ap.add_argument("--steps", type=int, help="timed steps per loop (default 30, smoke 3)")
    ap.add_argument("--skip", action="append", default=[], help="sections to leave out (data is always run)")
    args = ap.parse_args()

    from dfflab.config import load_config
    from dfflab.device import resolve_device, set_threads

    smoke = args.cpu_smoke
    preset = "tiny" if smoke else "full"
    sets = ["train.device=cpu", "fl.client-gpus=0", "train.threads=2"] if smoke else ["fl.client-gpus=0.3"]
    tmp = Path(tempfile.mkdtemp(prefix="dfflab-gpu-check-"))
    sets.append(f"results={tmp / 'results'}")
    cfg = load_config(preset, sets)
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    if not smoke and device.type != "cuda":
        print(json.dumps({"figure": "device", "error": "no CUDA device: run with --cpu-smoke on a CPU"}))
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit("device", name, "", torch=torch.__version__, preset=preset)
    n_real, steps = args.n_real or (16 if smoke else 3000), args.steps or (3 if smoke else 30)
    fake_size = 64 if smoke else 512
    image_size = 32 if smoke else cfg.data.image_size
    store = data(cfg, tmp, n_real, fake_size, image_size)
    if store is None:
        return 1
    cfg = load_config(preset, [*sets, f"data.store={store.path}", f"data.image-size={image_size}"])
    if "store_to_device" not in args.skip:
        store_to_device(store, device, cfg.train.batch_size)
    if "detector" not in args.skip:
        detector(cfg, store, device, steps)
    if "ssl" not in args.skip:
        ssl(cfg, store, device, steps)
    if "gan" not in args.skip:
        gan(preset, store, device, steps)
    if "federated" not in args.skip:
        federated(preset, [*sets[:-1], f"data.store={store.path}", f"data.image-size={image_size}",
                           f"data.root={tmp / 'synthdff-dff-scale'}"], 1 if smoke else 2, tmp)
    emit("failed_sections", FAILED, "")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
