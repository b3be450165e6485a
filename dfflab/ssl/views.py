"""SSL views: batched augmentations on the device, one random draw per image.

Every function takes a float batch (B, 3, H, W) in [0, 1] already on the training
device; per-image parameters are drawn from ``gen`` and applied to the whole batch at
once. Nothing here loops over images in Python, so views cost a few kernels per batch
on a GPU. Give ``gen`` on the training device (``pretrain`` does): then no tensor is
copied from the host in the loop, and no copy stalls the GPU stream.

Recipes (``ssl.views``):

``shift``     flip + integer translation (reflect padding). Pure pixel moves: upsampling
              grids, blending seams and noise statistics survive intact. The default —
              a deepfake detector needs exactly those artifacts. The views experiment
              (``dfflab ssl compare-views``; results/ssl-views-experiment.md) scores it
              against the others by kNN accuracy: on SynthDFF quick no recipe beat it,
              and none gave frozen features that separate real from fake.
``jitter``    ``shift`` + colour jitter (0.4, 0.4, 0.4, 0.1; p 0.8) and greyscale (p 0.2):
              takes away the colour-histogram shortcut of instance discrimination
              (SimCLR sec. 3) with a per-image colour map that moves no pixel, so spatial
              artifacts (grids, seams) survive; no blur, no resampling.
``patch``     a half-side window at a random integer offset (different for the two
              views, so they share little content) + flip + the colour jitter above:
              what two patches of one image still share is how the image was made
              (upsampling grid, noise, blending), the self-consistency idea of Huh et
              al. 2018. Views are S/2 px; the backbone's global pool takes any size.
``crop``      ``shift`` + a mild resized crop (area 0.6-1, bilinear): some scale
              invariance at the cost of one resampling.
``imagenet``  lightly's ``SimCLRTransform`` recipe as batched tensors: heavy resized crop
              (area 0.08-1), colour jitter (0.8, 0.8, 0.8, 0.2; p 0.8), greyscale (p 0.2),
              Gaussian blur (sigma 0.1-2, p 0.5), flip. Built to make ImageNet features
              ignore colour and texture — which is where fakes differ from reals.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dfflab.config import ConfigError

View = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

# ITU-R 601 luma (torchvision's rgb_to_grayscale) and YIQ, as Python floats so that no
# constant tensor has to be copied to the device
_Y = (0.299, 0.587, 0.114)
_I = (0.596, -0.274, -0.322)
_Q = (0.211, -0.523, 0.312)
_YIQ2RGB = tuple(tuple(float(v) for v in row) for row in np.linalg.inv(np.array([_Y, _I, _Q])))


def _rand(n: int, gen, device) -> torch.Tensor:
    """``n`` uniforms drawn where ``gen`` lives (reproducible), on ``device``."""
    where = gen.device if gen is not None else device
    return torch.rand(n, generator=gen, device=where).to(device)


def _uniform(n: int, lo: float, hi: float, gen, device) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, gen, device)


def _coin(n: int, p: float, gen, device) -> torch.Tensor:
    """(n, 1, 1, 1) bool mask, True with probability ``p``."""
    return (_rand(n, gen, device) < p)[:, None, None, None]


def _mix(x: torch.Tensor, w: tuple[float, float, float]) -> torch.Tensor:
    """(B, 1, H, W) weighted sum of the three channels of ``x``."""
    return w[0] * x[:, 0:1] + w[1] * x[:, 1:2] + w[2] * x[:, 2:3]


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, 3, H, W) as (B, 1, H, W)."""
    return _mix(x, _Y)


def hflip(x: torch.Tensor, gen=None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    return torch.where(_coin(x.shape[0], 0.5, gen, x.device), x.flip(3), x)


def random_crop(x: torch.Tensor, size: int, gen=None) -> torch.Tensor:
    """A ``size`` x ``size`` window of each image at a random integer offset (no resampling)."""
    b, c, h, w = x.shape
    dy = (_rand(b, gen, x.device) * (h - size + 1)).long()
    dx = (_rand(b, gen, x.device) * (w - size + 1)).long()
    ar = torch.arange(size, device=x.device)
    rows, cols = dy[:, None] + ar, dx[:, None] + ar  # (B, size) each
    out = x.gather(2, rows[:, None, :, None].expand(b, c, size, w))
    return out.gather(3, cols[:, None, None, :].expand(b, c, size, size))


def translate(x: torch.Tensor, pad: int, gen=None) -> torch.Tensor:
    """Shift each image by an integer offset in [-pad, pad] (reflect padding), as the detector's
    ``dfflab.train.augment.translate`` does, with parameters drawn on ``gen``'s device."""
    padded = F.pad(x, (pad,) * 4, mode="reflect")  # (B, C, H+2p, W+2p)
    return random_crop(padded, x.shape[-1], gen)


def resized_crop(x: torch.Tensor, scale: tuple[float, float], gen=None,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop for a batch: one affine grid per image, bilinear resampling."""
    b, dev = x.shape[0], x.device
    area = _uniform(b, *scale, gen, dev)
    r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen, dev).exp()
    w = (area * r).sqrt().clamp(max=1.0)  # crop side as a share of the image side
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (_rand(b, gen, dev) * 2 - 1) * (1 - w)  # centre, normalised coordinates
    cy = (_rand(b, gen, dev) * 2 - 1) * (1 - h)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, strength: tuple[float, float, float, float], p: float,
                  gen=None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter per image (fixed order), with probability ``p``.

    Hue is a rotation of the chroma plane in YIQ space, the batched equivalent of
    torchvision's HSV hue shift up to small differences on saturated pixels.
    """
    b, dev = x.shape[0], x.device
    br, co, sa, hu = strength

    def factor(s):  # (B, 1, 1, 1) per-image factor in [1 - s, 1 + s]
        return _uniform(b, 1 - s, 1 + s, gen, dev)[:, None, None, None]

    y = (x * factor(br)).clamp(0, 1)
    m = grey(y).mean((2, 3), keepdim=True)
    y = ((y - m) * factor(co) + m).clamp(0, 1)
    g = grey(y)
    y = ((y - g) * factor(sa) + g).clamp(0, 1)
    y = _hue_rotate(y, _uniform(b, -hu, hu, gen, dev) * 2 * math.pi)
    return torch.where(_coin(b, p, gen, dev), y, x)


def _hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    c, s = angle.cos()[:, None, None, None], angle.sin()[:, None, None, None]
    yy, i, q = _mix(x, _Y), _mix(x, _I), _mix(x, _Q)
    i, q = c * i - s * q, s * i + c * q
    yiq = torch.cat([yy, i, q], 1)
    return torch.cat([_mix(yiq, row) for row in _YIQ2RGB], 1).clamp(0, 1)


def random_grey(x: torch.Tensor, p: float, gen=None) -> torch.Tensor:
    return torch.where(_coin(x.shape[0], p, gen, x.device), grey(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, sigma: tuple[float, float], p: float, gen=None) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per image, kernel ~10% of the side (SimCLR appendix A)."""
    b, c, h, w = x.shape
    k = max(3, int(0.1 * h) // 2 * 2 + 1)
    sig = _uniform(b, *sigma, gen, x.device)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    ker = torch.exp(-t[None] ** 2 / (2 * sig[:, None] ** 2))  # (B, k)
    ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, k)
    y = x.reshape(1, b * c, h, w)  # one group per image channel: one conv for the batch
    y = F.pad(y, (k // 2,) * 4, mode="reflect")
    y = F.conv2d(F.conv2d(y, ker[:, None, None, :], groups=b * c), ker[:, None, :, None], groups=b * c)
    return torch.where(_coin(b, p, gen, x.device), y.reshape(b, c, h, w), x)


def _shift(x, gen=None):
    return translate(hflip(x, gen), max(1, x.shape[-1] // 8), gen)


def _jitter(x, gen=None):
    return random_grey(colour_jitter(_shift(x, gen), (0.4, 0.4, 0.4, 0.1), 0.8, gen), 0.2, gen)


def _patch(x, gen=None):
    x = hflip(random_crop(x, x.shape[-1] // 2, gen), gen)
    return random_grey(colour_jitter(x, (0.4, 0.4, 0.4, 0.1), 0.8, gen), 0.2, gen)


def _crop(x, gen=None):
    return _shift(resized_crop(x, (0.6, 1.0), gen), gen)


def _imagenet(x, gen=None):
    x = hflip(resized_crop(x, (0.08, 1.0), gen), gen)
    x = colour_jitter(x, (0.8, 0.8, 0.8, 0.2), 0.8, gen)
    return gaussian_blur(random_grey(x, 0.2, gen), (0.1, 2.0), 0.5, gen)


VIEWS: dict[str, View] = {"shift": _shift, "jitter": _jitter, "patch": _patch, "crop": _crop,
                          "imagenet": _imagenet}


def make_view(name: str) -> View:
    """The view function for an ``ssl.views`` name."""
    if name not in VIEWS:
        raise ConfigError(f"unknown view recipe ssl.views='{name}' (known: {', '.join(VIEWS)})")
    return VIEWS[name]
