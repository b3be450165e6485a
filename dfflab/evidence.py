"""Confidence intervals and significance: every reported detector metric and every comparison.

* :func:`intervals` -- 95% CIs of AUROC, AP, balanced accuracy and EER of one detector on its
  test set: a **stratified** bootstrap (reals and fakes resampled separately, so every resample
  keeps the class counts), ``eval.bootstrap`` seeded resamples, percentile intervals.
* :func:`paired_difference` -- the interval of a difference between two detectors scored on
  the *same* test images: each resample draws the same images for both (a **paired**
  bootstrap), so what the two share cancels out. With several seeds per side, each resample
  also draws seeds (paired by seed index), so the interval covers seed-to-seed variation too.
* :func:`verdict` -- "better", "worse" or "no significant difference": a difference is called
  better or worse only when its interval excludes zero.

All metrics of a resample are computed at once from one sort of the scores: a bootstrap
resample is a vector of counts (how often each image was drawn), and every metric here is a
weighted count over the sorted scores, so B resamples are (B, n) array operations. The point
values match :func:`dfflab.metrics.binary_metrics` (torchmetrics), ties included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("auroc", "ap", "balanced_accuracy", "eer")
LOWER_IS_BETTER = {"eer"}
DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


def stratified_counts(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) draw counts: each row resamples the reals and the fakes with replacement, separately."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 20261201])
    counts = np.zeros((n_resamples, len(labels)), dtype=np.float64)
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        if len(idx) == 0:
            continue
        draws = rng.integers(0, len(idx), size=(n_resamples, len(idx)))
        rows = np.repeat(np.arange(n_resamples), len(idx))
        np.add.at(counts, (rows, idx[draws.ravel()]), 1.0)
    return counts


def weighted_metrics(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                     threshold: float = 0.5) -> dict[str, np.ndarray]:
    """AUROC, AP, balanced accuracy (at ``threshold``) and EER of each row of ``weights`` (B, n).

    Row b is the dataset where image i appears ``weights[b, i]`` times.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-scores, kind="mergesort")  # descending scores
    s, y, w = scores[order], labels[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each group of tied scores
    tp = np.add.reduceat(w * y, starts, axis=1)  # (B, G) fakes at each distinct score
    fp = np.add.reduceat(w * ~y, starts, axis=1)  # (B, G) reals
    pos, neg = tp.sum(1, keepdims=True), fp.sum(1, keepdims=True)
    ctp, cfp = np.cumsum(tp, 1), np.cumsum(fp, 1)  # at threshold = each distinct score, descending
    tpr, fpr = ctp / pos, cfp / neg
    tpr0 = np.concatenate([np.zeros_like(pos), tpr], 1)
    fpr0 = np.concatenate([np.zeros_like(neg), fpr], 1)
    # AUROC as Mann-Whitney U on the counts (the trapezoidal ROC area; a tie gets half credit),
    # summed in counts before dividing so that a perfect ranking gives exactly 1
    auroc = ((tp * (neg - cfp)).sum(1) + 0.5 * (tp * fp).sum(1)) / (pos[:, 0] * neg[:, 0])
    # AP: sum over thresholds of (recall step) x precision (torchmetrics' / sklearn's definition)
    prec = ctp / np.maximum(ctp + cfp, 1e-300)
    ap = (tp * prec).sum(1) / pos[:, 0]
    # balanced accuracy at a fixed threshold (p >= threshold is called fake, as torchmetrics)
    called = (scores >= threshold)[order]
    bal = ((w * (y & called)).sum(1) / pos[:, 0] + (w * (~y & ~called)).sum(1) / neg[:, 0]) / 2
    # EER: where FPR and FNR cross, linearly interpolated (as dfflab.metrics.eer)
    fnr0 = 1 - tpr0
    diff = fpr0 - fnr0  # increasing from -1 to 1 along the ROC
    i = np.argmax(diff >= 0, axis=1)
    rows = np.arange(len(w))
    d1, d0 = diff[rows, i], diff[rows, np.maximum(i - 1, 0)]
    t = np.where((i == 0) | (d1 == 0), 0.0, d0 / np.where(d0 - d1 == 0, 1, d0 - d1))
    f0, f1 = fpr0[rows, np.maximum(i - 1, 0)], fpr0[rows, i]
    eer = np.where((i == 0) | (d1 == 0), (fpr0[rows, i] + fnr0[rows, i]) / 2, f0 + t * (f1 - f0))
    return {"auroc": auroc, "ap": ap, "balanced_accuracy": bal, "eer": eer}


def _percentile(values: np.ndarray, level: float = LEVEL) -> list[float]:
    lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def intervals(scores, labels, threshold: float = 0.5, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              level: float = LEVEL) -> dict[str, list[float]]:
    """``{"auroc_ci": [lo, hi], "ap_ci": ..., "balanced_accuracy_ci": ..., "eer_ci": ...}``.

    Empty when a class is missing or ``n_resamples`` is 0.
    """
    labels = np.asarray(labels)
    if n_resamples <= 0 or labels.min() == labels.max():
        return {}
    per = weighted_metrics(scores, labels, stratified_counts(labels, n_resamples, seed), threshold)
    return {f"{k}_ci": _percentile(v, level) for k, v in per.items()}


def mean_intervals(probs: Sequence[np.ndarray], labels, thresholds: Sequence[float],
                   n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, list[float]]:
    """Intervals of the *mean* metric of several detectors scored on the same images (the local-only
    baseline's clients): each resample scores every detector on the same draw, then averages."""
    labels = np.asarray(labels)
    if n_resamples <= 0 or labels.min() == labels.max() or not len(probs):
        return {}
    counts = stratified_counts(labels, n_resamples, seed)
    per = [weighted_metrics(p, labels, counts, t) for p, t in zip(probs, thresholds, strict=True)]
    return {f"{k}_ci": _percentile(np.mean([m[k] for m in per], axis=0), level) for k in METRICS}


@dataclass
class Scored:
    """One detector's test scores, aligned by store row (what ``test_scores.npz`` holds)."""

    rows: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    threshold: float = 0.5


def _aligned(a: Sequence[Scored], b: Sequence[Scored]) -> None:
    ref = a[0]
    for s in [*a, *b]:
        if not np.array_equal(s.rows, ref.rows):
            raise ValueError("a paired comparison needs both detectors scored on the same test rows "
                             f"({len(s.rows)} vs {len(ref.rows)} rows, or another order)")


def paired_difference(a: Scored | Sequence[Scored], b: Scored | Sequence[Scored], metric: str = "auroc",
                      n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """The difference ``metric(a) - metric(b)`` with its paired-bootstrap interval.

    ``a`` and ``b`` are one scored detector each, or lists of seeds of each (the i-th seed of
    ``a`` paired with the i-th of ``b``): the point value is the mean over seeds, and each
    resample draws seeds as well as test images.

    Returns:
        ``{"metric", "a", "b", "diff", "ci", "n_resamples", "n_seeds", "verdict"}``; ``a`` / ``b``
        are the seed-mean point values, ``verdict`` from :func:`verdict`.
    """
    a = [a] if isinstance(a, Scored) else list(a)
    b = [b] if isinstance(b, Scored) else list(b)
    if len(a) != len(b) or not a:
        raise ValueError(f"paired seeds: {len(a)} vs {len(b)} runs")
    _aligned(a, b)
    labels, k = a[0].labels, len(a)
    ones = np.ones((1, len(labels)))
    point = {side: float(np.mean([weighted_metrics(s.probs, labels, ones, s.threshold)[metric][0] for s in runs]))
             for side, runs in (("a", a), ("b", b))}
    counts = stratified_counts(labels, n_resamples, seed)
    per_a = np.stack([weighted_metrics(s.probs, labels, counts, s.threshold)[metric] for s in a])  # (k, B)
    per_b = np.stack([weighted_metrics(s.probs, labels, counts, s.threshold)[metric] for s in b])
    diffs = per_a - per_b
    if k > 1:  # resample the seeds too (paired by index)
        pick = np.random.default_rng([seed, 7]).integers(0, k, size=(k, n_resamples))
        diffs = np.take_along_axis(diffs, pick, axis=0)
    d = diffs.mean(0)
    ci = _percentile(d, level)
    return {"metric": metric, "a": point["a"], "b": point["b"], "diff": point["a"] - point["b"], "ci": ci,
            "n_resamples": n_resamples, "n_seeds": k, "verdict": verdict(ci, metric)}


def verdict(ci: Sequence[float], metric: str = "auroc") -> str:
    """"better" / "worse" (for the first of the two compared) when the interval of the difference
    excludes zero, else "no significant difference". For EER, lower is better."""
    lo, hi = ci
    if lo > 0:
        return "worse" if metric in LOWER_IS_BETTER else "better"
    if hi < 0:
        return "better" if metric in LOWER_IS_BETTER else "worse"
    return "no significant difference"


def seed_spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (ddof 1) and range of one metric over seeds."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n_seeds": len(v)}
