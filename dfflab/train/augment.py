"""Augmentations on batched tensors, run on the training device.

Deepfake evidence lives in fine pixel statistics (upsampling grids, missing sensor
noise, blending seams). Anything that resamples or smooths (resized crops, rotations,
blur) or shifts colour (jitter) can erase it, so the detector's augmentations are
pure pixel moves: horizontal flips and integer translations with reflect padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "flip", "flip-crop")


def hflip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of (B, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def translate(x: torch.Tensor, pad: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by a random integer offset in [-pad, pad] (reflect padding, no resampling)."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # (B, W)
    c = x.shape[1]
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, xp.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def make_augment(name: str, pad: int = 4):
    """The augmentation function for a ``train.augment`` name (``None`` for none)."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augment '{name}' (known: {', '.join(AUGMENTS)})")
    if name == "none":
        return None
    if name == "flip":
        return lambda x, gen=None: hflip(x, gen)
    return lambda x, gen=None: translate(hflip(x, gen), pad, gen)
