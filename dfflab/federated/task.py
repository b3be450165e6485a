"""What a federated client and server compute; no Flower import (Flower only wraps it).

* the model: :func:`initial_model` (``build_detector`` + ``init_backbone``), weights in
  and out as state dicts (:func:`load_state`, :func:`bn_keys` for FedBN);
* a client's data: :func:`client_data` (the prepared store + ``partition.client_rows``);
* :func:`local_train`: ``fl.local-epochs`` passes of ``dfflab.train.core.train_one_epoch``
  with the centralized recipe (AdamW, warmup + cosine over the whole federated run,
  class-balanced loss, flip/shift augmentation) and FedProx's proximal term as
  ``extra_loss``;
* :func:`test` / :func:`global_eval`: ``dfflab.train.core.evaluate`` on a client's
  validation rows or on the global val (threshold) and test sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dfflab.device import prepare_model, resolve_device, seed_everything, set_threads
from dfflab.metrics import binary_metrics, choose_threshold, per_source_metrics
from dfflab.models import build_detector, init_backbone
from dfflab.models.optim import optimizer_groups
from dfflab.train.augment import make_augment
from dfflab.train.core import (
    detection_loss,
    epoch_rows,
    evaluate,
    train_one_epoch,
    warmup_cosine,
)

EVAL_BATCH = 256
_STORES: dict[str, object] = {}


# -- data -------------------------------------------------------------------------------
def open_store(cfg):
    """The prepared store of ``cfg`` (the server prepares it first), opened once per process."""
    from dfflab.data.store import Store

    key = str(cfg.store_dir)
    if key not in _STORES:
        _STORES[key] = Store(cfg.store_dir)
    return _STORES[key]


def client_data(cfg, partition_id: int, num_partitions: int) -> tuple[object, dict[str, np.ndarray]]:
    """(store, ``{"train": rows, "val": rows}``) of one client."""
    from dfflab.federated.partition import client_rows

    store = open_store(cfg)
    return store, client_rows(store, cfg, partition_id, num_partitions)


def global_rows(store, cfg) -> dict[str, np.ndarray]:
    """The server's sets: val (training sources, picks the threshold) and test."""
    return {"val": store.select("val", cfg.train.train_sources),
            "test": store.select("test", cfg.train.test_sources)}


# -- model ------------------------------------------------------------------------------
def device_for(cfg, threads: int = 0) -> torch.device:
    """Resolve ``train.device`` and set torch's CPU threads (``threads`` or ``train.threads``)."""
    set_threads(threads or cfg.train.threads)
    return resolve_device(cfg.train.device)


def new_model(cfg, device: torch.device) -> nn.Module:
    """An untrained detector of ``cfg.model`` on ``device`` (channels-last)."""
    return prepare_model(build_detector(cfg.model), device)


def initial_model(cfg, device: torch.device) -> tuple[nn.Module, str | None]:
    """(global model of round 0 on ``device``, init path): seeded, ``train.init``'s backbone."""
    seed_everything(cfg.train.seed)
    model = build_detector(cfg.model)
    init_path = init_backbone(model, cfg.train.init, cfg.model)
    return prepare_model(model, device), init_path


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights and buffers on the CPU, contiguous (what goes into an ArrayRecord)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def bn_keys(model: nn.Module) -> set[str]:
    """State-dict keys of BatchNorm layers: affine weights, running statistics, counters."""
    keys = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            keys |= {f"{name}.{k}" for k in module.state_dict()}
    return keys


def load_state(model: nn.Module, state: dict[str, torch.Tensor], keep_local: dict | None = None) -> None:
    """Load ``state`` (e.g. the global model), then ``keep_local`` on top (FedBN's BN layers).

    Aggregated counters arrive as floats; they are cast back to each buffer's dtype.
    """
    own = model.state_dict()
    merged = {k: torch.as_tensor(v).to(own[k].dtype) for k, v in state.items()}
    merged.update({k: torch.as_tensor(v).to(own[k].dtype) for k, v in (keep_local or {}).items()})
    model.load_state_dict(merged)


# -- training ---------------------------------------------------------------------------
def proximal_term(model: nn.Module, mu: float) -> Callable[[nn.Module], torch.Tensor]:
    """FedProx's mu/2 ||w - w_global||^2 over trainable weights, anchored at the current ones."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(m: nn.Module) -> torch.Tensor:
        return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

    return term


def steps_per_epoch(n_rows: int, batch_size: int) -> tuple[int, bool]:
    """(optimizer steps per epoch, drop_last): a last batch of 1 would break BatchNorm."""
    drop_last = n_rows > batch_size
    return (n_rows // batch_size if drop_last else math.ceil(n_rows / batch_size)), drop_last


def _round_schedule(opt, cfg, server_round: int, steps: int):
    """The centralized warmup + cosine, laid over all rounds; this round picks up where it left."""
    t, fl = cfg.train, cfg.fl
    total = fl.rounds * fl.local_epochs * steps
    factor = warmup_cosine(torch.optim.SGD([torch.zeros(1)], lr=1.0), round(t.warmup_epochs * steps),
                           total).lr_lambdas[0]
    offset = (server_round - 1) * fl.local_epochs * steps
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factor(offset + s))


def local_train(model: nn.Module, store, rows: np.ndarray, cfg, device: torch.device, *,
                server_round: int, partition_id: int, proximal_mu: float = 0.0,
                flip_labels: bool = False) -> dict[str, float]:
    """``fl.local-epochs`` epochs on a client's rows; returns train_loss, images, seconds.

    Args:
        server_round: 1-based round (positions the learning-rate schedule and seeds).
        proximal_mu: FedProx's mu; 0 trains plain FedAvg-style.
        flip_labels: train on real <-> fake swapped (a label-flipping attacker).
    """
    from dfflab.federated.attacks import flip_labels as flipped

    t = cfg.train
    if len(rows) == 0:
        raise ValueError(f"client {partition_id} has no training rows")
    steps, drop_last = steps_per_epoch(len(rows), t.batch_size)
    opt = torch.optim.AdamW(optimizer_groups(model, t), lr=t.lr, weight_decay=t.weight_decay)
    sched = _round_schedule(opt, cfg, server_round, steps)
    labels = 1 - store.labels[rows] if flip_labels else store.labels[rows]
    loss_fn = detection_loss(labels, t.balance, device)
    extra = proximal_term(model, proximal_mu) if proximal_mu > 0 else None
    augment = make_augment(t.augment)
    loss_sum, images, seconds = 0.0, 0, 0.0
    for e in range(cfg.fl.local_epochs):
        # One seed per (client, round, epoch): runs replay exactly, clients differ.
        seed = (t.seed * 1_000_003 + partition_id * 10_007 + (server_round - 1) * cfg.fl.local_epochs + e)
        torch.manual_seed(seed)  # dropout
        gen = torch.Generator().manual_seed(seed)  # augmentation
        order = epoch_rows(rows, 1 - store.labels if flip_labels else store.labels, t.balance, seed)
        batches = store.batches(order, t.batch_size, drop_last=drop_last)
        stats = train_one_epoch(model, flipped(batches) if flip_labels else batches, opt,
                                loss_fn, device, scheduler=sched, augment=augment, gen=gen,
                                extra_loss=extra, amp=t.amp, total=steps)
        loss_sum += stats["loss"] * stats["images"]
        images += stats["images"]
        seconds += stats["seconds"]
    return {"train_loss": loss_sum / max(1, images), "images": images, "seconds": seconds}


# -- evaluation -------------------------------------------------------------------------
def test(model: nn.Module, store, rows: np.ndarray, device: torch.device, *, threshold: float | None = None,
         amp: bool = True) -> tuple[dict, dict, float]:
    """(overall metrics incl. loss, {source: metrics}, threshold) on ``rows``.

    ``threshold=None`` chooses it on these rows (max balanced accuracy), as on val.
    A model wrecked by an attack may score NaN: such scores count as 0.5 (no
    information) and ``nonfinite_frac`` says how many there were.
    """
    loss_fn = nn.BCEWithLogitsLoss()
    overall, _, pred = evaluate(model, store.batches(rows, EVAL_BATCH), device, store.source_names,
                                amp=amp, loss_fn=loss_fn)
    bad = ~torch.isfinite(torch.as_tensor(pred.probs))
    probs = torch.where(bad, 0.5, torch.as_tensor(pred.probs))
    thr = choose_threshold(probs, pred.labels) if threshold is None else threshold
    metrics = binary_metrics(probs, pred.labels, thr)
    metrics["loss"] = overall["loss"]
    metrics["nonfinite_frac"] = float(bad.float().mean()) if len(bad) else 0.0
    return metrics, per_source_metrics(probs, pred.labels, pred.source_ids, store.source_names, thr), thr


def global_eval(model: nn.Module, store, cfg, device: torch.device) -> dict:
    """The centralized metrics of a global model: threshold on global val, scores on test.

    Returns:
        ``{"threshold", "val", "test", "test_per_source"}`` (metric dicts as
        :func:`dfflab.metrics.binary_metrics`).
    """
    sets = global_rows(store, cfg)
    val, _, thr = test(model, store, sets["val"], device, amp=cfg.train.amp)
    test_m, test_per, _ = test(model, store, sets["test"], device, threshold=thr, amp=cfg.train.amp)
    return {"threshold": thr, "val": val, "test": test_m, "test_per_source": test_per}


def eval_row(ev: dict) -> dict[str, float]:
    """The metrics.csv columns of a :func:`global_eval` result (same names as centralized)."""
    return {"val_auroc": ev["val"]["auroc"], "val_loss": ev["val"]["loss"], "val_threshold": ev["threshold"],
            "test_accuracy": ev["test"]["accuracy"], "test_balanced_accuracy": ev["test"]["balanced_accuracy"],
            "test_auroc": ev["test"]["auroc"],
            **{f"test_auroc_{s}": m["auroc"] for s, m in ev["test_per_source"].items()}}
