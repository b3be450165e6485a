"""One discriminator step, one generator step, the losses and the generator's EMA.

Kept apart from the epoch loop so each piece can be tested on its own: a D step must
change D's parameters only, a G step G's only (D is put in eval mode during the G step,
so not even its spectral-norm power iteration moves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("hinge", "bce")


def d_loss_fn(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on realness logits of real and fake images."""
    if kind == "hinge":  # Lim & Ye 2017; SNGAN, BigGAN
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "bce":  # Goodfellow et al. 2014, as log-sigmoid for stability
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    raise ValueError(f"gan.loss='{kind}' (known: {', '.join(LOSSES)})")


def g_loss_fn(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss on realness logits of its images (non-saturating for bce)."""
    if kind == "hinge":
        return -fake.mean()
    if kind == "bce":
        return F.softplus(-fake).mean()
    raise ValueError(f"gan.loss='{kind}' (known: {', '.join(LOSSES)})")


@dataclass
class GANParts:
    """The networks and optimizers a step works on."""

    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: str = "hinge"
    augment: Callable | None = None  # DiffAugment, applied to every D input
    g_ema: nn.Module | None = None


def noise(n: int, z_dim: int, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    """(n, z_dim) standard normal noise drawn on the CPU from ``gen`` (reproducible on any device)."""
    return torch.randn(n, z_dim, generator=gen).to(device)


def _aug(parts: GANParts, x: torch.Tensor, gen) -> torch.Tensor:
    return parts.augment(x, gen) if parts.augment is not None else x


def d_step(parts: GANParts, real: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> dict:
    """One D update on a real batch (B, 3, S, S) in [-1, 1] and fakes of the same classes."""
    g, d = parts.g, parts.d
    d.train()
    with torch.no_grad():
        fake = g(noise(len(y), g.z_dim, real.device, gen), y)
    d_real = d(_aug(parts, real, gen), y)
    d_fake = d(_aug(parts, fake, gen), y)
    loss = d_loss_fn(parts.loss, d_real, d_fake)
    parts.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    parts.opt_d.step()
    return {"d_loss": loss.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}


def g_step(parts: GANParts, batch_size: int, device: torch.device, gen: torch.Generator | None = None) -> dict:
    """One G update on ``batch_size`` fakes of uniformly drawn classes."""
    g, d = parts.g, parts.d
    y = torch.randint(0, g.num_classes, (batch_size,), generator=gen).to(device)
    d.eval()  # D is fixed here: no spectral-norm power iteration, no parameter change
    d.requires_grad_(False)
    try:
        fake = g(noise(batch_size, g.z_dim, device, gen), y)
        loss = g_loss_fn(parts.loss, d(_aug(parts, fake, gen), y))
        parts.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        parts.opt_g.step()
    finally:
        d.requires_grad_(True)
        d.train()
    return {"g_loss": loss.item()}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> float:
    """``ema = d * ema + (1 - d) * model`` for parameters; buffers (BN stats) are copied.

    The decay is warmed up as ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's
    ExponentialMovingAverage with num_updates) so a short quick-preset run is not
    dominated by the random initial weights. Returns the decay used.
    """
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1 - d)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)
    return d
