"""FID/KID of a generator per class and overall against held-out reals of each class.

The reference of class c is ``gan.ref-split`` (test by default; never the train split)
images of source c, downscaled to the GAN's resolution exactly as its training images
are, then quantized to uint8 like generated images. Reference features are computed
once per (store, resolution, split, extractor) and cached in
``<results>/cache/gan-reference/``: Inception at 299 px is the slow part on a CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dfflab.generative.metrics import per_class_scores
from dfflab.generative.sample import generate

REF_SPLITS = {"test": ("test",), "val": ("val",), "heldout": ("val", "test")}


def downscale(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float images (B, 3, S, S) in [0, 1] -> (B, 3, size, size), box-filtered.

    An integer factor uses average pooling (an exact box filter, no aliasing); any
    other ratio uses antialiased bilinear interpolation.
    """
    s = x.shape[-1]
    if s == size:
        return x
    if size > s:
        raise ValueError(f"gan.image-size={size} is larger than the store's {s} px images "
                         f"(raise data.image-size to at least {size})")
    if s % size == 0:
        return F.avg_pool2d(x, s // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def reference_rows(store, split: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of each class in the held-out ``split``; at most ``n`` per class (0 = all)."""
    if split not in REF_SPLITS:
        raise ValueError(f"gan.ref-split='{split}' (known: {', '.join(REF_SPLITS)})")
    held_out = np.isin(store.split, REF_SPLITS[split])
    out = {}
    for c, name in enumerate(store.source_names):
        rows = np.flatnonzero(held_out & (store.source_ids == c))
        if n > 0 and len(rows) > n:
            rows = np.sort(np.random.default_rng(seed + c).choice(rows, n, replace=False))
        if len(rows) < 2:
            raise ValueError(f"gan.ref-split={split}: class {name} has {len(rows)} held-out images; FID needs 2+")
        out[name] = rows
    return out


def reference_images(store, rows: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) reals, downscaled like the GAN's training images."""
    x, _, _ = store.batch(rows)
    x = downscale(x.float() / 255, size)
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


def _tag(extractor: nn.Module) -> str:
    """Identity of an extractor's weights, for the cache key."""
    p = Path(getattr(extractor, "path", type(extractor).__name__))
    stat = f"{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.is_file() else ""
    return hashlib.sha1(f"{p.resolve()}:{stat}".encode()).hexdigest()[:10]


def reference_features(store, gan_cfg, extractors: dict[str, nn.Module], cache_dir: Path | str | None,
                       progress: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """``{extractor: {class: features (N, D)}}`` of the reference reals, cached on disk."""
    from dfflab.runs import load_checkpoint, save_checkpoint

    rows = reference_rows(store, gan_cfg.ref_split, gan_cfg.ref_n)
    out = {}
    for name, ex in extractors.items():
        key = f"{store.fingerprint}-{gan_cfg.image_size}px-{gan_cfg.ref_split}-n{gan_cfg.ref_n}-{name}-{_tag(ex)}.pt"
        path = Path(cache_dir) / key if cache_dir else None
        if path is not None and path.is_file():
            out[name] = load_checkpoint(path)["features"]
            continue
        feats = {}
        for c, r in tqdm(rows.items(), desc=f"reference features ({name})", disable=not progress, leave=False):
            feats[c] = ex(reference_images(store, r, gan_cfg.image_size)).cpu()
        if path is not None:
            save_checkpoint(path, {"features": feats})
        out[name] = feats
    return out


def generated_images(g, source_names: list[str], n: int, seed: int = 12345) -> dict[str, torch.Tensor]:
    """``{class: uint8 (n, 3, S, S)}``; the fixed ``seed`` gives every run the same noise."""
    return {c: generate(g, torch.full((n,), k), seed=seed + k) for k, c in enumerate(source_names)}


def score_generator(g, source_names: list[str], extractors: dict[str, nn.Module],
                    reference: dict[str, dict[str, torch.Tensor]], n: int, kid_subset_size: int = 100,
                    progress: bool = True, seed: int = 12345) -> dict[str, dict[str, dict[str, float]]]:
    """``{extractor: {class | overall: {fid, kid, kid_std, n_real, n_fake}}}`` with ``n`` fakes per class."""
    images = generated_images(g, source_names, n, seed)
    scores = {}
    for name, ex in extractors.items():
        fake = {c: ex(x).cpu() for c, x in tqdm(images.items(), desc=f"generated features ({name})",
                                                disable=not progress, leave=False)}
        scores[name] = per_class_scores(reference[name], fake, kid_subset_size)
    return scores
