"""What a federated client and server compute; no Flower import (Flower only wraps it).

Everything a client trains with is the shared detector recipe
(:mod:`dfflab.detector.recipe`): the same model and init, AdamW, warmup + cosine (laid
over all rounds x local epochs), class-balanced loss, augmentation, steps per epoch and
epoch seeds as the centralized baseline, so a federated run differs from it only in what
``[fl]`` says. Scoring is :func:`dfflab.detector.scoring.score`. This module adds:

* a client's data: :func:`client_data` (the prepared store + the run's ``shares``);
* weights in and out as state dicts (:func:`state_of`, :func:`load_state`, :func:`bn_keys`
  for FedBN), and an optimizer state that can travel through Flower's ``context.state``;
* :func:`local_train`: one round of ``fl.local-epochs`` epochs, with FedProx's proximal term;
* :func:`global_eval`: the server's scoring of a global model (threshold on the global
  validation set, metrics on test).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dfflab.config import derive
from dfflab.detector.recipe import make_recipe
from dfflab.detector.rows import select_rows
from dfflab.detector.scoring import EVAL_BATCH, Scores, score
from dfflab.device import resolve_device, set_threads

_STORES: dict[str, object] = {}


# -- data -------------------------------------------------------------------------------
def open_store(cfg):
    """The prepared store of ``cfg`` (the server prepares it first), opened once per process."""
    from dfflab.data.store import Store

    key = str(cfg.store_dir)
    if key not in _STORES:
        _STORES[key] = Store(cfg.store_dir)
    return _STORES[key]


def client_data(cfg, partition_id: int, num_partitions: int,
                partition_file: str | None = None) -> tuple[object, dict[str, np.ndarray]]:
    """(store, ``{"train": rows, "val": rows}``) of one client (from the run's ``partition_file``
    when it can read it, see :mod:`dfflab.federated.shares`)."""
    from dfflab.federated import shares

    store = open_store(cfg)
    return store, shares.client(partition_file, store, cfg, partition_id, num_partitions)


def global_rows(store, cfg) -> dict[str, np.ndarray]:
    """The server's sets: val (training sources, picks the threshold) and test -- the
    centralized baseline's own val and test rows."""
    rows = select_rows(store, cfg.train)
    return {"val": rows["val"], "test": rows["test"]}


# -- model ------------------------------------------------------------------------------
def device_for(cfg, threads: int = 0) -> torch.device:
    """Resolve ``train.device`` and set torch's CPU threads (``threads`` or ``train.threads``)."""
    set_threads(threads or cfg.train.threads)
    return resolve_device(cfg.train.device)


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

    Aggregated counters arrive as floats (in a DP run, 0-d arrays arrive as 1-element ones, and
    BatchNorm buffers not at all: the model keeps its own); they are cast and reshaped back to
    each buffer's dtype and shape.
    """
    own = model.state_dict()

    def fit(k, v):
        v = torch.as_tensor(v).to(own[k].dtype)
        return v.reshape(own[k].shape) if v.dim() != own[k].dim() and v.numel() == own[k].numel() else v

    buffers = ("running_mean", "running_var", "num_batches_tracked")
    merged = {k: v for k, v in own.items() if k.endswith(buffers) and k not in state}  # DP: the model's own
    merged.update({k: fit(k, v) for k, v in state.items()})
    merged.update({k: fit(k, v) for k, v in (keep_local or {}).items()})
    model.load_state_dict(merged)


def flat_optimizer_state(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter state as flat tensors (``"<param index>.<key>"``), for an ArrayRecord."""
    return {f"{i}.{k}": torch.as_tensor(v).detach().cpu().clone() for i, st in opt.state_dict()["state"].items()
            for k, v in st.items()}


def load_optimizer_state(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`flat_optimizer_state` (the param groups are the recipe's own)."""
    state: dict[int, dict] = {}
    for key, value in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = torch.as_tensor(value)
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


# -- training ---------------------------------------------------------------------------
def proximal_term(model: nn.Module, mu: float) -> Callable[[nn.Module], torch.Tensor]:
    """FedProx's mu/2 ||w - w_global||^2 over trainable weights, anchored at the current ones."""
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(m: nn.Module) -> torch.Tensor:
        return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor, strict=True))

    return term


def local_train(model: nn.Module, store, rows: np.ndarray, cfg, device: torch.device, *, server_round: int,
                partition_id: int, proximal_mu: float = 0.0, flip_labels: bool = False,
                optimizer_state: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, float], dict]:
    """One round: ``fl.local-epochs`` epochs of the recipe on a client's rows.

    Args:
        server_round: 1-based round (positions the learning-rate schedule and the epoch seeds).
        proximal_mu: FedProx's mu; 0 trains plain FedAvg-style.
        flip_labels: train on real <-> fake swapped (a label-flipping attacker).
        optimizer_state: the client's AdamW state after its previous round
            (:func:`flat_optimizer_state`), to continue from; ``None`` starts AdamW afresh.

    Returns:
        (``train_loss``, ``images``, ``seconds``, ``steps``; the AdamW state after this round).
    """
    fl = cfg.fl
    if fl.local_batch_size > 0:  # the client's own batch size; everything else is the shared recipe
        cfg = derive(cfg, {"train.batch-size": fl.local_batch_size})
    first = (server_round - 1) * fl.local_epochs  # this round's first epoch in the run's schedule
    recipe = make_recipe(cfg, store, rows, device, model, total_epochs=fl.rounds * fl.local_epochs,
                         start_epoch=first, client=partition_id, flip_labels=flip_labels)
    if optimizer_state:
        load_optimizer_state(recipe.opt, optimizer_state)
    extra = proximal_term(model, proximal_mu) if proximal_mu > 0 else None
    loss_sum, images, seconds = 0.0, 0, 0.0
    for e in range(fl.local_epochs):
        stats = recipe.train_epoch(first + e, extra_loss=extra)
        loss_sum += stats["loss"] * stats["images"]
        images += stats["images"]
        seconds += stats["seconds"]
    out = {"train_loss": loss_sum / max(1, images), "images": images, "seconds": seconds,
           "steps": fl.local_epochs * recipe.steps}
    return out, flat_optimizer_state(recipe.opt)


# -- evaluation -------------------------------------------------------------------------
def test(model: nn.Module, store, rows: np.ndarray, device: torch.device, *, threshold: float | None = None,
         amp: bool = True) -> Scores:
    """:func:`~dfflab.detector.scoring.score` with the plain (unweighted) BCE as ``loss``."""
    return score(model, store, rows, device, threshold=threshold, loss_fn=nn.BCEWithLogitsLoss(), amp=amp)


def local_val(model: nn.Module, store, rows: np.ndarray, device: torch.device, *, amp: bool = True) -> dict:
    """A client's validation: BCE ``loss``, ``auroc``, ``accuracy`` and ``balanced_accuracy`` at 0.5.

    The point values of :func:`test` (torchmetrics), from :func:`dfflab.evidence.weighted_metrics`
    (numpy, tested to match it): a Flower client process never imports torchmetrics, which
    brings torchvision and matplotlib (about 1 s per client on 2 cores, paid by every run).
    """
    from dfflab.evidence import weighted_metrics
    from dfflab.train.core import predict

    pred = predict(model, store.batches(rows, EVAL_BATCH), device, amp=amp)
    probs = torch.nan_to_num(torch.sigmoid(pred.logits.float()), nan=0.5).numpy()
    labels = pred.labels.numpy().astype(bool)
    loss = float(nn.functional.binary_cross_entropy_with_logits(pred.logits.float(), pred.labels.float()))
    m = {"loss": loss, "accuracy": float(((probs >= 0.5) == labels).mean())}
    if labels.min() == labels.max():
        return {**m, "auroc": float("nan"), "balanced_accuracy": float("nan")}
    w = weighted_metrics(probs, labels, np.ones(len(labels)), threshold=0.5)
    return {**m, "auroc": float(w["auroc"][0]), "balanced_accuracy": float(w["balanced_accuracy"][0])}


def global_eval(model: nn.Module, store, cfg, device: torch.device) -> dict:
    """The centralized metrics of a global model: threshold on global val, scores on test.

    Returns:
        ``{"threshold", "val", "test", "test_per_source", "scores"}`` (metric dicts as
        :func:`dfflab.metrics.binary_metrics`; ``scores`` the test :class:`Scores`).
    """
    sets = global_rows(store, cfg)
    val = test(model, store, sets["val"], device, amp=cfg.train.amp)
    tst = test(model, store, sets["test"], device, threshold=val.threshold, amp=cfg.train.amp)
    return {"threshold": val.threshold, "val": val.overall, "test": tst.overall, "test_per_source": tst.per_source,
            "scores": tst}


def eval_row(ev: dict) -> dict[str, float]:
    """The metrics.csv columns of a :func:`global_eval` result (same names as centralized)."""
    return {"val_auroc": ev["val"]["auroc"], "val_loss": ev["val"]["loss"], "val_threshold": ev["threshold"],
            "test_accuracy": ev["test"]["accuracy"], "test_balanced_accuracy": ev["test"]["balanced_accuracy"],
            "test_auroc": ev["test"]["auroc"],
            **{f"test_auroc_{s}": m["auroc"] for s, m in ev["test_per_source"].items()}}
