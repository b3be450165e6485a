"""What a federated SSL client and server compute (``fl.task=ssl``); no Flower import.

Each client pretrains the detector's backbone on its own training images, labels unused,
with the lightly methods of :mod:`dfflab.ssl` (the same :func:`~dfflab.ssl.loop.ssl_epoch`,
views, optimizer and schedules as ``dfflab ssl pretrain``); the server averages the
**online network** and never sees an image. What travels and what stays:

* **SimCLR** (FedSimCLR): the online network is backbone + projection head; each round a
  client starts from the global one.
* **BYOL**: the online network is backbone + projection head + prediction head; the target
  (momentum) network never leaves the client. That is the split of Zhuang et al.'s federated
  BYOL (ICCV 2021, FedU; ICLR 2022, "Divergence-aware federated self-supervised learning",
  whose code aggregates the online encoder and predictor and keeps each client's target):
  the target is BYOL's slow teacher, an average of the client's own past online networks, so
  it stays with the data it was averaged on, and only what the gradient trains is shared.
  The ICLR paper's finding that retaining local knowledge helps most on non-IID clients is
  why FedEMA is the default here, where every client holds another generator's fakes. How a
  client starts a round (``fl.ssl-update``):

  - ``fedema`` (the default; the ICLR 2022 paper's FedEMA): online network and predictor
    become ``mu * own + (1 - mu) * global`` with ``mu = min(lambda * ||W_global - W_own||, 1)``,
    the divergence measured on the online encoder's weights; ``lambda = fl.ema-tau /
    divergence`` at the client's first update (their autoscaler, tau = 0.7). A client whose
    data pull it far from the consensus keeps more of its own model.
    On quick (5 rounds) the divergence grew every round (1.2, 2.3, 2.7, 2.8), so mu was 0.7 in
    round 2 and 1 from round 3: from then on each client continued its own online network and
    the global one is their average. Fine-tuned by FedAvg, that backbone still beat FedBYOL's
    (test AUROC 0.770 vs 0.728, paired difference +0.041 [0.019, 0.066], one seed).
  - ``fedbyol``: online network and predictor = the global ones (the paper's FedBYOL baseline).

  BatchNorm statistics are taken from the global model in both (FedEMA averages parameters).

The first round starts every client from the global online network, its target a copy of
it, exactly as BYOL starts. The learning-rate warmup + cosine and BYOL's momentum schedule
run over all rounds x ``fl.local-epochs`` epochs, so each round continues where the last
ended; AdamW starts afresh each round. The server's monitor (kNN on val against a train
feature bank, and the linear probe) is the experimenter's yardstick, as the detector's
global test set is, not part of the protocol.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from dfflab.config import ConfigError
from dfflab.detector.recipe import epoch_seed
from dfflab.device import prepare_model, seed_everything
from dfflab.federated.task import state_of
from dfflab.models import build_backbone
from dfflab.ssl.loop import prefetch, ssl_epoch
from dfflab.ssl.methods import build_method
from dfflab.ssl.probes import extract_features, knn_scores, linear_scores
from dfflab.ssl.views import make_view
from dfflab.train.core import warmup_cosine

ENCODER = ("backbone", "projection_head")  # the online encoder FedEMA measures divergence on
ONLINE_HEADS = (*ENCODER, "prediction_head")  # what FedEMA fuses (BYOL); SimCLR has no predictor


# -- the method and its online part ---------------------------------------------------------
def new_method(cfg, device: torch.device) -> nn.Module:
    """``ssl.method`` around a fresh ``[model]`` backbone, seeded with ``train.seed``, on ``device``."""
    seed_everything(cfg.train.seed)
    return prepare_model(build_method(cfg.ssl.method, build_backbone(cfg.model.backbone, cfg.model.width), cfg.ssl),
                         device)


def is_target(key: str) -> bool:
    """Whether a state-dict key belongs to BYOL's momentum (target) network."""
    return key.split(".", 1)[0].endswith("_momentum")


def online_state(method: nn.Module) -> dict[str, torch.Tensor]:
    """The online network's weights and buffers on the CPU: what a client sends."""
    return {k: v for k, v in state_of(method).items() if not is_target(k)}


def load_online(method: nn.Module, online: dict[str, torch.Tensor]) -> None:
    """Load the online network (the target, if any, is left as it is)."""
    own = method.state_dict()
    missing = [k for k in own if not is_target(k) and k not in online and not k.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"online weights lack {missing[:3]}...")
    with torch.no_grad():
        for k, v in online.items():
            own[k].copy_(torch.as_tensor(v).to(own[k].dtype).reshape(own[k].shape))  # DP: 0-d arrays travel as 1-d


def reset_target(method: nn.Module) -> None:
    """BYOL's start: the target network = a copy of the online one."""
    with torch.no_grad():
        for name in ENCODER:
            if hasattr(method, f"{name}_momentum"):
                getattr(method, f"{name}_momentum").load_state_dict(getattr(method, name).state_dict())


def _params(method: nn.Module, heads: tuple[str, ...]) -> list[str]:
    return [k for k, _ in method.named_parameters() if k.split(".", 1)[0] in heads]


# -- a client's start of a round --------------------------------------------------------------
def client_start(method: nn.Module, global_online: dict, own: dict | None, cfg,
                 scaler: float | None) -> tuple[dict[str, float], float | None]:
    """Put the round's starting weights into ``method`` (see the module docstring).

    Args:
        global_online: the online network the server sent.
        own: the client's whole method state after its previous round (None in its first).
        scaler: the client's FedEMA lambda (None until its first update measures it).

    Returns:
        (``{"divergence", "mu"}`` for the client's metrics, the lambda to keep).
    """
    load_online(method, global_online)
    if cfg.ssl.method != "byol" or own is None:
        reset_target(method)  # SimCLR has none; BYOL's first round starts as BYOL does
        return {"divergence": 0.0, "mu": 0.0}, scaler
    with torch.no_grad():  # the client's own target network, always
        state = method.state_dict()
        for k, v in own.items():
            if is_target(k):
                state[k].copy_(v.to(state[k].dtype).reshape(state[k].shape))
    if cfg.fl.ssl_update == "fedbyol":
        return {"divergence": 0.0, "mu": 0.0}, scaler
    enc = _params(method, ENCODER)
    div = float(torch.sqrt(sum(((global_online[k].double().reshape(own[k].shape) - own[k].double()) ** 2).sum()
                               for k in enc)))
    if scaler is None:  # FedEMA's autoscaler: the first measured divergence sets lambda
        scaler = cfg.fl.ema_tau / max(div, 1e-12)
    mu = min(scaler * div, 1.0)
    with torch.no_grad():
        state = method.state_dict()
        for k in _params(method, ONLINE_HEADS):
            fused = mu * own[k].double() + (1 - mu) * global_online[k].double().reshape(own[k].shape)
            state[k].copy_(fused.to(state[k].dtype))
    return {"divergence": div, "mu": mu}, scaler


# -- local pretraining ------------------------------------------------------------------------
def train_rows(store, rows: np.ndarray, cfg) -> np.ndarray:
    """The client's pretraining rows: its training rows (``ssl.reals-only``: their reals)."""
    return rows[store.labels[rows] == 0] if cfg.ssl.reals_only else rows


def local_pretrain(method: nn.Module, store, rows: np.ndarray, cfg, device: torch.device, *, server_round: int,
                   partition_id: int) -> dict[str, float]:
    """One round: ``fl.local-epochs`` SSL epochs over a client's rows.

    Returns:
        ``train_loss`` (the SSL loss, mean over images), ``images``, ``seconds``, ``steps``.

    Raises:
        ConfigError: the client holds fewer images than one batch (``ssl.batch-size``).
    """
    s, fl = cfg.ssl, cfg.fl
    steps = len(rows) // s.batch_size
    if steps == 0:
        raise ConfigError(f"client {partition_id}: ssl.batch-size={s.batch_size} exceeds its {len(rows)} images")
    total = fl.rounds * fl.local_epochs * steps
    first = (server_round - 1) * fl.local_epochs  # this round's first epoch in the run's schedule
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=s.lr,
                            weight_decay=s.weight_decay)
    sched = warmup_cosine(opt, int(s.warmup_epochs * steps), total, start=first * steps)
    gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.train.seed, first, partition_id))
    view = make_view(s.views)
    loss_sum, images, seconds = 0.0, 0, 0.0
    for epoch in range(first, first + fl.local_epochs):
        batches = store.batches(rows, s.batch_size, shuffle=True, seed=epoch_seed(cfg.train.seed, epoch, partition_id),
                                drop_last=True)
        st = ssl_epoch(method, prefetch(batches, device), opt, view, device, step=epoch * steps, total_steps=total,
                       scheduler=sched, gen=gen, amp=cfg.train.amp)
        loss_sum += st["ssl_loss"] * st["images"]
        images += st["images"]
        seconds += st["seconds"]
    return {"train_loss": loss_sum / max(1, images), "images": images, "seconds": seconds,
            "steps": fl.local_epochs * steps}


# -- the server's monitor ---------------------------------------------------------------------
def probe_rows(store, cfg) -> dict[str, np.ndarray]:
    """kNN bank (training split, all sources; at most ``ssl.knn-bank``, a fixed subset), val, test:
    the rows ``dfflab ssl pretrain`` probes with, so the two are read on one scale."""
    train = store.select("train")
    if 0 < cfg.ssl.knn_bank < len(train):
        train = np.sort(np.random.default_rng(cfg.train.seed).choice(train, cfg.ssl.knn_bank, replace=False))
    return {"train": train, "val": store.select("val"), "test": store.select("test")}


def probe(backbone: nn.Module, store, rows: dict, cfg, device: torch.device, splits=("val",),
          linear: bool = False) -> dict[str, float]:
    """kNN (and with ``linear`` the linear probe) real/fake and source scores of ``backbone`` on
    ``splits``, keys as ``dfflab ssl pretrain`` names them (``_<split>`` suffixed unless only val)."""
    t0, s = time.time(), cfg.ssl
    feats = {k: extract_features(backbone, store, rows[k], device, batch_size=max(256, s.batch_size),
                                 amp=cfg.train.amp) for k in ("train", *splits)}
    n_src = len(store.source_names)
    out: dict[str, float] = {}
    suffix = len(splits) > 1
    for split in splits:
        scores = knn_scores(feats["train"], feats[split], n_src, s.knn_k, s.knn_t, device)
        out.update({f"{k}_{split}" if suffix else k: v for k, v in scores.items()})
    if linear:
        lin = linear_scores(feats["train"], {k: feats[k] for k in splits}, n_src, s.probe_l2)
        out.update(lin if suffix else {k.removesuffix("_val"): v for k, v in lin.items()})
    out["monitor_seconds"] = time.time() - t0
    return out
