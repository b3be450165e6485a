"""Train the class-conditional GAN: ``dfflab generative train --preset quick``.

Classes are the store's sources (wiki = real, inpainting, insight, text2img). One epoch
is one pass of D over the train split; G steps after every ``gan.d-steps`` D steps.
Each epoch appends a row to ``metrics.csv`` (losses, D's mean outputs, speed, and every
``gan.fid-every`` epochs the FID against held-out reals), writes a fixed-noise grid
``samples_epoch<N>.png`` (one row per class) and checkpoints ``last.pt`` (both
networks, both optimizers, the EMA, the RNG). A crashed run resumes from ``last.pt``.
A NaN, infinite or exploding loss stops the run with :class:`GANDivergence`; the last
good ``last.pt`` stays. At the end: ``generator.pt`` (EMA weights) and ``summary.json``
with FID/KID per class and overall for every feature extractor, with sample counts.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from dfflab.device import (
    prepare_model,
    resolve_device,
    seed_everything,
    set_threads,
    to_device_images,
)
from dfflab.generative.diffaug import make_diffaug
from dfflab.generative.evaluation import downscale, reference_features, score_generator
from dfflab.generative.metrics import build_extractors, per_class_scores
from dfflab.generative.models import build_gan
from dfflab.generative.sample import generate, save_generator, save_grid
from dfflab.generative.steps import GANParts, d_step, ema_update, g_step
from dfflab.runs import Run, list_runs

STAGE = "generative"


class GANDivergence(RuntimeError):
    """The losses became NaN/inf or exploded; the run's last good checkpoint is kept."""


def build_parts(cfg, num_classes: int, device: torch.device) -> GANParts:
    """Networks (+ EMA copy) and Adam optimizers for ``cfg.gan`` on ``device``."""
    gc = cfg.gan
    g, d = build_gan(gc, num_classes)
    g, d = prepare_model(g, device), prepare_model(d, device)  # channels-last: ~1.5x on 2 CPU cores
    betas = (gc.beta1, gc.beta2)
    return GANParts(g=g, d=d, opt_g=torch.optim.Adam(g.parameters(), gc.lr_g, betas=betas),
                    opt_d=torch.optim.Adam(d.parameters(), gc.lr_d, betas=betas), loss=gc.loss,
                    augment=make_diffaug(gc.diffaug),
                    g_ema=copy.deepcopy(g).eval().requires_grad_(False) if gc.ema > 0 else None)


def sampler(parts: GANParts) -> torch.nn.Module:
    """The generator used for samples and metrics: the EMA one when EMA is on."""
    return parts.g_ema if parts.g_ema is not None else parts.g


def check_finite(stats: dict[str, float], max_loss: float, where: str) -> None:
    """Raise :class:`GANDivergence` on a NaN/inf loss or one beyond ``max_loss``."""
    for k in ("d_loss", "g_loss"):
        v = stats.get(k)
        if v is not None and (not math.isfinite(v) or abs(v) > max_loss):
            raise GANDivergence(f"{k}={v:.4g} at {where} (limit gan.max-loss={max_loss:g})")


def train_epoch(parts: GANParts, batches, cfg, device: torch.device, gen: torch.Generator, step: int,
                desc: str | None = None, total: int | None = None) -> tuple[dict[str, float], int]:
    """One pass of D over ``batches``; returns (averaged stats, global G step count)."""
    gc = cfg.gan
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    n, t0 = 0, time.time()
    bar = tqdm(batches, desc=desc, total=total, leave=False, disable=desc is None, dynamic_ncols=True)
    for i, (x, _, y) in enumerate(bar):
        real = downscale(to_device_images(x, device), gc.image_size) * 2 - 1  # (B, 3, S, S) in [-1, 1]
        stats = d_step(parts, real, y.to(device), gen)
        if (i + 1) % gc.d_steps == 0:
            stats |= g_step(parts, gc.batch_size, device, gen)
            step += 1
            if parts.g_ema is not None:
                ema_update(parts.g_ema, parts.g, gc.ema, step)
        check_finite(stats, gc.max_loss, f"{desc or 'epoch'} batch {i + 1}")
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        n += len(y)
        bar.set_postfix(d=f"{stats['d_loss']:.3f}", g=f"{stats.get('g_loss', float('nan')):.3f}")
    secs = time.time() - t0
    out = {k: sums[k] / counts[k] for k in sums}
    return out | {"images": n, "seconds": secs, "img_per_s": n / max(secs, 1e-9)}, step


# -- run bookkeeping ----------------------------------------------------------------------


def checkpoint_state(parts: GANParts, epoch: int, step: int, gen: torch.Generator, fixed_z: torch.Tensor,
                     train_seconds: float) -> dict:
    state = {"epoch": epoch, "step": step, "g": parts.g.state_dict(), "d": parts.d.state_dict(),
             "opt_g": parts.opt_g.state_dict(), "opt_d": parts.opt_d.state_dict(),
             "rng": gen.get_state(), "fixed_z": fixed_z.cpu(), "train_seconds": train_seconds}
    if parts.g_ema is not None:
        state["g_ema"] = parts.g_ema.state_dict()
    return state


def restore(parts: GANParts, state: dict, gen: torch.Generator) -> tuple[int, int, torch.Tensor, float]:
    """Load a ``last.pt`` into ``parts``; returns (epochs done, G steps, fixed noise, seconds)."""
    parts.g.load_state_dict(state["g"])
    parts.d.load_state_dict(state["d"])
    parts.opt_g.load_state_dict(state["opt_g"])
    parts.opt_d.load_state_dict(state["opt_d"])
    if parts.g_ema is not None:
        parts.g_ema.load_state_dict(state["g_ema"])
    gen.set_state(state["rng"])
    return int(state["epoch"]), int(state["step"]), state["fixed_z"], float(state["train_seconds"])


def find_resumable(results: str | Path, name: str, config: dict) -> Run | None:
    """The newest unfinished, not diverged run of this name and config with a ``last.pt``."""
    for run in reversed(list_runs(results, STAGE)):
        rec = run.record
        if (rec.get("name") == name and not run.finished and rec.get("status") != "diverged"
                and run.path("last.pt").is_file()):
            return run if rec.get("config") == config else None
    return None


def fixed_grid(g, fixed_z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """uint8 grid images: the same ``grid-n`` noises for each class (one row per class)."""
    per = len(fixed_z)
    y = torch.arange(num_classes).repeat_interleave(per)
    device = next(g.parameters()).device
    was = g.training
    g.eval()
    with torch.no_grad():
        x = g(fixed_z.repeat(num_classes, 1).to(device), y.to(device))
    g.train(was)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def quick_fid(parts, source_names, extractors, reference, n: int, kid_subset: int) -> dict[str, float]:
    """Overall FID per extractor with ``n`` fakes per class, for the metrics.csv row."""
    g = sampler(parts)
    row = {}
    images = {c: generate(g, torch.full((n,), k), seed=777 + k) for k, c in enumerate(source_names)}
    for name, ex in extractors.items():
        fake = {c: ex(x).cpu() for c, x in images.items()}
        s = per_class_scores(reference[name], fake, kid_subset)["overall"]
        row["fid" if name == "inception" else f"fd_{name}"] = s["fid"]
    return row | {"fid_n_per_class": n}


# -- the run -----------------------------------------------------------------------------


def train_gan(cfg, *, name: str, parent: str | None = None, note: str = "", store=None,
              progress: bool = True, resume: bool = True) -> Run:
    """Train (or resume) a conditional GAN run and evaluate it; returns the finished run.

    Args:
        cfg: the full :class:`~dfflab.config.Config` (``cfg.gan`` plus device settings
            in ``cfg.train``: device, threads, seed).
        name: run name (``quick``, ``baseline``, ...); resuming looks for it.
        parent: run folder this run evolves from (recorded for the report).
        note: what this run changes relative to ``parent`` and why.
        store: a prepared store (default: ``ensure_store(cfg)``).
        resume: continue the newest crashed run of the same name and config.

    Raises:
        GANDivergence: losses went NaN/inf or beyond ``gan.max-loss``; the run's
            ``config.json`` gets ``status: diverged`` and ``last.pt`` keeps the last good epoch.
    """
    from dfflab.data import ensure_store

    gc = cfg.gan
    # ---- setup
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    store = store if store is not None else ensure_store(cfg, progress=progress)
    gen = seed_everything(cfg.train.seed)
    names = list(store.source_names)
    parts = build_parts(cfg, len(names), device)
    extractors = build_extractors(gc, cfg.results)
    reference = reference_features(store, gc, extractors, Path(cfg.results) / "cache" / "gan-reference",
                                   progress)
    train_rows = store.select("train")
    if len(train_rows) < gc.batch_size:
        raise ValueError(f"gan.batch-size={gc.batch_size} exceeds the {len(train_rows)} train images")

    config = cfg.to_dict()
    run = find_resumable(cfg.results, name, config) if resume else None
    epoch0, step, train_secs = 0, 0, 0.0
    fixed_z = torch.randn(gc.grid_n, gc.z_dim, generator=torch.Generator().manual_seed(cfg.train.seed + 99))
    if run is not None:
        epoch0, step, fixed_z, train_secs = restore(parts, run.load("last.pt"), gen)
        run.truncate_metrics(epoch0)
        print(f"resuming {run.dir} after epoch {epoch0}")
    else:
        run = Run.create(cfg.results, STAGE, name, config, parent=parent, note=note,
                         fingerprint=store.fingerprint,
                         extra={"extractors": {k: getattr(v, "path", "") for k, v in extractors.items()}})

    # ---- training
    steps_per_epoch = len(train_rows) // gc.batch_size
    scores, eval_secs = None, 0.0
    for epoch in range(epoch0, gc.epochs):
        batches = store.batches(train_rows, gc.batch_size, shuffle=True, seed=cfg.train.seed + epoch,
                                drop_last=True)
        desc = f"gan {name} epoch {epoch + 1}/{gc.epochs}" if progress else None
        try:
            stats, step = train_epoch(parts, batches, cfg, device, gen, step, desc, steps_per_epoch)
        except GANDivergence as e:
            run.update_record(status="diverged", diverged_at_epoch=epoch + 1, divergence=str(e))
            raise GANDivergence(f"GAN training diverged: {e}. Stopped; the last good checkpoint "
                                f"(epoch {epoch}) is {run.path('last.pt')}. Try lower gan.lr-d/gan.lr-g, "
                                "gan.spectral-norm=true or gan.loss=hinge.") from None
        train_secs += stats["seconds"]
        row = {"epoch": epoch + 1, "step": step, **stats}
        if epoch + 1 == gc.epochs:  # the final evaluation (eval-n per class) fills the last row
            t0 = time.time()
            scores = score_generator(sampler(parts), names, extractors, reference, gc.eval_n,
                                     gc.kid_subset_size, progress)
            eval_secs = time.time() - t0
            row |= {"fid": scores["inception"]["overall"]["fid"], "fid_n_per_class": gc.eval_n}
            row |= {f"fd_{k}": v["overall"]["fid"] for k, v in scores.items() if k != "inception"}
        elif gc.fid_every > 0 and (epoch + 1) % gc.fid_every == 0:
            row |= quick_fid(parts, names, extractors, reference, gc.fid_train_n, gc.kid_subset_size)
        save_grid(run.path(f"samples_epoch{epoch + 1}.png"), fixed_grid(sampler(parts), fixed_z, len(names)),
                  nrow=gc.grid_n)
        run.log_metrics(row)  # before last.pt: a crash in between re-runs this epoch
        run.save("last.pt", checkpoint_state(parts, epoch + 1, step, gen, fixed_z, train_secs))
        if progress:
            print(f"epoch {epoch + 1}: d_loss {stats['d_loss']:.3f} g_loss {stats.get('g_loss', float('nan')):.3f}"
                  + (f" fid {row['fid']:.1f}" if "fid" in row else ""))

    # ---- outputs
    if scores is None:  # resumed after the last epoch's checkpoint: only the evaluation is left
        t0 = time.time()
        scores = score_generator(sampler(parts), names, extractors, reference, gc.eval_n,
                                 gc.kid_subset_size, progress)
        eval_secs = time.time() - t0
    save_generator(run.path("generator.pt"), sampler(parts), gc.g_width, names, gan_cfg=asdict(gc),
                   ema=parts.g_ema is not None, run=run.name)
    run.write_summary(summary(run, scores, gc, train_secs, eval_secs, step, extractors))
    return run


def summary(run: Run, scores: dict, gc, train_secs: float, eval_secs: float, step: int, extractors) -> dict:
    """summary.json: FID/KID per extractor and class, the sample counts and the times."""
    rows = run.metrics()
    out = {
        "epochs": gc.epochs, "g_steps": step, "image_size": gc.image_size,
        "train_seconds": round(train_secs, 1), "eval_seconds": round(eval_secs, 1),
        "generated_per_class": gc.eval_n, "reference_split": gc.ref_split,
        "reference_per_class": {c: v["n_real"] for c, v in scores["inception"].items() if c != "overall"},
        "sampler": "ema" if gc.ema > 0 else "generator",
        "extractors": {k: getattr(v, "path", "") for k, v in extractors.items()},
        "final_d_loss": rows[-1].get("d_loss") if rows else None,
        "final_g_loss": rows[-1].get("g_loss") if rows else None,
        "scores": scores,
    }
    for ex, per in scores.items():  # flat copies of the headline numbers for tables
        for c, s in per.items():
            out[f"fid_{ex}_{c}"] = s["fid"]
            out[f"kid_{ex}_{c}"] = s["kid"]
    return out
