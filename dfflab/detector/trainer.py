"""Train one detector to the end: epochs of the recipe, selection on validation, test, run folder.

    dfflab centralized train --preset quick                      # from scratch
    dfflab centralized train --init results/runs/<ssl run>       # fine-tune an SSL backbone

Every stand-alone detector goes through :func:`train_detector`: the centralized baseline,
crossgen folds, label-efficiency cells, UQ ensemble members and the GAN's matched
detector. The recipe itself (model, AdamW, schedule, loss, augmentation, seeds) is
:mod:`dfflab.detector.recipe`; this module adds what a whole run needs:

* **Selection**: after each epoch the model is scored on validation; the epoch with the
  best val AUROC is kept (``detector.pt``) and training stops after ``train.patience``
  epochs without improvement. The decision threshold (max balanced accuracy) is chosen
  on validation only. Test metrics are logged each epoch for the centralized-vs-federated
  curves but never used to choose anything.
* **Evidence**: the test (and validation) metrics in ``summary.json`` carry 95% stratified
  bootstrap intervals (``auroc_ci``, ...; ``train.bootstrap`` resamples), and
  ``test_scores.npz`` keeps the test scores so any two runs on the same test set can be
  compared with a paired interval (:mod:`dfflab.evidence`).
* **Crash safety**: ``last.pt`` (model, optimizer, scheduler, epoch, best) is written every
  epoch; a rerun with the same name and settings resumes from it (:func:`dfflab.runs.open_or_resume`).

Only validation rows of the *training* sources are used for selection, so a held-out
generator (cross-generator protocol) stays unseen until test.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dfflab.config import ConfigError
from dfflab.detector.recipe import Recipe, initial_model, make_recipe
from dfflab.detector.rows import select_rows
from dfflab.detector.scoring import metrics_table, score, score_checkpoint
from dfflab.device import resolve_device, set_threads
from dfflab.metrics import flatten_metrics
from dfflab.models import save_detector
from dfflab.models.detector import resolve_init
from dfflab.runs import Run, open_or_resume

STAGE = "centralized"


@dataclass
class Fit:
    """Everything one training run carries between epochs (and through ``last.pt``)."""

    cfg: object
    run: Run
    rows: dict[str, np.ndarray]
    recipe: Recipe
    init_path: str | None = None  # the backbone checkpoint loaded, if any
    epoch: int = 0  # epochs finished
    samples: int = 0  # training images processed
    seconds: float = 0.0
    best: dict = field(default_factory=lambda: {"key": [-1.0, 0.0], "epoch": 0, "threshold": 0.5, "bad": 0,
                                                "val": {}, "val_per_source": {}})

    @property
    def store(self):
        return self.recipe.store

    def state(self) -> dict:
        r = self.recipe
        return {"model": r.model.state_dict(), "optimizer": r.opt.state_dict(), "scheduler": r.sched.state_dict(),
                "epoch": self.epoch, "samples": self.samples, "seconds": self.seconds, "best": self.best,
                "rng": {"torch": torch.get_rng_state()}}

    def load(self, state: dict) -> None:
        r = self.recipe
        r.model.load_state_dict(state["model"])
        r.opt.load_state_dict(state["optimizer"])
        r.sched.load_state_dict(state["scheduler"])
        self.epoch, self.samples = int(state["epoch"]), int(state["samples"])
        self.seconds, self.best = float(state["seconds"]), state["best"]


def _setup(cfg, store, run: Run, device: torch.device, model, init_path: str | None) -> Fit:
    rows = select_rows(store, cfg.train)
    recipe = make_recipe(cfg, store, rows["train"], device, model, total_epochs=cfg.train.epochs)
    return Fit(cfg, run, rows, recipe, init_path)


def _train_epoch(f: Fit, progress: bool) -> dict:
    """One epoch of training, then (when due) val (threshold chosen there) and test; returns the csv row."""
    t = f.cfg.train
    r, t0, amp = f.recipe, time.time(), t.amp
    stats = r.train_epoch(f.epoch, desc=f"epoch {f.epoch + 1}" if progress else None)
    f.samples += stats["images"]
    if (f.epoch + 1) % max(1, t.eval_every) and f.epoch + 1 < t.epochs:  # no validation this epoch
        f.epoch += 1
        f.seconds += time.time() - t0
        return {"epoch": f.epoch, "samples": f.samples, "steps": f.epoch * r.steps, "lr": r.opt.param_groups[0]["lr"],
                "train_loss": stats["loss"], "img_per_s": stats["img_per_s"], "seconds": f.seconds}
    val = score(r.model, f.store, f.rows["val"], r.device, loss_fn=r.loss_fn, amp=amp)
    test = score(r.model, f.store, f.rows["test"], r.device, threshold=val.threshold, amp=amp)
    f.epoch += 1
    f.seconds += time.time() - t0
    _keep_if_best(f, val.overall, val.per_source, val.threshold)
    return {"epoch": f.epoch, "samples": f.samples, "steps": f.epoch * r.steps, "lr": r.opt.param_groups[0]["lr"],
            "train_loss": stats["loss"], "val_loss": val.overall["loss"], "val_threshold": val.threshold,
            **flatten_metrics(val.overall, val.per_source, "val"),
            "test_accuracy": test.overall["accuracy"], "test_balanced_accuracy": test.overall["balanced_accuracy"],
            "test_auroc": test.overall["auroc"],
            **{f"test_auroc_{s}": m["auroc"] for s, m in test.per_source.items()},
            "img_per_s": stats["img_per_s"], "seconds": f.seconds}


def _keep_if_best(f: Fit, val: dict, val_per: dict, thr: float) -> None:
    """Save ``detector.pt`` when val AUROC improves (ties: lower val loss); count bad epochs."""
    key = [round(val["auroc"], 6), -val["loss"]]
    if key <= f.best["key"]:
        f.best["bad"] += 1
        return
    f.best = {"key": key, "epoch": f.epoch, "threshold": thr, "bad": 0, "val": val, "val_per_source": val_per}
    save_detector(f.run.path("detector.pt"), f.recipe.model, f.cfg.model, f.store.image_size, threshold=thr,
                  source_names=f.store.source_names, epoch=f.epoch, stage=STAGE, run=f.run.name,
                  train_sources=f.store.resolve_sources(f.cfg.train.train_sources))


def train_detector(cfg, *, name: str = "scratch", parent: str | None = None, note: str = "", store=None,
                   progress: bool = True, resume: bool = True, resume_from: str | Path | None = None) -> Run:
    """Train, select and test one detector; returns its finished run folder.

    Args:
        cfg: the resolved :class:`~dfflab.config.Config` (``data``, ``model``, ``train``).
        name: run name; a crashed run of this name and settings is resumed.
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
    # the model (and any pretrained weights it needs) before the run folder: a missing weight file
    # fails without leaving an empty run behind
    model, init_path = initial_model(cfg, device)
    run, state = open_or_resume(cfg, STAGE, name, fingerprint=store.fingerprint, parent=parent, note=note,
                                resume=resume, resume_from=resume_from, quiet=not progress)
    f = _setup(cfg, store, run, device, model, init_path)
    if state is not None:
        f.load(state)
        run.truncate_metrics(f.epoch)
    stopped = "max epochs"
    bar = tqdm(total=t.epochs, initial=f.epoch, desc=f"train {name}", disable=not progress, dynamic_ncols=True)
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
        if "val_auroc" not in row:  # an epoch without validation
            continue
        bar.set_postfix(val_auroc=f"{row['val_auroc']:.4f}", best=f.best["epoch"])
        if progress:
            tqdm.write(f"epoch {f.epoch:>3}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                       f"val_auroc {row['val_auroc']:.4f}  test_auroc {row['test_auroc']:.4f}  "
                       f"{row['img_per_s']:.0f} img/s")
        if f.best["bad"] >= t.patience:
            stopped = f"early stopping: no better val AUROC for {t.patience} epochs"
            break
    bar.close()
    if not run.path("detector.pt").is_file():
        raise RuntimeError(f"{run.dir}: no epoch finished ({stopped}); lower train.lr and retry")
    _finish(f, stopped, progress)
    return run


def train_seeds(cfg, seeds: list[int], **kwargs) -> list[Run]:
    """:func:`train_detector` once per seed (``train.seed``), same name: the seed replicates
    :func:`dfflab.runs.find_seeds` gathers and the report shows as mean, spread and paired intervals."""
    from dfflab.config import derive

    return [train_detector(derive(cfg, {"train.seed": s}), **kwargs) for s in seeds]


def _finish(f: Fit, stopped: str, progress: bool) -> None:
    """Test the best checkpoint at its val threshold; write plots and summary.json."""
    t, run, best = f.cfg.train, f.run, f.best
    ckpt, device = run.path("detector.pt"), f.recipe.device
    test = score_checkpoint(ckpt, f.store, f.rows["test"], device, amp=t.amp).add_intervals(t.bootstrap, t.seed)
    test.save(run.path("test_scores.npz"))
    val = score_checkpoint(ckpt, f.store, f.rows["val"], device, amp=t.amp).add_intervals(t.bootstrap, t.seed)
    summary = {
        "test": test.overall, "test_per_source": test.per_source,
        "val": {**best["val"], **{k: v for k, v in val.overall.items() if k.endswith("_ci")}},
        "val_per_source": best["val_per_source"], "threshold": best["threshold"], "best_epoch": best["epoch"],
        "epochs_run": f.epoch, "steps_per_epoch": f.recipe.steps, "steps": f.epoch * f.recipe.steps,
        "stopped": stopped, "samples": f.samples, "seconds": round(f.seconds, 2),
        "train_sources": f.store.resolve_sources(t.train_sources),
        "test_sources": f.store.resolve_sources(t.test_sources), "init": t.init,
        "init_path": f.init_path, "label_frac": t.label_frac, "sizes": {k: len(v) for k, v in f.rows.items()},
        "device": str(f.recipe.device), "model": asdict(f.cfg.model), "checkpoint": str(run.path("detector.pt")),
    }
    if t.audit:
        from dfflab.data.audit import run_audit

        summary["audit"] = run_audit(f.store, f.rows["train"], f.rows["test"], t.seed, test.overall["auroc"])
        summary["audit"]["detector_auroc"] = test.overall["auroc"]
    _plots(run, test, f.store.source_names)
    run.write_summary(summary)
    if progress:
        print(metrics_table(test.overall, test.per_source,
                            f"test ({len(f.rows['test'])} images) at val threshold {best['threshold']:.3f}, "
                            f"best epoch {best['epoch']}"))
        if "audit" in summary:
            print(summary["audit"]["message"])
        print(f"run folder: {run.dir}")


def _plots(run: Run, test, source_names: list[str]) -> None:
    from dfflab.detector import plots

    plots.plot_roc(test.pred, source_names, run.path("roc.png"))
    plots.plot_pr(test.pred, source_names, run.path("pr.png"))
    plots.plot_confusion(test.overall, run.path("confusion.png"), test.threshold)
    plots.plot_training(run.metrics(), run.path("training.png"))
