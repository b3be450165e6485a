"""Centralized real-vs-fake detector: the baseline every other method is measured against.

    dfflab centralized train --preset quick                      # from scratch
    dfflab centralized train --init results/runs/<ssl run>       # fine-tune an SSL backbone
    dfflab centralized train --train-sources insight --name only-insight

The training strategy, and why:

* **Class imbalance** (DFF is 1 real : 3 fakes): ``train.balance=weight`` scales the
  fakes' loss by n_real / n_fake so both classes weigh the same (``sample`` resamples
  instead); every reported accuracy also has a balanced twin.
* **Augmentations** on tensors, on the device (``dfflab.train.augment``): flips and
  integer shifts only. Colour jitter, blur and resampling crops would erase the very
  artifacts (upsampling grids, missing noise, seams) the detector must find.
* **Schedule**: AdamW, linear warmup then cosine decay, stepped per batch.
* **Selection**: after each epoch the model is scored on validation; the epoch with
  the best val AUROC is kept (``detector.pt``) and training stops after
  ``train.patience`` epochs without improvement. The decision threshold (max balanced
  accuracy) is chosen on validation only. Test metrics are logged each epoch for the
  centralized-vs-federated curves but never used to choose anything.
* **Crash safety**: ``last.pt`` (model, optimizer, scheduler, epoch, best, RNG) is
  written every epoch; a rerun with the same name and config resumes from it.

Only validation rows of the *training* sources are used for selection, so a held-out
generator (cross-generator protocol) stays unseen until test.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dfflab.centralized.rows import select_rows
from dfflab.centralized.scoring import evaluate_checkpoint, metrics_table, score
from dfflab.config import ConfigError
from dfflab.device import prepare_model, resolve_device, seed_everything, set_threads
from dfflab.metrics import flatten_metrics
from dfflab.models import build_detector, init_backbone, save_detector
from dfflab.models.detector import resolve_init
from dfflab.runs import Run, find_unfinished
from dfflab.train.augment import make_augment
from dfflab.train.core import (
    detection_loss,
    epoch_rows,
    train_one_epoch,
    warmup_cosine,
)

STAGE = "centralized"


# -- run folder and resume ----------------------------------------------------------------
def same_setup(run: Run, cfg) -> bool:
    """Whether ``run`` was made with the same results/data/model/train settings as ``cfg``."""
    mine, theirs = cfg.to_dict(), run.config
    return all(
        mine.get(k) == theirs.get(k) for k in ("results", "data", "model", "train")
    )


def _open_run(
    cfg, name: str, parent, note: str, store, resume: bool, resume_from
) -> tuple[Run, dict | None]:
    """A new run folder, or (resuming) a crashed one with its ``last.pt`` state."""
    run = None
    if resume_from:
        run = Run.open(resume_from)
        if run.finished:
            raise ConfigError(
                f"{resume_from} already finished (has summary.json); nothing to resume"
            )
        if not run.path("last.pt").is_file():
            raise ConfigError(f"{resume_from} has no last.pt to resume from")
    elif resume:
        found = find_unfinished(cfg.results, STAGE, name)
        if found is not None and same_setup(found, cfg):
            run = found
        elif found is not None:
            tqdm.write(
                f"not resuming {found.dir}: its data/model/train settings differ; starting afresh"
            )
    if run is not None:
        state = run.load("last.pt")
        run.truncate_metrics(int(state["epoch"]))
        tqdm.write(f"resuming {run.dir} after epoch {state['epoch']}")
        return run, state
    return Run.create(
        cfg.results,
        STAGE,
        name,
        cfg.to_dict(),
        parent=parent,
        note=note,
        fingerprint=store.fingerprint,
    ), None


# -- training -----------------------------------------------------------------------------
@dataclass
class Fit:
    """Everything one training run carries between epochs (and through ``last.pt``)."""

    cfg: object
    store: object
    run: Run
    rows: dict[str, np.ndarray]
    device: torch.device
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    steps: int  # optimizer steps per epoch
    drop_last: bool
    init_path: str | None = None  # the backbone checkpoint loaded, if any
    epoch: int = 0  # epochs finished
    samples: int = 0  # training images processed
    seconds: float = 0.0
    best: dict = field(
        default_factory=lambda: {
            "key": [-1.0, 0.0],
            "epoch": 0,
            "threshold": 0.5,
            "bad": 0,
            "val": {},
            "val_per_source": {},
        }
    )

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.epoch,
            "samples": self.samples,
            "seconds": self.seconds,
            "best": self.best,
            "rng": {"torch": torch.get_rng_state()},
        }

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.samples = int(state["epoch"]), int(state["samples"])
        self.seconds, self.best = float(state["seconds"]), state["best"]


def _setup(cfg, store, run: Run, device: torch.device) -> Fit:
    """Rows, model (with its init), AdamW, warmup + cosine schedule and the balanced loss."""
    t = cfg.train
    rows = select_rows(store, t)
    seed_everything(t.seed)
    model = build_detector(cfg.model)
    init_path = init_backbone(model, t.init, cfg.model)
    model = prepare_model(model, device)
    n = len(rows["train"])
    drop_last = n > t.batch_size  # a last batch of 1 breaks BatchNorm
    steps = n // t.batch_size if drop_last else math.ceil(n / t.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = warmup_cosine(opt, round(t.warmup_epochs * steps), t.epochs * steps)
    loss_fn = detection_loss(store.labels[rows["train"]], t.balance, device)
    return Fit(
        cfg,
        store,
        run,
        rows,
        device,
        model,
        opt,
        sched,
        loss_fn,
        steps,
        drop_last,
        init_path,
    )


def _train_epoch(f: Fit, progress: bool) -> dict:
    """One epoch of training, then val (threshold chosen there) and test; returns the csv row."""
    t, epoch = f.cfg.train, f.epoch
    t0 = time.time()
    seed = t.seed * 1000 + epoch  # per-epoch seeds make a resumed run replay exactly
    torch.manual_seed(seed)  # dropout
    order = epoch_rows(f.rows["train"], f.store.labels, t.balance, seed)
    stats = train_one_epoch(
        f.model,
        f.store.batches(order, t.batch_size, drop_last=f.drop_last),
        f.opt,
        f.loss_fn,
        f.device,
        scheduler=f.sched,
        augment=make_augment(t.augment),
        gen=torch.Generator().manual_seed(seed),
        amp=t.amp,
        desc=f"epoch {epoch + 1}" if progress else None,
        total=f.steps,
    )
    f.samples += stats["images"]
    val, val_per, _, thr = score(
        f.model, f.store, f.rows["val"], f.device, loss_fn=f.loss_fn, amp=t.amp
    )
    test, test_per, _, _ = score(
        f.model, f.store, f.rows["test"], f.device, threshold=thr, amp=t.amp
    )
    f.epoch += 1
    f.seconds += time.time() - t0
    _keep_if_best(f, val, val_per, thr)
    return {
        "epoch": f.epoch,
        "samples": f.samples,
        "lr": f.opt.param_groups[0]["lr"],
        "train_loss": stats["loss"],
        "val_loss": val["loss"],
        "val_threshold": thr,
        **flatten_metrics(val, val_per, "val"),
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_auroc": test["auroc"],
        **{f"test_auroc_{s}": m["auroc"] for s, m in test_per.items()},
        "img_per_s": stats["img_per_s"],
        "seconds": f.seconds,
    }


def _keep_if_best(f: Fit, val: dict, val_per: dict, thr: float) -> None:
    """Save ``detector.pt`` when val AUROC improves (ties: lower val loss); count bad epochs."""
    key = [round(val["auroc"], 6), -val["loss"]]
    if key <= f.best["key"]:
        f.best["bad"] += 1
        return
    f.best = {
        "key": key,
        "epoch": f.epoch,
        "threshold": thr,
        "bad": 0,
        "val": val,
        "val_per_source": val_per,
    }
    save_detector(
        f.run.path("detector.pt"),
        f.model,
        f.cfg.model,
        f.store.image_size,
        threshold=thr,
        source_names=f.store.source_names,
        epoch=f.epoch,
        stage=STAGE,
        run=f.run.name,
        train_sources=f.store.resolve_sources(f.cfg.train.train_sources),
    )


def train_detector(
    cfg,
    *,
    name: str = "scratch",
    parent: str | None = None,
    note: str = "",
    store=None,
    progress: bool = True,
    resume: bool = True,
    resume_from: str | Path | None = None,
) -> Run:
    """Train, select and test one detector; returns its finished run folder.

    Args:
        cfg: the resolved :class:`~dfflab.config.Config` (``data``, ``model``, ``train``).
        name: run name; a crashed run of this name and config is resumed.
        parent, note: recorded in config.json (what this run changes and why).
        store: a prepared store (default: ``ensure_store(cfg)``).
        resume: look for a crashed run of the same name to continue.
        resume_from: an explicit run folder to continue (its config should be ``cfg``).

    Writes metrics.csv, last.pt, detector.pt, summary.json and roc/pr/confusion/training PNGs.
    """
    t = cfg.train
    set_threads(t.threads)
    device = resolve_device(t.device)
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    select_rows(store, t)  # fail on bad sources or init before a run folder exists
    try:
        resolve_init(t.init)
    except FileNotFoundError as e:
        raise ConfigError(f"train.init: {e}") from None
    run, state = _open_run(cfg, name, parent, note, store, resume, resume_from)
    f = _setup(cfg, store, run, device)
    if state is not None:
        f.load(state)
    stopped = "max epochs"
    bar = tqdm(
        total=t.epochs,
        initial=f.epoch,
        desc=f"train {name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    while f.epoch < t.epochs:
        try:
            row = _train_epoch(f, progress)
        except FloatingPointError as e:
            stopped = f"non-finite loss in epoch {f.epoch + 1} ({e}); kept the best earlier epoch"
            tqdm.write(f"dfflab: {stopped}")
            break
        run.log_metrics(row)
        run.save("last.pt", f.state())
        bar.update()
        bar.set_postfix(val_auroc=f"{row['val_auroc']:.4f}", best=f.best["epoch"])
        if progress:
            tqdm.write(
                f"epoch {f.epoch:>3}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                f"val_auroc {row['val_auroc']:.4f}  test_auroc {row['test_auroc']:.4f}  "
                f"{row['img_per_s']:.0f} img/s"
            )
        if f.best["bad"] >= t.patience:
            stopped = f"early stopping: no better val AUROC for {t.patience} epochs"
            break
    bar.close()
    if not run.path("detector.pt").is_file():
        raise RuntimeError(
            f"{run.dir}: no epoch finished ({stopped}); lower train.lr and retry"
        )
    _finish(f, stopped, progress)
    return run


def _finish(f: Fit, stopped: str, progress: bool) -> None:
    """Test the best checkpoint at its val threshold; write plots and summary.json."""
    t, run, best = f.cfg.train, f.run, f.best
    overall, per_source, pred = evaluate_checkpoint(
        run.path("detector.pt"), f.store, f.rows["test"], f.device, amp=t.amp
    )
    summary = {
        "test": overall,
        "test_per_source": per_source,
        "val": best["val"],
        "val_per_source": best["val_per_source"],
        "threshold": best["threshold"],
        "best_epoch": best["epoch"],
        "epochs_run": f.epoch,
        "stopped": stopped,
        "samples": f.samples,
        "seconds": round(f.seconds, 2),
        "train_sources": f.store.resolve_sources(t.train_sources),
        "test_sources": f.store.resolve_sources(t.test_sources),
        "init": t.init,
        "init_path": f.init_path,
        "label_frac": t.label_frac,
        "sizes": {k: len(v) for k, v in f.rows.items()},
        "device": str(f.device),
        "model": asdict(f.cfg.model),
        "checkpoint": str(run.path("detector.pt")),
    }
    if t.audit:
        from dfflab.data.audit import run_audit

        summary["audit"] = run_audit(f.store, f.rows["train"], f.rows["test"], t.seed, overall["auroc"])
        summary["audit"]["detector_auroc"] = overall["auroc"]
    _plots(run, pred, overall, f.store.source_names, best["threshold"])
    run.write_summary(summary)
    if progress:
        print(
            metrics_table(
                overall,
                per_source,
                f"test ({len(f.rows['test'])} images) at val threshold "
                f"{best['threshold']:.3f}, best epoch {best['epoch']}",
            )
        )
        if "audit" in summary:
            print(summary["audit"]["message"])
        print(f"run folder: {run.dir}")


def _plots(
    run: Run, pred, overall: dict, source_names: list[str], threshold: float
) -> None:
    from dfflab.centralized import plots

    plots.plot_roc(pred, source_names, run.path("roc.png"))
    plots.plot_pr(pred, source_names, run.path("pr.png"))
    plots.plot_confusion(overall, run.path("confusion.png"), threshold)
    plots.plot_training(run.metrics(), run.path("training.png"))
