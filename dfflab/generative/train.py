"""Train the class-conditional GAN: ``dfflab generative train --preset quick``.

Classes are the store's sources (wiki = real, inpainting, insight, text2img). The train
split is read once, brought to the GAN's resolution and kept on the device as uint8;
one epoch is one shuffled pass of D over it, G steps after every ``gan.d-steps`` D
steps. Each epoch appends a row to ``metrics.csv`` (losses, D's outputs and accuracy,
speed); every ``gan.monitor-every`` epochs the row also gets the cheap in-loop checks
(FD-SSL of ``gan.monitor-n`` samples per class, D's mean output on train vs held-out
reals: a widening gap is D memorizing), a fixed-noise grid ``samples_epoch<N>.png``
(one row per class) and ``last.pt`` (both networks, both optimizers, the EMA, the RNG).
A crashed run resumes from ``last.pt``. A NaN, infinite or exploding loss stops the run
with :class:`GANDivergence`; the last good ``last.pt`` stays. At the end:
``generator.pt`` (EMA weights with standing statistics), ``summary.json`` (FID/KID with
intervals and floors, overall and per class, every n; :mod:`dfflab.generative.evaluation`)
and ``bootstrap.json`` (the replicates, for paired comparisons).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dfflab.device import prepare_model, resolve_device, seed_everything, set_threads
from dfflab.files import write_json
from dfflab.generative.diffaug import make_diffaug
from dfflab.generative.evaluation import generated_images, replicates, score_generator, summary_scores
from dfflab.generative.features import build_extractors
from dfflab.generative.metrics import frechet_distance
from dfflab.generative.models import build_gan
from dfflab.generative.reference import gan_images, load_reference
from dfflab.generative.sample import save_generator, save_grid, to_uint8
from dfflab.generative.steps import GANParts, d_step, ema_update, g_step, make_fakes, resolve_precision, standing_stats
from dfflab.runs import Run, find_run

STAGE = "generative"


class GANDivergence(RuntimeError):
    """The losses became NaN/inf or exploded; the run's last good checkpoint is kept."""


def build_parts(cfg, num_classes: int, device: torch.device) -> GANParts:
    """Networks (+ EMA copy) and Adam optimizers for ``cfg.gan`` on ``device``."""
    gc = cfg.gan
    g, d = build_gan(gc, num_classes)
    g, d = prepare_model(g, device), prepare_model(d, device)  # channels-last: faster convolutions on CPU and GPU
    betas = (gc.beta1, gc.beta2)
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}  # one kernel per step, not one per tensor
    return GANParts(g=g, d=d, opt_g=torch.optim.Adam(g.parameters(), gc.lr_g, betas=betas, **fused),
                    opt_d=torch.optim.Adam(d.parameters(), gc.lr_d, betas=betas, **fused), loss=gc.loss,
                    augment=make_diffaug(gc.diffaug),
                    g_ema=copy.deepcopy(g).eval().requires_grad_(False) if gc.ema > 0 else None,
                    amp_dtype=resolve_precision(gc.precision, device))


def sampler(parts: GANParts, gc) -> torch.nn.Module:
    """The generator for samples and metrics (the EMA one if ``gan.sample-ema``), with standing statistics."""
    g = parts.g_ema if (gc.sample_ema and parts.g_ema is not None) else parts.g
    return standing_stats(g, gc.standing_batches)


def check_finite(stats: dict[str, float], max_loss: float, where: str) -> None:
    """Raise :class:`GANDivergence` on a NaN/inf loss or one beyond ``max_loss``."""
    for k in ("d_loss", "g_loss"):
        v = stats.get(k)
        if v is not None and (not math.isfinite(v) or abs(v) > max_loss):
            raise GANDivergence(f"{k}={v:.4g} in {where} (limit gan.max-loss={max_loss:g})")


def load_train_data(store, rows: np.ndarray, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The train images as uint8 (N, S, S, 3) on ``device`` and their class ids (N,)."""
    x = gan_images(store, np.sort(rows), size).permute(0, 2, 3, 1).contiguous()
    return x.to(device), torch.from_numpy(store.source_ids[np.sort(rows)]).to(device)


def train_epoch(parts: GANParts, data: tuple[torch.Tensor, torch.Tensor], cfg, gen: torch.Generator,
                step: int, epoch: int, desc: str | None = None) -> tuple[dict[str, float], int]:
    """One shuffled pass of D over ``data``; returns (averaged stats, global G step count)."""
    gc = cfg.gan
    x, y = data
    bs, device = gc.batch_size, x.device
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.train.seed + epoch)).to(device)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    t0 = time.time()
    bar = tqdm(range(len(x) // bs), desc=desc, leave=False, disable=desc is None, dynamic_ncols=True)
    for i in bar:
        idx = order[i * bs:(i + 1) * bs]
        real = x[idx].permute(0, 3, 1, 2).float().div_(127.5).sub_(1)  # (B, 3, S, S) channels-last in [-1, 1]
        fake = make_fakes(parts, y[idx], gen)
        stats = d_step(parts, real, y[idx], fake, gen)
        if (i + 1) % gc.d_steps == 0:
            stats |= g_step(parts, fake, y[idx], gen)
            step += 1
            if parts.g_ema is not None:
                ema_update(parts.g_ema, parts.g, gc.ema, step)
        for k, v in stats.items():  # device tensors: no host sync per step
            sums[k] = sums[k] + v if k in sums else v.clone()
            counts[k] = counts.get(k, 0) + 1
        if desc is not None and i % 50 == 0:
            bar.set_postfix(d=f"{stats['d_loss'].item():.3f}", acc=f"{stats['d_acc'].item():.2f}")
    out = {k: float(sums[k] / counts[k]) for k in sums}
    secs = time.time() - t0
    n = (len(x) // bs) * bs
    return out | {"images": n, "seconds": secs, "img_per_s": n / max(secs, 1e-9)}, step


# -- the run -----------------------------------------------------------------------------


@dataclass
class GANFit:
    """Everything one GAN run carries between epochs (and through ``last.pt``)."""

    cfg: object
    store: object
    parts: GANParts
    device: torch.device
    gen: torch.Generator  # noise, DiffAugment
    data: tuple  # train images and class ids on the device
    probe: dict  # {"train" | "heldout": (uint8 images, class ids)} for D's memorization check
    fixed_z: torch.Tensor  # (grid-n, z-dim) noise of the sample grids
    run: Run | None = None
    epoch: int = 0  # epochs finished
    step: int = 0  # G steps taken
    train_seconds: float = 0.0
    saved_epoch: int = 0  # the epoch last.pt holds

    @property
    def names(self) -> list[str]:
        return list(self.store.source_names)

    def state(self) -> dict:
        p = self.parts
        state = {"epoch": self.epoch, "step": self.step, "g": p.g.state_dict(), "d": p.d.state_dict(),
                 "opt_g": p.opt_g.state_dict(), "opt_d": p.opt_d.state_dict(), "rng": self.gen.get_state(),
                 "fixed_z": self.fixed_z.cpu(), "train_seconds": self.train_seconds}
        if p.g_ema is not None:
            state["g_ema"] = p.g_ema.state_dict()
        return state

    def load(self, state: dict) -> None:
        p = self.parts
        p.g.load_state_dict(state["g"])
        p.d.load_state_dict(state["d"])
        p.opt_g.load_state_dict(state["opt_g"])
        p.opt_d.load_state_dict(state["opt_d"])
        if p.g_ema is not None:
            p.g_ema.load_state_dict(state["g_ema"])
        self.gen.set_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.fixed_z, self.train_seconds = state["fixed_z"], float(state["train_seconds"])
        self.saved_epoch = self.epoch


def find_resumable(results: str | Path, name: str, config: dict) -> Run | None:
    """The newest unfinished, not diverged run of this name and config with a ``last.pt``."""
    run = find_run(results, STAGE, name=name, state="resumable",
                   where=lambda r: r.record.get("status") != "diverged")
    return run if run is not None and run.record.get("config") == config else None


def fixed_grid(g, fixed_z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """uint8 grid images: the same ``grid-n`` noises for each class (one row per class); ``g`` in eval mode."""
    y = torch.arange(num_classes).repeat_interleave(len(fixed_z))
    device = next(g.parameters()).device
    with torch.no_grad():
        x = g.eval()(fixed_z.repeat(num_classes, 1).to(device), y.to(device))
    return to_uint8(x)


def setup(cfg, store, progress: bool) -> GANFit:
    """Device, seeds, networks, the train images on the device and D's probe images."""
    gc = cfg.gan
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    parts = build_parts(cfg, len(store.source_names), device)
    rows = store.select("train")
    data = load_train_data(store, rows, gc.image_size, device)
    rng = np.random.default_rng(cfg.train.seed)
    held = np.flatnonzero(store.split != "train")
    probe = {}
    for k, r in (("train", rows), ("heldout", held)):
        if len(r):
            pick = np.sort(rng.choice(r, min(256, len(r)), replace=False))
            probe[k] = (gan_images(store, pick, gc.image_size), torch.from_numpy(store.source_ids[pick]))
    fixed_z = torch.randn(gc.grid_n, gc.z_dim, generator=torch.Generator().manual_seed(cfg.train.seed + 99))
    return GANFit(cfg, store, parts, device, gen, data, probe, fixed_z)


@torch.no_grad()
def d_probe(f: GANFit) -> dict[str, float]:
    """D's mean logit on un-augmented train and held-out reals (their gap grows when D memorizes)."""
    d, out = f.parts.d.eval(), {}
    for k, (x, y) in f.probe.items():
        out[f"d_{k}_real"] = float(d(x.to(f.device).float().div(127.5).sub(1), y.to(f.device)).mean())
    f.parts.d.train()
    return out


def monitor(f: GANFit, extractors: dict, reference) -> dict[str, float]:
    """The cheap in-loop checks: FD-SSL (mean over classes, point estimate) and D's probe."""
    row = d_probe(f) if "train" in f.probe else {}
    if "ssl" in extractors:
        g = sampler(f.parts, f.cfg.gan)
        images = generated_images(g, f.names, f.cfg.gan.monitor_n, seed=777)
        fd = [frechet_distance(reference.features["ssl"][c], extractors["ssl"](x)) for c, x in images.items()]
        row |= {"fd_ssl": float(np.mean(fd)), "fd_ssl_n": f.cfg.gan.monitor_n}
    return row


def run_epoch(f: GANFit, name: str, extractors: dict, reference, progress: bool) -> dict:
    """Train one epoch; on monitor epochs add the checks, the grid and ``last.pt``."""
    gc = f.cfg.gan
    desc = f"gan {name} epoch {f.epoch + 1}/{gc.epochs}" if progress else None
    stats, step = train_epoch(f.parts, f.data, f.cfg, f.gen, f.step, f.epoch, desc)
    try:
        check_finite(stats, gc.max_loss, f"epoch {f.epoch + 1}")
    except GANDivergence as e:
        f.run.update_record(status="diverged", diverged_at_epoch=f.epoch + 1, divergence=str(e))
        kept = (f"the last good checkpoint (epoch {f.saved_epoch}) is {f.run.path('last.pt')}" if f.saved_epoch
                else "no checkpoint was written yet")
        raise GANDivergence(f"GAN training diverged: {e}. Stopped; {kept}. Try lower gan.lr-d/gan.lr-g, "
                            "gan.spectral-norm=true or gan.loss=hinge.") from None
    f.epoch, f.step = f.epoch + 1, step
    f.train_seconds += stats["seconds"]
    row = {"epoch": f.epoch, "step": f.step, **stats}
    last = f.epoch == gc.epochs
    if last or (gc.monitor_every > 0 and f.epoch % gc.monitor_every == 0):
        row |= monitor(f, extractors, reference)
        save_grid(f.run.path(f"samples_epoch{f.epoch}.png"),
                  fixed_grid(sampler(f.parts, gc), f.fixed_z, len(f.names)), nrow=gc.grid_n)
        f.run.log_metrics(row)  # before last.pt: a crash in between re-runs these epochs
        f.run.save("last.pt", f.state())
        f.saved_epoch = f.epoch
    else:
        f.run.log_metrics(row)
    return row


def train_gan(cfg, *, name: str, parent: str | None = None, note: str = "", store=None,
              progress: bool = True, resume: bool = True, eval_n: int | None = None,
              init_from: Run | None = None) -> Run:
    """Train (or resume) a conditional GAN run and evaluate it; returns the finished run.

    Args:
        cfg: the full :class:`~dfflab.config.Config` (``cfg.gan`` plus device settings
            in ``cfg.train``: device, threads, seed).
        name: run name (``quick``, ``baseline``, ...); resuming looks for it.
        parent: run folder this run evolves from (recorded for the report).
        note: what this run changes relative to ``parent`` and why.
        store: a prepared store (default: ``ensure_store(cfg)``).
        resume: continue the newest crashed run of the same name and config.
        eval_n: generated images per class of the final FID/KID (default ``gan.eval-n``).
        init_from: a finished run to continue (its ``last.pt`` and metrics rows are the
            start), with the same settings except more ``gan.epochs`` (training longer
            without repeating its epochs, exactly as one longer run would) and/or
            ``gan.sample-ema`` (the EMA does not feed back into training: the same
            training, sampled from the other generator).

    Raises:
        GANDivergence: an epoch's mean loss went NaN/inf or beyond ``gan.max-loss``; the
            run's ``config.json`` gets ``status: diverged`` and ``last.pt`` keeps the last
            good checkpoint.
    """
    from dfflab.data import ensure_store

    gc = cfg.gan
    store = store if store is not None else ensure_store(cfg, progress=progress)
    if len(store.select("train")) < gc.batch_size * gc.d_steps:
        raise ValueError(f"gan.batch-size={gc.batch_size} x gan.d-steps={gc.d_steps} exceeds the "
                         f"{len(store.select('train'))} train images")
    f = setup(cfg, store, progress)
    extractors = build_extractors(gc, cfg.results, f.device)
    reference = load_reference(cfg, store, extractors, progress)
    f.run = find_resumable(cfg.results, name, cfg.to_dict()) if resume else None
    if f.run is not None:
        f.load(f.run.load("last.pt"))
        f.run.truncate_metrics(f.epoch)
        print(f"resuming {f.run.dir} after epoch {f.epoch}")
    else:
        f.run = Run.create(cfg.results, STAGE, name, cfg.to_dict(), parent=parent, note=note,
                           fingerprint=store.fingerprint,
                           extra={"extractors": {k: getattr(v, "path", "") for k, v in extractors.items()},
                                  "continues": init_from.name if init_from is not None else None})
        if init_from is not None:
            start(f, init_from)
    seconds_before = f.train_seconds if init_from is not None and f.run.metrics() else 0.0
    while f.epoch < gc.epochs:
        row = run_epoch(f, name, extractors, reference, progress)
        if progress and "fd_ssl" in row:
            print(f"epoch {f.epoch} (G step {f.step}): d_loss {row['d_loss']:.3f} g_loss {row['g_loss']:.3f} "
                  f"d_acc {row['d_acc']:.2f} FD-SSL {row['fd_ssl']:.2f}")
    n = eval_n or gc.eval_n
    t0 = time.time()
    g = sampler(f.parts, gc)
    if not f.run.path(f"samples_epoch{f.epoch}.png").is_file():  # continued without training: a grid of its sampler
        save_grid(f.run.path(f"samples_epoch{f.epoch}.png"), fixed_grid(g, f.fixed_z, len(f.names)), nrow=gc.grid_n)
    scores = score_generator(g, f.names, extractors, reference, n, progress)
    eval_secs = time.time() - t0
    rows = f.run.metrics()
    head = scores["inception"]["per_class"]["overall"]
    f.run.truncate_metrics(len(rows) - 1)
    f.run.log_metrics(rows[-1] | {"fid": head["fid"], "kid": head["kid"], "n_eval": n})
    save_generator(f.run.path("generator.pt"), g, gc.g_width, f.names, gan_cfg=asdict(gc),
                   ema=g is f.parts.g_ema, run=f.run.name)
    write_json(f.run.path("bootstrap.json"), replicates(scores))
    f.run.write_summary(summary(f, scores, reference, extractors, n, eval_secs) |
                        {"train_seconds_this_run": round(f.train_seconds - seconds_before, 1)})
    return f.run


CONTINUABLE = ("epochs", "sample_ema")  # what a continued run may change: its length, what it samples from


def rescore(run: Run, store, n: int, progress: bool = True) -> dict:
    """Score a finished run's ``generator.pt`` again with ``n`` images per class; rewrites its
    ``summary.json`` scores and ``bootstrap.json`` (the earlier n's numbers stay in ``rescored_from``)."""
    from dfflab.config import config_from_dict
    from dfflab.device import resolve_device
    from dfflab.generative.sample import load_generator

    cfg = config_from_dict(run.config)
    device = resolve_device(cfg.train.device)
    g, _ = load_generator(run.dir, device)
    extractors = build_extractors(cfg.gan, cfg.results, device)
    reference = load_reference(cfg, store, extractors, progress)
    t0 = time.time()
    scores = score_generator(g, list(store.source_names), extractors, reference, n, progress)
    old = run.summary()
    write_json(run.path("bootstrap.json"), replicates(scores))
    keep = {k: v for k, v in old.items() if k in ("epochs", "g_steps", "image_size", "arch", "train_seconds",
                                                   "train_seconds_this_run", "precision", "sampler", "extractors",
                                                   "reference_split") or k.startswith("final_")}
    new = keep | summary_scores(scores, reference, extractors, n) | {
        "eval_seconds": round(time.time() - t0, 1),
        "rescored_from": {k: old.get(k) for k in ("n_eval", "fid", "fid_ci", "kid", "kid_ci")}}
    run.write_summary(new)
    return new


def start(f: GANFit, parent: Run) -> None:
    """Begin ``f`` from ``parent``'s final state (see ``init_from``)."""
    mine, theirs = copy.deepcopy(f.cfg.to_dict()), copy.deepcopy(parent.config)
    for k in CONTINUABLE:
        mine["gan"].pop(k), theirs["gan"].pop(k)
    if mine != theirs or parent.config["gan"]["epochs"] > f.cfg.gan.epochs:
        raise ValueError(f"{parent.dir}: can only continue a run of the same training settings and at most as "
                         "many gan.epochs")
    f.load(parent.load("last.pt"))
    for row in parent.metrics():
        f.run.log_metrics({k: v for k, v in row.items() if k not in ("fid", "kid", "n_eval")})
    f.run.save("last.pt", f.state())


def summary(f: GANFit, scores: dict, reference, extractors: dict, n: int, eval_secs: float) -> dict:
    """summary.json: the run's length and time, its last in-loop checks, FID/KID with intervals and floors."""
    gc, rows = f.cfg.gan, f.run.metrics()
    last = rows[-1] if rows else {}
    out = {"epochs": gc.epochs, "g_steps": f.step, "image_size": gc.image_size, "arch": gc.arch,
           "train_seconds": round(f.train_seconds, 1), "eval_seconds": round(eval_secs, 1),
           "precision": "bf16" if f.parts.amp_dtype == torch.bfloat16 else "fp32",
           "sampler": ("ema" if gc.sample_ema and gc.ema > 0 else "generator")
           + (" + standing statistics" if gc.standing_batches else ""),
           "extractors": {k: getattr(v, "path", "") for k, v in extractors.items()},
           "reference_split": gc.ref_split}
    out |= {f"final_{k}": last.get(k) for k in ("d_loss", "g_loss", "d_acc", "fd_ssl", "d_train_real",
                                                 "d_heldout_real")}
    return out | summary_scores(scores, reference, extractors, n)
