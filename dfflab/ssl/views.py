"""SSL views: batched augmentations on the device, one random draw per image.

Every function takes a float batch (B, 3, H, W) in [0, 1] already on the training
device and returns one of the same shape; per-image parameters are drawn from ``gen``
(a CPU generator, so runs reproduce) and applied to the whole batch at once. Nothing
here loops over images in Python, so views cost a few kernels per batch on a GPU.

Recipes (``ssl.views``):

``shift``     flip + integer translation (reflect padding). Pure pixel moves: upsampling
              grids, blending seams and noise statistics survive intact. The default —
              a deepfake detector needs exactly those artifacts, and the views experiment
              (``dfflab ssl compare-views``) scores it against the others by kNN accuracy.
``jitter``    ``shift`` + colour jitter (0.4, 0.4, 0.4, 0.1; p 0.8) and greyscale (p 0.2):
              takes away the colour-histogram shortcut of instance discrimination
              (SimCLR sec. 3) with a per-image colour map that moves no pixel, so spatial
              artifacts (grids, seams) survive; no blur, no resampling.
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

import torch
import torch.nn.functional as F

from dfflab.config import ConfigError
from dfflab.train.augment import hflip, translate

View = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _uniform(n: int, lo: float, hi: float, gen, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(device)


def _coin(n: int, p: float, gen, device) -> torch.Tensor:
    """(n, 1, 1, 1) bool mask, True with probability ``p``."""
    return (torch.rand(n, generator=gen) < p).to(device)[:, None, None, None]


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, 3, H, W) as (B, 1, H, W)."""
    w = torch.tensor(_GREY, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x * w).sum(1, keepdim=True)


def resized_crop(x: torch.Tensor, scale: tuple[float, float], gen=None,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop for a batch: one affine grid per image, bilinear resampling."""
    b = x.shape[0]
    area = _uniform(b, *scale, gen, "cpu")
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen, "cpu")
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)  # crop side as a share of the image side
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)  # centre, normalised coords
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, strength: tuple[float, float, float, float], p: float,
                  gen=None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter per image (fixed order), with probability ``p``.

    Hue is a rotation of the chroma plane in YIQ space, the batched equivalent of
    torchvision's HSV hue shift up to small differences on saturated pixels.
    """
    b, dev = x.shape[0], x.device
    br, co, sa, hu = strength
    y = x * _uniform(b, 1 - br, 1 + br, gen, dev)[:, None, None, None]
    y = y.clamp(0, 1)
    m = grey(y).mean((2, 3), keepdim=True)
    y = ((y - m) * _uniform(b, 1 - co, 1 + co, gen, dev)[:, None, None, None] + m).clamp(0, 1)
    g = grey(y)
    y = ((y - g) * _uniform(b, 1 - sa, 1 + sa, gen, dev)[:, None, None, None] + g).clamp(0, 1)
    y = _hue_rotate(y, _uniform(b, -hu, hu, gen, dev) * 2 * math.pi)
    return torch.where(_coin(b, p, gen, dev), y, x)


_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    to_yiq = _RGB2YIQ.to(x.device, x.dtype)
    c, s = angle.cos(), angle.sin()
    rot = torch.zeros(len(angle), 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (B, 3, 3) per-image colour transform
    return torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)


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


def _crop(x, gen=None):
    return _shift(resized_crop(x, (0.6, 1.0), gen), gen)


def _imagenet(x, gen=None):
    x = hflip(resized_crop(x, (0.08, 1.0), gen), gen)
    x = colour_jitter(x, (0.8, 0.8, 0.8, 0.2), 0.8, gen)
    return gaussian_blur(random_grey(x, 0.2, gen), (0.1, 2.0), 0.5, gen)


VIEWS: dict[str, View] = {"shift": _shift, "jitter": _jitter, "crop": _crop, "imagenet": _imagenet}


def make_view(name: str) -> View:
    """The view function for an ``ssl.views`` name."""
    if name not in VIEWS:
        raise ConfigError(f"unknown view recipe ssl.views='{name}' (known: {', '.join(VIEWS)})")
    return VIEWS[name]
