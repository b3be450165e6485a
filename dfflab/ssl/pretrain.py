"""SSL pretraining of the detector's backbone on the training split, without labels.

    dfflab ssl pretrain --method simclr            # or byol; --reals-only, --views, --preset, --set

Writes a run folder (stage ``ssl``):

* ``metrics.csv``  one row per epoch: SSL loss, kNN real/fake (accuracy, balanced
  accuracy, AUROC) and 4-way source accuracy on val against a train feature bank, lr,
  seconds, CPU seconds; epoch 0 is the random-init baseline; epoch 0 and the last
  epoch add the linear probe;
* ``last.pt``      everything needed to resume after a crash (rerun the same command);
* ``backbone.pt``  what ``dfflab centralized train --init <run>`` loads;
* ``summary.json`` final kNN and linear-probe accuracies on val and test, views, epochs,
  seconds.

Labels are used only by the probes, never by pretraining.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dfflab.config import ConfigError
from dfflab.device import prepare_model, resolve_device, seed_everything, set_threads
from dfflab.models import build_backbone, save_backbone
from dfflab.runs import Run, open_or_resume
from dfflab.ssl.loop import prefetch, ssl_epoch
from dfflab.ssl.methods import build_method
from dfflab.ssl.probes import extract_features, knn_scores, linear_scores
from dfflab.ssl.views import make_view
from dfflab.train.core import warmup_cosine


@dataclass
class _Setup:
    """Everything an epoch needs, built once."""

    cfg: Any
    store: Any
    device: torch.device
    gen: torch.Generator
    rows: np.ndarray  # training images pretraining sees
    probe_rows: dict[str, np.ndarray]  # kNN bank (train), val, test
    method: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    view: Any
    steps_per_epoch: int

    def state(self, epoch: int) -> dict:
        return {"epoch": epoch, "method": self.method.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "gen": self.gen.get_state()}

    def load(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["gen"])


def pretrain(cfg, *, name: str | None = None, parent: str | None = None, note: str = "", store=None,
             progress: bool = True, resume: bool = True) -> Run:
    """Pretrain ``cfg.ssl.method`` on ``cfg.model``'s backbone; returns the finished run.

    Args:
        name: run name (default: the method, with ``-reals`` for reals-only).
        parent: the run this one evolves from (for the report).
        note: what this run changes and why (kept in config.json).
        store: an open Store (default: ``ensure_store(cfg)``).
        resume: continue the newest unfinished run of this name with the same config.
    """
    s = cfg.ssl
    name = name or s.method + ("-reals" if s.reals_only else "")
    st = _setup(cfg, store, progress)  # fails on bad settings before a run folder exists
    run, state = open_or_resume(cfg, "ssl", name, fingerprint=st.store.fingerprint, parent=parent, note=note,
                                resume=resume, quiet=not progress)
    start = int(state["epoch"]) if state is not None else 0
    if state is not None:
        st.load(state)
        run.truncate_metrics(start + 1)  # rows 0..start; later ones came after the checkpoint
    else:
        # epoch 0: the random-init backbone, the baseline every SSL number is read against
        run.log_metrics(_monitor(st, 0, {"ssl_loss": None, "lr": None, "seconds": 0.0}, linear=True))
    for epoch in range(start + 1, s.epochs + 1):
        row = _epoch(st, epoch, progress)
        run.log_metrics(row)
        run.save("last.pt", st.state(epoch))
        if progress:
            print(f"epoch {epoch}: ssl_loss {row['ssl_loss']:.4f}  kNN real/fake bal. acc "
                  f"{row['knn_real_fake_bacc']:.3f} AUROC {row['knn_real_fake_auroc']:.3f}  "
                  f"source acc {row['knn_source_acc']:.3f}  {row['img_per_s']:.0f} img/s")
    save_backbone(run.path("backbone.pt"), st.method.backbone, cfg.model, st.store.image_size,
                  method=s.method, views=s.views, epochs=s.epochs)
    run.write_summary(_summary(run, st))
    return run


def _setup(cfg, store, progress: bool) -> _Setup:
    s = cfg.ssl
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    # the views draw on the training device: no host-to-device copy (and stream sync) per batch
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    view = make_view(s.views)
    method = prepare_model(build_method(s.method, build_backbone(cfg.model.backbone, cfg.model.width, cfg.model), s),
                           device)
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    rows = store.select("train", [] if s.reals_only else None)  # sources=[]: reals only
    steps = len(rows) // s.batch_size
    if steps == 0:
        raise ConfigError(f"ssl.batch-size={s.batch_size} exceeds the {len(rows)} training images "
                          f"of {store.path}")
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=s.lr,
                            weight_decay=s.weight_decay)
    sched = warmup_cosine(opt, int(s.warmup_epochs * steps), steps * s.epochs)
    return _Setup(cfg, store, device, gen, rows, _probe_rows(store, s.knn_bank, cfg.train.seed),
                  method, opt, sched, view, steps)


def _epoch(st: _Setup, epoch: int, progress: bool) -> dict[str, Any]:
    """Train one epoch, then monitor; returns the metrics.csv row."""
    s, c0 = st.cfg.ssl, time.process_time()
    lr = st.opt.param_groups[0]["lr"]
    batches = st.store.batches(st.rows, s.batch_size, shuffle=True, seed=st.cfg.train.seed * 1000 + epoch,
                               drop_last=True)
    stats = ssl_epoch(st.method, prefetch(batches, st.device), st.opt, st.view, st.device,
                      step=(epoch - 1) * st.steps_per_epoch, total_steps=st.steps_per_epoch * s.epochs,
                      scheduler=st.sched, gen=st.gen, amp=st.cfg.train.amp, total=st.steps_per_epoch,
                      desc=f"{s.method} epoch {epoch}/{s.epochs}" if progress else None)
    row = {"ssl_loss": stats["ssl_loss"], "lr": lr, "seconds": stats["seconds"],
           "img_per_s": stats["img_per_s"]}
    return _monitor(st, epoch, row, c0, linear=epoch == s.epochs)


def _monitor(st: _Setup, epoch: int, row: dict, c0: float | None = None, linear: bool = False) -> dict:
    """The metrics row of ``epoch``: ``row`` plus kNN (and, if asked, linear-probe) scores on val."""
    t0, c0 = time.time(), time.process_time() if c0 is None else c0
    feats = {k: _features(st, k) for k in ("train", "val")}
    n_src = len(st.store.source_names)
    scores = knn_scores(feats["train"], feats["val"], n_src, st.cfg.ssl.knn_k, st.cfg.ssl.knn_t, st.device)
    if linear:
        lin = linear_scores(feats["train"], {"val": feats["val"]}, n_src, st.cfg.ssl.probe_l2)
        scores.update({k.removesuffix("_val"): v for k, v in lin.items()})
    return {"epoch": epoch, "samples": epoch * st.steps_per_epoch * st.cfg.ssl.batch_size, **row,
            **scores, "monitor_seconds": time.time() - t0, "cpu_seconds": time.process_time() - c0}


def _probe_rows(store, bank: int, seed: int) -> dict[str, np.ndarray]:
    """Rows of the kNN bank (train, all sources, a fixed subset if large), val and test."""
    train = store.select("train")
    if 0 < bank < len(train):
        train = np.sort(np.random.default_rng(seed).choice(train, bank, replace=False))
    return {"train": train, "val": store.select("val"), "test": store.select("test")}


def _features(st: _Setup, split: str, desc: str | None = None):
    return extract_features(st.method.backbone, st.store, st.probe_rows[split], st.device,
                            batch_size=max(256, st.cfg.ssl.batch_size), amp=st.cfg.train.amp, desc=desc)


def _summary(run: Run, st: _Setup) -> dict:
    """Final kNN and linear probe on val and test, with the run's timings."""
    t0, c0, s = time.time(), time.process_time(), st.cfg.ssl
    feats = {k: _features(st, k) for k in st.probe_rows}
    n_src = len(st.store.source_names)
    knn = {}
    for split in ("val", "test"):
        knn.update({f"{k}_{split}": v for k, v in
                    knn_scores(feats["train"], feats[split], n_src, s.knn_k, s.knn_t, st.device).items()})
    linear = linear_scores(feats["train"], {k: feats[k] for k in ("val", "test")}, n_src, s.probe_l2)
    rows = run.metrics()
    train_s = sum(r.get("seconds") or 0 for r in rows)
    monitor_s = sum(r.get("monitor_seconds") or 0 for r in rows) + time.time() - t0
    return {"method": s.method, "views": s.views, "reals_only": s.reals_only, "epochs": s.epochs,
            "images": len(st.rows), "seconds": round(train_s + monitor_s, 1),
            "train_seconds": round(train_s, 1), "monitor_seconds": round(monitor_s, 1),
            # CPU time of all threads: comparable across runs on a shared machine, where the
            # wall time depends on the neighbours' load
            "cpu_seconds": round(sum(r.get("cpu_seconds") or 0 for r in rows) + time.process_time() - c0, 1),
            "final_ssl_loss": rows[-1].get("ssl_loss"),
            "random_init": {k: v for k, v in rows[0].items() if k.startswith(("knn_", "linear_"))},
            "knn": knn, "linear": linear, "source_names": st.store.source_names,
            "backbone": str(run.path("backbone.pt"))}
