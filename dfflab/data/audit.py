"""Shortcut audit: how far metadata alone gets, and what of it can reach the detector.

DFF's fakes are 512x512 high-quality JPEGs while its reals keep their native sizes and
web JPEG qualities (and some are greyscale), so file metadata nearly separates the
classes. Three checks:

1. A metadata-only classifier (a small MLP on width, height, aspect ratio, file size,
   estimated JPEG quality and a greyscale file mode), trained on the detector's
   training split and scored on its test split. Its AUROC is what a detector could
   reach by a shortcut; it is reported beside the detector's, with a warning when it
   is high.
2. A pixel check: a sample of files per source is loaded again exactly as ``prepare``
   did (:func:`~dfflab.data.reader.load_pixels`) and compared bit for bit with the
   store the detector reads: every source went through the same centre-crop and
   resize, so native size and aspect never reach the model. What resizing does *not*
   remove: compression traces in the pixels (unless ``data.jpeg-quality`` re-encodes
   every image at one quality, and even then an earlier, lower quality can leave
   traces) and colour (a greyscale photo stays grey).
3. Greyscale in pixels: the share of test images per class whose three channels are
   equal, which the detector can see.

Run it with ``dfflab centralized audit``; ``dfflab centralized train`` runs it too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dfflab.metrics import binary_metrics

FEATURES = ("width", "height", "aspect_ratio", "file_size", "jpeg_quality", "greyscale")
WARN_AUROC = 0.75  # above this, metadata alone is a usable detector: a shortcut exists
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # single-channel files
GREY_TOL = 2  # max channel difference (of 255) for a stored image to count as greyscale
WARN_GREY = 0.02  # warn when the greyscale shares of reals and fakes differ by more


def metadata_features(store, rows: np.ndarray) -> np.ndarray:
    """(N, 6) float features of ``rows``: width, height, aspect, log file size, JPEG
    quality and 1 for a single-channel (greyscale) file."""
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
            float(meta.get("mode", "RGB") in GREY_MODES),
        )
    return out


def greyscale_pixels(store, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N,) bool: the stored image's three channels agree within GREY_TOL everywhere."""
    out = np.empty(len(rows), dtype=bool)
    for i in range(0, len(rows), chunk):
        x = np.asarray(store.images[np.sort(rows[i:i + chunk])], dtype=np.int16)
        spread = x.max(axis=-1) - x.min(axis=-1)  # (B, S, S)
        grey = spread.reshape(len(x), -1).max(axis=1) <= GREY_TOL
        out[i:i + len(x)] = grey[np.argsort(np.argsort(rows[i:i + chunk]))]
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
        "model": f"MLP({len(FEATURES)}-32-1) on standardised features",
        "auroc": overall["auroc"],
        "balanced_accuracy": overall["balanced_accuracy"],
        "auroc_per_source": {s: m["auroc"] for s, m in per.items()},
        "single_feature_auroc": single_feature_auroc(xte, yte),
        "warning": overall["auroc"] >= WARN_AUROC,
    }


def pixel_check(store, per_source: int = 4, seed: int = 0) -> dict:
    """Re-decode a few files per source exactly as ``prepare`` did; compare with the store."""
    from pathlib import Path

    from dfflab.data.reader import BadImage, EntryReader, list_entries, load_pixels

    root = Path(store.meta.get("root", ""))
    quality = int(store.meta.get("jpeg_quality", 0) or 0)
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
                pixels = load_pixels(reader.read(e), e.location, store.image_size, quality)[0] if e else None
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
    store, train_rows: np.ndarray, test_rows: np.ndarray, seed: int = 0, detector_auroc: float | None = None
) -> dict:
    """All three checks; ``message`` is a one-paragraph reading of the result.

    Args:
        detector_auroc: the detector's test AUROC on the same rows, reported beside the
            metadata-only one with the JPEG control it was trained under.
    """
    meta = metadata_audit(store, train_rows, test_rows, seed)
    pix = pixel_check(store, seed=seed)
    grey = greyscale_pixels(store, test_rows)
    labels = store.labels[test_rows]
    grey_share = {c: float(grey[labels == k].mean()) if (labels == k).any() else float("nan")
                  for k, c in ((0, "real"), (1, "fake"))}
    quality = int(store.meta.get("jpeg_quality", 0) or 0)
    result = {"metadata": meta, "pixels": pix, "greyscale_pixels": grey_share, "jpeg_quality": quality}
    if detector_auroc is not None:
        result["detector_auroc"] = detector_auroc
    result["message"] = _message(meta, pix, grey_share, quality, detector_auroc)
    return result


def _message(meta: dict, pix: dict, grey: dict, quality: int, detector_auroc: float | None) -> str:
    top = max(meta["single_feature_auroc"].items(), key=lambda kv: kv[1] if kv[1] == kv[1] else 0)
    msg = f"metadata-only classifier: test AUROC {meta['auroc']:.3f} (best single feature: {top[0]}, {top[1]:.3f})."
    if detector_auroc is not None:
        msg += f" Detector: test AUROC {detector_auroc:.3f}."
    if meta["warning"]:
        msg += f" WARNING: metadata alone separates real from fake (AUROC >= {WARN_AUROC})."
    if pix.get("checked"):
        ok = pix["identical"] == pix["checked"]
        verdict = ("same crop+resize for every source: native size and aspect never reach the detector" if ok
                   else "MISMATCH: the store is stale or was built differently")
        msg += f" Pixel check: {pix['identical']}/{pix['checked']} re-loaded files identical to the store ({verdict})."
    else:
        msg += f" Pixel check skipped: {pix.get('skipped')}."
    if quality:
        msg += (
            f" JPEG control on: every image was re-encoded at quality {quality} before crop and resize, so the "
            "last compression is the same for all; traces of an earlier, lower quality can survive it."
        )
    else:
        msg += (
            " JPEG control off (data.jpeg-quality = 0): compression traces stay in the pixels, so JPEG quality "
            "can still reach the detector; set data.jpeg-quality (e.g. 90) to re-encode every image at one quality."
        )
    if abs(grey["real"] - grey["fake"]) > WARN_GREY:
        msg += (
            f" WARNING: greyscale images in pixels: reals {grey['real']:.1%}, fakes {grey['fake']:.1%}; "
            "colour alone tells these apart."
        )
    return msg
