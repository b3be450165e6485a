"""``dfflab data leaks``: do val/test images have near-copies in train?

For every val and test image, its nearest training image in a cheap embedding (16 x 16
thumbnails by default; an SSL backbone's features when one is given). Two statistics,
overall and per source:

* **near-duplicate share**: the nearest training image is closer than ``threshold``;
* **label agreement**: the nearest training image has the same label (real/fake);
* **copies**: the nearest training image is the same picture (thumbnails within
  ``COPY_RMS`` of 255), counted apart: one copy across splits is a leak.

Both are set beside the same statistics *inside* train: a seeded sample of training
images, each against the training images outside its own group (its relative path
and everything linked to it, see ``splits.py``). That baseline is what "an unrelated
image" looks like; ``threshold`` is its 5th percentile of nearest distances, so its
near-duplicate share is about 5% by construction. A split is **leak-free** when the
cross-split figures sit at the baseline: neither the near-duplicate share is higher
nor the label agreement lower by more than ``MARGIN`` with a 97.5% interval (two
tests, Bonferroni) that excludes zero. Intervals count each group as one cluster: a
photo, its inpainting and its partner's insight fake look alike and are not three
independent observations; with few groups the t quantile widens them, and still, on
SynthDFF with 96 reals (about 20 val/test groups), 3 of 40 partner-aware splits were
flagged, against none of 40 with 200 reals: on small data a warning asks for a look at
``leaks.png`` rather than proving a leak. Groups the dataset doesn't declare (one person
in photos with different paths, say) are in both figures alike and can't be seen
this way; the closest pairs in ``leaks.png`` are the place to look for them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dfflab.data.layout import source_order
from dfflab.data.neighbours import THUMB, knn, squared_distance, thumbnails

NEAR_PCT = 5.0  # near-duplicate: closer than this percentile of the within-train baseline
MARGIN = 0.01  # a difference smaller than one percentage point is not called a leak
Z_TEST = 2.241  # two-sided 97.5% (Bonferroni for the two statistics)
Z_REPORT = 1.96  # the 95% intervals reported
BASELINE_N = 5000  # training images sampled for the baseline
COPY_RMS = 2.0  # thumbnails closer than this (of 255) show the same picture: a copy, whatever the baseline
GRID_PAIRS = 16


def cluster_share(hit: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(share, standard error) of ``hit``, with images of one group counted as one cluster.

    The images of a group are not independent (a photo, its inpainting and the insight
    fake of its partner look alike and find the same neighbour), so the error is the
    cluster-robust one of a ratio estimator, not the binomial one.
    """
    n = len(hit)
    if n == 0:
        return float("nan"), float("nan")
    p = float(hit.mean())
    _, g = np.unique(groups, return_inverse=True)
    k_g, n_g = np.bincount(g, weights=hit.astype(np.float64)), np.bincount(g)
    m = len(n_g)
    if m < 2:
        return p, float("nan")
    var = m / (m - 1) * float(((k_g - p * n_g) ** 2).sum()) / n ** 2
    return p, math.sqrt(var)


def t_quantile(z: float, df: float) -> float:
    """Student-t quantile at the normal quantile ``z`` (Cornish-Fisher; within 2% for df >= 3).

    Few groups make a cluster-robust error too small; the t quantile widens it.
    """
    if not df or df != df or df > 1e6:
        return z
    df = max(df, 2.0)
    z2 = z * z
    return z * (1 + (z2 + 1) / (4 * df) + (5 * z2 ** 2 + 16 * z2 + 3) / (96 * df ** 2)
                + (3 * z2 ** 3 + 19 * z2 ** 2 + 17 * z2 - 15) / (384 * df ** 3))


def interval(p: float, se: float, z: float = Z_REPORT) -> list[float]:
    return [max(0.0, p - z * se), min(1.0, p + z * se)] if se == se else [float("nan"), float("nan")]


def rms_distance(q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Root-mean-square difference (thumbnails: in 0..255 pixel units)."""
    return np.sqrt(squared_distance(q, cand))


def _stats(dist: np.ndarray, same: np.ndarray, threshold: float, groups: np.ndarray) -> dict:
    near, se_near = cluster_share(dist < threshold, groups)
    agree, se_agree = cluster_share(same, groups)
    return {"n": len(dist), "groups": len(np.unique(groups)), "near_duplicates": int((dist < threshold).sum()),
            "near_duplicate_share": near, "near_duplicate_se": se_near, "near_duplicate_ci95": interval(near, se_near),
            "label_agreement": agree, "label_agreement_se": se_agree, "label_agreement_ci95": interval(agree, se_agree),
            "median_distance": float(np.median(dist)) if len(dist) else float("nan")}


def _by(key: np.ndarray, dist, same, threshold, groups, names) -> dict:
    return {s: _stats(dist[key == s], same[key == s], threshold, groups[key == s]) for s in names if (key == s).any()}


def _difference(a: dict, b: dict, key: str, se_key: str, z: float) -> tuple[float, list[float]]:
    """a - b of two independent (disjoint groups) shares, with its interval (t with the
    smaller side's groups - 1 degrees of freedom)."""
    d = a[key] - b[key]
    se = math.sqrt(a[se_key] ** 2 + b[se_key] ** 2)
    t = t_quantile(z, min(a["groups"], b["groups"]) - 1)
    return d, ([d - t * se, d + t * se] if se == se else [float("nan"), float("nan")])


def leak_audit(embed: np.ndarray, labels: np.ndarray, sources: np.ndarray, split: np.ndarray,
               groups: np.ndarray, *, seed: int = 0, baseline_n: int = BASELINE_N,
               copy_distance: float | None = COPY_RMS) -> dict:
    """The statistics of the module docstring from per-image embeddings (N, D).

    Args:
        groups: (N,) group ids (e.g. the component id of each image's relative path).
        copy_distance: a val/test image this close to a training image is a *copy* (the
            same picture, re-encoded or resized), and any copy makes the split not
            leak-free; None (for learned features, whose scale means nothing) skips it.

    Returns:
        A JSON-ready dict; ``closest`` lists the nearest cross-split pairs as
        (query row, train row, distance), closest first.
    """
    train = np.flatnonzero(split == "train")
    held = np.flatnonzero(split != "train")
    if len(train) < 2 or not len(held):
        return {"leak_free": None, "message": "leak audit skipped: needs training and val/test images"}
    _, gid = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng([seed, 11])
    base = np.sort(rng.choice(train, size=min(baseline_n, len(train)), replace=False))
    bd, bi = knn(embed[base], embed[train], 1, query_groups=gid[base], ref_groups=gid[train],
                 distance=rms_distance)
    ok = bi[:, 0] >= 0
    base, bd, bi = base[ok], bd[ok, 0], train[bi[ok, 0]]
    xd, xi = knn(embed[held], embed[train], 1, distance=rms_distance)
    xd, xi = xd[:, 0], train[xi[:, 0]]
    threshold = float(np.percentile(bd, NEAR_PCT)) if len(bd) else 0.0
    b_same, x_same = labels[bi] == labels[base], labels[xi] == labels[held]
    within, cross = _stats(bd, b_same, threshold, gid[base]), _stats(xd, x_same, threshold, gid[held])
    names = source_order(set(sources.tolist()))
    within["per_source"] = _by(sources[base], bd, b_same, threshold, gid[base], names)
    cross["per_source"] = _by(sources[held], xd, x_same, threshold, gid[held], names)
    cross["per_split"] = _by(split[held], xd, x_same, threshold, gid[held], ("val", "test"))
    d_near, ci_near = _difference(cross, within, "near_duplicate_share", "near_duplicate_se", Z_TEST)
    d_agree, ci_agree = _difference(cross, within, "label_agreement", "label_agreement_se", Z_TEST)
    near_leak = ci_near[0] > 0 and d_near > MARGIN
    agree_leak = ci_agree[1] < 0 and d_agree < -MARGIN
    if copy_distance is not None:
        copy = xd < copy_distance
        cross["copies"] = int(copy.sum())
        cross["copies_per_source"] = {s: int(copy[sources[held] == s].sum()) for s in names}
        within["copies"] = int((bd < copy_distance).sum())
    order = np.argsort(xd)[:GRID_PAIRS]
    out = {
        "threshold": threshold, "near_percentile": NEAR_PCT, "copy_distance": copy_distance,
        "cross_split": cross, "within_train": within,
        "difference": {"near_duplicate_share": d_near, "near_duplicate_ci97_5": list(ci_near),
                       "label_agreement": d_agree, "label_agreement_ci97_5": list(ci_agree)},
        "leak_free": not (near_leak or agree_leak or cross.get("copies", 0) > 0),
        "closest": [[int(held[j]), int(xi[j]), float(xd[j])] for j in order],
    }
    out["message"] = _message(out)
    return out


def _message(r: dict) -> str:
    c, w, d = r["cross_split"], r["within_train"], r["difference"]
    head = (f"leak audit: {c['near_duplicate_share']:.1%} of {c['n']} val/test images have a near-duplicate in "
            f"train (within-train baseline {w['near_duplicate_share']:.1%}); nearest-neighbour label agreement "
            f"{c['label_agreement']:.1%} (baseline {w['label_agreement']:.1%}).")
    copies = c.get("copies", 0)
    if copies:
        head += (f" WARNING: {copies} val/test images have a copy in train (thumbnails within "
                 f"{r['copy_distance']:g} of 255: the same picture in two splits).")
    if r["leak_free"]:
        return head + " Leak-free: the cross-split figures sit at the within-train baseline."
    if copies and not (d["near_duplicate_share"] > MARGIN or d["label_agreement"] < -MARGIN):
        return head + " Find them in leaks.png and give each copy and its original one group (groups.csv)."
    worst = max(c["per_source"].items(), key=lambda kv: kv[1]["near_duplicate_share"])
    return (head + f" WARNING: not leak-free (difference {d['near_duplicate_share']:+.1%} near-duplicates, "
            f"{d['label_agreement']:+.1%} label agreement; most near-duplicates: {worst[0]} "
            f"{worst[1]['near_duplicate_share']:.1%}). Val/test images have near-copies in train: declare what "
            "ties them (groups.csv, partners.csv) and prepare again; see leaks.png for the closest pairs.")


def store_embedding(images: np.ndarray, features: str | None = None, batch: int = 256) -> tuple[np.ndarray, str]:
    """(N, D) embedding of a store's images and its description.

    ``features`` None: 16 x 16 thumbnails; else an SSL run folder or a backbone or
    detector checkpoint, whose backbone features (unit length) are used.
    """
    if not features:
        size = min(THUMB, images.shape[1])
        return thumbnails(images, size), f"thumbnails {size}x{size}"
    import torch

    from dfflab.config import ModelConfig
    from dfflab.models import build_detector, init_backbone
    from dfflab.models.detector import resolve_init
    from dfflab.runs import load_checkpoint

    path = resolve_init(features)
    mcfg = ModelConfig(**{k: v for k, v in (load_checkpoint(path).get("model_cfg") or {}).items()
                          if k in ModelConfig.__dataclass_fields__})
    model = build_detector(mcfg)
    init_backbone(model, str(path), mcfg)
    backbone = model.backbone.eval()
    out = []
    with torch.no_grad():
        from dfflab.data.pages import batches

        for _, part in batches(images, batch=batch):
            x = torch.from_numpy(part).permute(0, 3, 1, 2).float() / 255
            f = backbone(x)
            out.append(torch.nn.functional.normalize(f, dim=1).numpy())
    return np.concatenate(out).astype(np.float32), f"{mcfg.backbone} features from {path}"


def leak_grid(images: np.ndarray, result: dict, sources: np.ndarray, split: np.ndarray, path: Path | str,
              scale: int = 2) -> Path | None:
    """A PNG of the closest cross-split pairs: each val/test image beside its nearest train image."""
    from PIL import Image, ImageDraw

    pairs = result.get("closest") or []
    if not pairs:
        return None
    s = images.shape[1] * scale
    cols, cell_w, cell_h = 4, 2 * s + 12, s + 28
    rows = -(-len(pairs) // cols)
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (q, t, d) in enumerate(pairs):
        x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h
        for j, r in enumerate((q, t)):
            tile = Image.fromarray(np.asarray(images[r])).resize((s, s), Image.Resampling.NEAREST)
            canvas.paste(tile, (x0 + j * s, y0))
        draw.text((x0, y0 + s + 2), f"{split[q]} {sources[q]} | train {sources[t]}", fill="black")
        draw.text((x0, y0 + s + 14), f"distance {d:.2f}", fill="black")
    canvas.save(path)
    return Path(path)
