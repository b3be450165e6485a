"""One discriminator step, one generator step, the losses, the EMA and its standing statistics.

Kept apart from the epoch loop so each piece can be tested on its own: a D step must
change D's parameters only, a G step G's only (D is put in eval mode during the G step,
so not even its spectral-norm power iteration moves).

What makes a step cheap on a CPU (figures in ``benchmarks/gan_step.py``):

* real and fake images go through D as one batch (one spectral-norm power iteration,
  half the operator calls);
* the fakes of a D step are made once, with gradients, and the G step that follows
  reuses them (as PyTorch's DCGAN example does): one G forward per step instead of two;
* convolutions run under bf16 autocast where the hardware has bf16 matrix units
  (``gan.precision=auto``: CUDA, or x86 CPUs with AMX), losses in float32;
* statistics stay tensors on the device; the loop reads them once per epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("hinge", "bce")
PRECISIONS = ("auto", "fp32", "bf16")


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


def bf16_matrix_units(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices natively (CUDA with bf16; an x86 CPU with AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        init_amx = getattr(torch._C._cpu, "_init_amx", None)  # private, hence the guard
        return bool(init_amx and init_amx())
    return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``gan.precision`` (None = float32 throughout)."""
    if name not in PRECISIONS:
        raise ValueError(f"gan.precision='{name}' (known: {', '.join(PRECISIONS)})")
    if name == "auto":
        return torch.bfloat16 if bf16_matrix_units(device) else None
    return torch.bfloat16 if name == "bf16" else None


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
    amp_dtype: torch.dtype | None = None  # bf16 autocast of G and D, or None

    def autocast(self, device: torch.device):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)


def noise(n: int, z_dim: int, device: torch.device, gen: torch.Generator | None) -> torch.Tensor:
    """(n, z_dim) standard normal noise, drawn where ``gen`` lives and moved to ``device``."""
    where = gen.device if gen is not None else device
    return torch.randn(n, z_dim, generator=gen, device=where).to(device)


def _aug(parts: GANParts, x: torch.Tensor, gen) -> torch.Tensor:
    return parts.augment(x, gen) if parts.augment is not None else x


def make_fakes(parts: GANParts, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """G's images (B, 3, S, S) of classes ``y``, with gradients (used by the D and then the G step)."""
    parts.g.train()
    with parts.autocast(y.device):
        return parts.g(noise(len(y), parts.g.z_dim, y.device, gen), y)


def d_step(parts: GANParts, real: torch.Tensor, y: torch.Tensor, fake: torch.Tensor,
           gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One D update on a real batch (B, 3, S, S) in [-1, 1] and fakes of the same classes ``y``.

    Returns detached 0-d tensors: the loss, D's mean outputs and its accuracy (the
    share of reals with logit > 0 and fakes with logit < 0), on D's augmented inputs.
    """
    d, b = parts.d, len(y)
    d.train()
    with parts.autocast(real.device):
        out = d(_aug(parts, torch.cat([real, fake.detach().to(real.dtype)]), gen), torch.cat([y, y])).float()
    d_real, d_fake = out[:b], out[b:]
    loss = d_loss_fn(parts.loss, d_real, d_fake)
    parts.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    parts.opt_d.step()
    acc = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2
    return {"d_loss": loss.detach(), "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(),
            "d_acc": acc}


def g_step(parts: GANParts, fake: torch.Tensor, y: torch.Tensor,
           gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One G update through D on ``fake`` (made by :func:`make_fakes`, graph kept) of classes ``y``."""
    d = parts.d
    d.eval()  # D is fixed here: no spectral-norm power iteration, no parameter change
    d.requires_grad_(False)
    try:
        with parts.autocast(fake.device):
            loss = g_loss_fn(parts.loss, d(_aug(parts, fake, gen), y).float())
        parts.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        parts.opt_g.step()
    finally:
        d.requires_grad_(True)
        d.train()
    return {"g_loss": loss.detach()}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> float:
    """``ema = d * ema + (1 - d) * model`` for parameters (one fused call); returns the decay used.

    The decay is warmed up as ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's
    ExponentialMovingAverage with num_updates) so a short quick-preset run is not
    dominated by the random initial weights. Buffers are not copied: the live
    generator's BatchNorm statistics belong to its own weights, not to the average, so
    the EMA generator gets its own with :func:`standing_stats` before it is used.
    """
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - d)
    return d


@torch.no_grad()
def standing_stats(g: nn.Module, batches: int = 16, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Recompute ``g``'s BatchNorm running statistics from its own weights ("standing statistics").

    BigGAN (Brock et al. 2019, appendix C.1) samples with statistics averaged over many
    forward passes of the generator being sampled, because the averaged (EMA) weights
    never produced the running statistics the live generator collected. Every BatchNorm
    is reset and switched to a cumulative average (``momentum=None``) over ``batches``
    train-mode passes of ``batch_size`` noise vectors with uniformly drawn classes (fixed
    ``seed``: the same statistics every time); ``g`` is returned in eval mode. A
    generator without BatchNorm is returned unchanged (in eval mode).
    """
    bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return g.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    device = next(g.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    g.train()
    for _ in range(batches):
        z = torch.randn(batch_size, g.z_dim, generator=gen).to(device)
        y = torch.randint(0, g.num_classes, (batch_size,), generator=gen).to(device)
        g(z, y)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    return g.eval()
