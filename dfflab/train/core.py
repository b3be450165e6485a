"""The one training core: ``train_one_epoch`` and ``predict``.

Shared by every detector trainer (through :mod:`dfflab.detector.recipe` and
:mod:`dfflab.detector.scoring`), the Flower client (which only wraps them) and the SSL
probes. No Flower import here. Batches are ``(x, y, source_id)`` with ``x`` uint8
(B, 3, H, W) straight from the prepared store; conversion, augmentation and mixed
precision happen on the device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dfflab.device import autocast, to_device_images

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  floor: float = 0.01, start: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the optimizer's lr, then cosine decay to ``floor`` x lr.

    ``start`` is the step of the schedule the first ``scheduler.step()`` follows (a
    federated round continues the schedule of the whole run).
    """

    def factor(step: int) -> float:
        step += start
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def detection_loss(labels: np.ndarray, balance: str, device: torch.device) -> nn.Module:
    """BCE on logits; with ``balance=weight`` fakes are down-weighted by n_real / n_fake.

    DFF is 1 real : 3 fakes. Unweighted, the loss rewards calling everything fake; the
    weight makes each class contribute equally, as the balanced metrics assume.
    """
    if balance == "weight":
        n_fake, n_real = int((labels == 1).sum()), int((labels == 0).sum())
        w = torch.tensor(n_real / max(1, n_fake), device=device)
        return nn.BCEWithLogitsLoss(pos_weight=w)
    if balance in ("sample", "none"):
        return nn.BCEWithLogitsLoss()
    raise ValueError(f"unknown balance '{balance}' (known: weight, sample, none)")


def epoch_rows(rows: np.ndarray, labels: np.ndarray, balance: str, seed: int) -> np.ndarray:
    """The rows one epoch visits, in order: a permutation, or a class-balanced resample."""
    rng = np.random.default_rng(seed)
    if balance != "sample":
        return rows[rng.permutation(len(rows))]
    y = labels[rows]
    p = np.where(y == 1, 0.5 / max(1, (y == 1).sum()), 0.5 / max(1, (y == 0).sum()))
    return rng.choice(rows, size=len(rows), replace=True, p=p / p.sum())


def train_one_epoch(model: nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device, *,
                    scheduler=None, augment: Callable | None = None, gen: torch.Generator | None = None,
                    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None, amp: bool = True,
                    desc: str | None = None, total: int | None = None) -> dict[str, float]:
    """One pass over ``batches``; returns averaged ``loss`` plus ``images``, ``seconds``, ``img_per_s``.

    Args:
        extra_loss: added to the loss each step (FedProx's proximal term, say).
        gen: generator for the augmentations (reproducible runs).

    Raises:
        FloatingPointError: the loss became NaN or infinite (the caller keeps its last
            good checkpoint).
    """
    model.train()
    total_loss, n, t0 = 0.0, 0, time.time()
    bar = tqdm(batches, desc=desc, total=total, leave=False, disable=desc is None, dynamic_ncols=True)
    for x, y, _ in bar:
        x = to_device_images(x, device)
        y = y.to(device).float()
        if augment is not None:
            x = augment(x, gen)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} after {n} images")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(y)
        n += len(y)
        bar.set_postfix(loss=f"{total_loss / n:.4f}")
    secs = time.time() - t0
    return {"loss": total_loss / max(1, n), "images": n, "seconds": secs, "img_per_s": n / max(secs, 1e-9)}


@dataclass
class Predictions:
    """Scores of one evaluation set, kept together so metrics and UQ can reuse them."""

    logits: torch.Tensor  # (N,) or (T, N) for T stochastic passes
    labels: torch.Tensor  # (N,)
    source_ids: torch.Tensor  # (N,)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], device: torch.device, *, amp: bool = True,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None, passes: int = 1,
            dropout: bool = False, desc: str | None = None) -> Predictions:
    """Logits of ``model`` over ``batches``.

    Args:
        transform: applied to the float images first (robustness distortions).
        passes: forward passes per batch; with ``dropout=True`` these are MC dropout
            samples and the logits come back as (passes, N).
        dropout: keep dropout layers stochastic (everything else in eval mode).
    """
    model.eval()
    if dropout:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.train()
    outs, ys, ss = [], [], []
    for x, y, s in tqdm(batches, desc=desc, leave=False, disable=desc is None, dynamic_ncols=True):
        x = to_device_images(x, device)
        if transform is not None:
            x = transform(x)
        with autocast(device, amp):
            z = torch.stack([model(x).float() for _ in range(passes)])  # (T, B)
        outs.append(z.cpu())
        ys.append(y)
        ss.append(s)
    model.eval()
    logits = torch.cat(outs, dim=1)
    return Predictions(logits if passes > 1 else logits[0], torch.cat(ys), torch.cat(ss))


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[Batch], device: torch.device, amp: bool = True) -> int:
    """Recompute every BatchNorm layer's running statistics from ``batches`` (cumulative average,
    weights unchanged); returns the images seen.

    A federated global model's averaged running statistics are not the statistics of any data
    (the mean of per-client variances misses the between-client variance); re-estimating them on
    data the server holds gives the model the statistics it will meet.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.eval()
    for m in bns:
        m.train()
    n = 0
    for x, _, _ in batches:
        x = to_device_images(x, device)
        with autocast(device, amp):
            model(x)
        n += len(x)
    for m, (momentum, training) in zip(bns, saved, strict=True):
        m.momentum = momentum
        m.train(training)
    model.eval()
    return n
