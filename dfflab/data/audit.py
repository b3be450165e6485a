"""Shortcut audit: how far metadata alone gets, and proof the detector can't see it.

DFF's fakes are 512x512 high-quality JPEGs while its reals keep their native sizes and
web JPEG qualities, so file metadata nearly separates the classes. Two checks:

1. A metadata-only classifier (a small MLP on width, height, aspect ratio, file size
   and estimated JPEG quality), trained on the detector's training split and scored on
   its test split. Its AUROC is what a detector could reach by a shortcut; it is
   reported beside the detector's, with a warning when it is high.
2. A pixel check: a sample of files per source is decoded again with
   :func:`~dfflab.data.reader.decode` + :func:`~dfflab.data.reader.crop_resize` and
   compared bit for bit with the store the detector reads: every source went through
   the same centre-crop and resize, so native size never reaches the model.

Run it with ``dfflab centralized audit``; ``dfflab centralized train`` runs it too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dfflab.metrics import binary_metrics

FEATURES = ("width", "height", "aspect_ratio", "file_size", "jpeg_quality")
WARN_AUROC = 0.75  # above this, metadata alone is a usable detector: a shortcut exists


def metadata_features(store, rows: np.ndarray) -> np.ndarray:
    """(N, 5) float features of ``rows``: width, height, aspect, log file size, JPEG quality."""
    out = np.empty((len(rows), len(FEATURES)), dtype=np.float32)
    for i, r in enumerate(rows):
        meta = store.rows[int(r)]
        w, h = float(meta["width"]), float(meta["height"])
        out[i] = (
            w,
            h,
            w / h,
            np.log(float(meta["file_size"]) + 1),
            float(meta["jpeg_quality"]),
        )
    return out


def fit_metadata_classifier(
    x: np.ndarray, y: np.ndarray, seed: int = 0, steps: int = 400, hidden: int = 32
) -> nn.Module:
    """Full-batch Adam on a 1-hidden-layer MLP over standardised features, classes balanced.

    An MLP rather than a logistic regression because shortcuts are often not monotone
    (fakes have *one* size; reals lie on both sides of it).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small only lose time to thread hand-offs
    try:
        return _fit(x, y, seed, steps, hidden)
    finally:
        torch.set_num_threads(threads)


def _fit(x: np.ndarray, y: np.ndarray, seed: int, steps: int, hidden: int) -> nn.Module:
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).float()
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
    net = nn.Sequential(
        nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Flatten(0)
    )
    pos_weight = torch.tensor((yt == 0).sum().item() / max(1.0, (yt == 1).sum().item()))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(net.parameters(), lr=0.02, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(net((xt - mean) / std), yt).backward()
        opt.step()
    net.eval()
    return nn.Sequential(_Standardise(mean, std), net)


class _Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def single_feature_auroc(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUROC of each raw feature used alone, folded to >= 0.5 (direction doesn't matter)."""
    out = {}
    for j, name in enumerate(FEATURES):
        v = torch.from_numpy(x[:, j]).double()
        # torchmetrics reads scores outside [0, 1] as logits and squashes them (128 px
        # and 224 px both become 1.0); a min-max map keeps the order, so the AUROC.
        v = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)
        auc = binary_metrics(v, torch.from_numpy(y))["auroc"]
        out[name] = max(auc, 1 - auc) if auc == auc else auc
    return out


def metadata_audit(
    store, train_rows: np.ndarray, test_rows: np.ndarray, seed: int = 0
) -> dict:
    """Train the metadata classifier on ``train_rows``, score it on ``test_rows``."""
    xtr, ytr = metadata_features(store, train_rows), store.labels[train_rows]
    xte, yte = metadata_features(store, test_rows), store.labels[test_rows]
    net = fit_metadata_classifier(xtr, ytr, seed)
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(xte)))
    y, src = torch.from_numpy(yte), torch.from_numpy(store.source_ids[test_rows])
    from dfflab.metrics import per_source_metrics

    overall = binary_metrics(p, y)
    per = per_source_metrics(p, y, src, store.source_names)
    return {
        "features": list(FEATURES),
        "model": "MLP(5-32-1) on standardised features",
        "auroc": overall["auroc"],
        "balanced_accuracy": overall["balanced_accuracy"],
        "auroc_per_source": {s: m["auroc"] for s, m in per.items()},
        "single_feature_auroc": single_feature_auroc(xte, yte),
        "warning": overall["auroc"] >= WARN_AUROC,
    }


def pixel_check(store, per_source: int = 4, seed: int = 0) -> dict:
    """Re-decode a few files per source exactly as ``prepare`` did; compare with the store."""
    from pathlib import Path

    from dfflab.data.reader import (
        BadImage,
        EntryReader,
        crop_resize,
        decode,
        list_entries,
    )

    root = Path(store.meta.get("root", ""))
    shape = tuple(store.images.shape[1:])
    base = {"image_shape": list(shape), "same_shape_for_all_sources": True}
    if not root.is_dir():
        return {
            **base,
            "checked": 0,
            "identical": 0,
            "skipped": f"dataset root {root} not found",
        }
    rng = np.random.default_rng(seed)
    wanted: dict[tuple[str, str], int] = {}
    for s in store.source_names:
        rows = np.flatnonzero(store.sources == s)
        for r in rng.choice(rows, size=min(per_source, len(rows)), replace=False):
            wanted[(s, str(store.relpaths[r]))] = int(r)
    entries = {
        (e.source, e.relpath): e
        for e in list_entries(root, tuple(store.source_names))
        if (e.source, e.relpath) in wanted
    }
    reader, mismatches = EntryReader(), []
    try:
        for key, row in wanted.items():
            e = entries.get(key)
            try:
                pixels = (
                    crop_resize(
                        decode(reader.read(e), e.location).rgb, store.image_size
                    )
                    if e
                    else None
                )
            except (BadImage, OSError) as err:
                pixels = None
                key = (*key, str(err))
            if pixels is None or not np.array_equal(pixels, store.images[row]):
                mismatches.append("/".join(key))
    finally:
        reader.close()
    return {
        **base,
        "checked": len(wanted),
        "identical": len(wanted) - len(mismatches),
        "mismatches": mismatches[:10],
    }


def run_audit(
    store, train_rows: np.ndarray, test_rows: np.ndarray, seed: int = 0
) -> dict:
    """Both checks; ``message`` is a one-paragraph reading of the result."""
    meta = metadata_audit(store, train_rows, test_rows, seed)
    pix = pixel_check(store, seed=seed)
    top = max(
        meta["single_feature_auroc"].items(),
        key=lambda kv: kv[1] if kv[1] == kv[1] else 0,
    )
    msg = f"metadata-only classifier: test AUROC {meta['auroc']:.3f} (best single feature: {top[0]}, {top[1]:.3f})."
    if meta["warning"]:
        msg += (
            f" WARNING: metadata alone separates real from fake (AUROC >= {WARN_AUROC}). The detector "
            "never sees size or file bytes (all images are identically centre-cropped and resized), "
            "but JPEG quality also leaves traces in pixels: compare its AUROC under JPEG recompression "
            "(`dfflab centralized robustness`)."
        )
    if pix.get("checked"):
        ok = pix["identical"] == pix["checked"]
        msg += (
            f" Pixel check: {pix['identical']}/{pix['checked']} re-decoded files identical to the store "
            f"({'same crop+resize for every source' if ok else 'MISMATCH: the store is stale or was built differently'})."
        )
    else:
        msg += f" Pixel check skipped: {pix.get('skipped')}."
    return {"metadata": meta, "pixels": pix, "message": msg}
