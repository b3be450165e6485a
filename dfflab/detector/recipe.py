"""The detector recipe: how every detector in dfflab is built and trained, in one place.

The centralized baseline, the Flower client, the local-only baseline, label-efficiency
cells, UQ ensemble members and the GAN's matched detector all train through a
:class:`Recipe`, so a federated run differs from the centralized baseline only in what
``[fl]`` says. What the recipe fixes, and why:

* **Model**: ``build_detector(cfg.model)`` seeded with ``train.seed``, backbone from
  ``train.init`` (scratch, an SSL run or a checkpoint), channels-last on the device.
* **Optimizer**: AdamW (``train.lr``, ``train.weight-decay``) over the groups of
  :func:`dfflab.models.optim.optimizer_groups` (``train.freeze``, ``train.layer-decay``; by
  default one group of every parameter).
* **Schedule**: linear warmup (``train.warmup-epochs``) then cosine decay, stepped per
  batch over the whole run (``train.epochs``, or rounds x local epochs in a federation);
  a recipe that starts at epoch e picks up the schedule where epoch e begins.
* **Loss**: BCE on logits; with ``train.balance=weight`` fakes weigh n_real / n_fake
  (DFF is 1 real : 3 fakes), so both classes count the same.
* **Augmentation**: flips and integer shifts on tensors, on the device
  (``dfflab.train.augment``); nothing that resamples or shifts colour.
* **Steps**: ``len(rows) // batch-size`` per epoch with ``drop_last`` (a last batch of 1
  breaks BatchNorm); one batch when the rows fit in one.
* **Seeds**: epoch e of client c uses seed ``train.seed * 1000 + e + 100_003 * c`` for its
  order, dropout and augmentation, so a resumed run replays exactly and clients differ;
  client 0 is the centralized run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dfflab.device import prepare_model, seed_everything
from dfflab.models import build_detector, init_backbone
from dfflab.models.optim import optimizer_groups
from dfflab.train.augment import make_augment
from dfflab.train.core import detection_loss, epoch_rows, train_one_epoch, warmup_cosine


def epoch_seed(seed: int, epoch: int, client: int = 0) -> int:
    """The seed of epoch ``epoch`` (0-based, counted over the whole run) of client ``client``."""
    return seed * 1000 + epoch + 100_003 * client


def steps_per_epoch(n_rows: int, batch_size: int) -> tuple[int, bool]:
    """(optimizer steps per epoch, drop_last): a last batch of 1 would break BatchNorm."""
    drop_last = n_rows > batch_size
    return (n_rows // batch_size if drop_last else math.ceil(n_rows / batch_size)), drop_last


def new_model(cfg, device: torch.device) -> nn.Module:
    """An untrained detector of ``cfg.model`` on ``device`` (weights to be loaded into it)."""
    return prepare_model(build_detector(cfg.model), device)


def initial_model(cfg, device: torch.device) -> tuple[nn.Module, str | None]:
    """(the run's starting model on ``device``, the init path loaded): seeded, ``train.init``'s backbone."""
    seed_everything(cfg.train.seed)
    model = build_detector(cfg.model)
    init_path = init_backbone(model, cfg.train.init, cfg.model)
    return prepare_model(model, device), init_path


@dataclass
class Recipe:
    """Optimizer, schedule, loss and augmentation for training one model on fixed rows.

    Build with :func:`make_recipe`; call :meth:`train_epoch` once per epoch.
    """

    cfg: object
    store: object
    rows: np.ndarray  # the training rows
    labels: np.ndarray  # labels of every store row, as this recipe trains on them
    device: torch.device
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    augment: Callable | None
    steps: int  # optimizer steps per epoch
    drop_last: bool
    client: int = 0
    flip_labels: bool = False

    def batches(self, epoch: int) -> Iterable:
        """The (x, y, source_id) batches of ``epoch`` in its seeded order."""
        t = self.cfg.train
        order = epoch_rows(self.rows, self.labels, t.balance, epoch_seed(t.seed, epoch, self.client))
        batches = self.store.batches(order, t.batch_size, drop_last=self.drop_last)
        return ((x, 1 - y, s) for x, y, s in batches) if self.flip_labels else batches

    def train_epoch(self, epoch: int, *, extra_loss: Callable | None = None, desc: str | None = None) -> dict:
        """One pass over the rows as epoch ``epoch``; returns ``loss``, ``images``, ``seconds``, ``img_per_s``."""
        seed = epoch_seed(self.cfg.train.seed, epoch, self.client)
        torch.manual_seed(seed)  # dropout
        return train_one_epoch(self.model, self.batches(epoch), self.opt, self.loss_fn, self.device,
                               scheduler=self.sched, augment=self.augment,
                               gen=torch.Generator().manual_seed(seed), extra_loss=extra_loss,
                               amp=self.cfg.train.amp, desc=desc, total=self.steps)


def make_recipe(cfg, store, rows: np.ndarray, device: torch.device, model: nn.Module, *, total_epochs: int,
                start_epoch: int = 0, client: int = 0, flip_labels: bool = False) -> Recipe:
    """The recipe for training ``model`` on store ``rows``.

    Args:
        total_epochs: length of the learning-rate schedule in epochs (``train.epochs``, or
            rounds x local epochs in a federation).
        start_epoch: where in the schedule this recipe starts (a federated round's first epoch).
        client: the client id in the epoch seeds (0 = centralized).
        flip_labels: train on real <-> fake swapped (a label-flipping attacker).

    Raises:
        ValueError: ``rows`` is empty.
    """
    t = cfg.train
    if len(rows) == 0:
        raise ValueError(f"no training rows (client {client})")
    steps, drop_last = steps_per_epoch(len(rows), t.batch_size)
    opt = torch.optim.AdamW(optimizer_groups(model, t), lr=t.lr, weight_decay=t.weight_decay)
    sched = warmup_cosine(opt, round(t.warmup_epochs * steps), total_epochs * steps, start=start_epoch * steps)
    labels = 1 - store.labels if flip_labels else store.labels
    loss_fn = detection_loss(labels[rows], t.balance, device)
    return Recipe(cfg, store, rows, labels, device, model, opt, sched, loss_fn, make_augment(t.augment), steps,
                  drop_last, client, flip_labels)
