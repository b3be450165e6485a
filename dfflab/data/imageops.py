"""Small numpy image operations for SynthDFF's renderer and fake processes.

Float (H, W, C) images: bilinear sampling at float coordinates, a separable Gaussian
blur, a per-channel resize (PIL), and colour matching of one image to another.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def sample_bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Samples `img` (h, w, c) at float pixel coordinates, clamping at the border."""
    h, w = img.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0 = np.minimum(x.astype(np.int64), w - 2)
    y0 = np.minimum(y.astype(np.int64), h - 2)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] + fx * (img[y0, x0 + 1] - img[y0, x0])
    bot = img[y0 + 1, x0] + fx * (img[y0 + 1, x0 + 1] - img[y0 + 1, x0])
    return (top + fy * (bot - top)).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) image, sigma in pixels."""
    if sigma < 0.05:
        return img
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    for axis in (0, 1):
        n = img.shape[axis]
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        p = np.pad(img, pad, mode="reflect" if n > r else "edge")
        img = sum(
            w * np.take(p, np.arange(i, i + n), axis=axis) for i, w in enumerate(k)
        )
    return img.astype(np.float32)


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of a float (H, W, C) image, channel by channel."""
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[..., c], np.float32)).resize(
                (width, height), Image.BICUBIC
            )
        )
        for c in range(img.shape[-1])
    ]
    return np.stack(chans, axis=-1)


def match_colour(src: np.ndarray, ref: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Mean/std colour transfer of `ref`'s pixels in `where` onto `src`.

    Medians stand in for the per-channel means and one std ratio serves all
    channels: eyes, brows and lips share the region with the skin, and plain
    per-channel statistics then tint the face instead of matching its skin.
    """
    if where.sum() < 4:
        return src
    s, r = src[where], ref[where]  # (N, 3)
    ratio = np.mean(r.std(axis=0) / (s.std(axis=0) + 1e-3))
    scale = np.clip(ratio, 0.6, 1.6)  # a swap corrects colour, it invents no contrast
    out = (src - np.median(s, axis=0)) * scale + np.median(r, axis=0)
    return out.astype(np.float32)
