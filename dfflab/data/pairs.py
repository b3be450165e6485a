"""``dfflab data pairs``: recover DFF's hidden partner of every insight fake.

DFF's insight fake at X's path is the partner photo Y with X's face swapped in; the
rest of the picture (hair, clothes, background) is Y's. So each insight fake is
matched against every real by a thumbnail of the whole image in which the largest
per-pixel differences (the swapped face, wherever it sits) are ignored: the nearest
real is taken as the partner. Reals are compared in two framings, the centre crop
the store keeps and the whole photo squashed to a square (DFF resized every real to
512x512 before the swap), and the better one counts.

A match is *confident* when its distance is below ``RATIO`` times the distance to the
next-best real: a true partner shares most pixels, anything else shares none. Writes
``pairs.csv`` (``relpath,partner,distance,ratio,confident``) and ``pairs.png`` (the
distance distributions) into the store; ``prepare`` runs it on a DFF layout and links
each confident pair in the split.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfflab.data.layout import REAL_SOURCE
from dfflab.data.neighbours import THUMB, knn, thumbnails
from dfflab.runs import atomic_write_text

SWAP_SOURCE = "insight"  # the DFF source that keeps the partner's photo around the face
RATIO = 0.5  # confident: nearest distance < RATIO x second-nearest
KEEP = 0.6  # share of thumbnail pixels (the best-matching ones) a distance is taken over
CANDIDATES = 16  # sketch candidates re-ranked by the trimmed distance


@dataclass
class Pairs:
    """Recovered partners, one row per insight fake."""

    relpath: np.ndarray  # (F,) str: the fake's relative path
    partner: np.ndarray  # (F,) str: the nearest real's relative path ("" if none)
    distance: np.ndarray  # (F,) float: RMS difference over the kept pixels, 0..255
    second: np.ndarray  # (F,) float: the same for the next-best real
    confident: np.ndarray  # (F,) bool

    @property
    def ratio(self) -> np.ndarray:
        return self.distance / np.maximum(self.second, 1e-6)

    def links(self) -> list[tuple[str, str]]:
        """The confident (relpath, partner) pairs."""
        return [(a, b) for a, b, c in zip(self.relpath, self.partner, self.confident, strict=True) if c]


def trimmed_distance(q: np.ndarray, cand: np.ndarray, keep: float = KEEP) -> np.ndarray:
    """RMS over the ``keep`` share of pixels that match best (B, D) vs (B, M, D) -> (B, M).

    Pixels are (r, g, b) triples: a pixel's error is its mean over channels.
    """
    sq = (cand - q[:, None, :]) ** 2  # (B, M, D), D = P pixels x 3 channels, channels last
    err = (sq[..., 0::3] + sq[..., 1::3] + sq[..., 2::3]) / 3  # (B, M, P)
    n = max(1, int(round(keep * err.shape[-1])))
    best = np.partition(err, n - 1, axis=-1)[..., :n]
    return np.sqrt(best.mean(-1))


def recover_pairs(fake_rel: np.ndarray, fake_views: list[np.ndarray], real_rel: np.ndarray,
                  real_views: list[np.ndarray], ratio: float = RATIO, progress: bool = False) -> Pairs:
    """The nearest real of every fake, over several framings (views) of the same images.

    Args:
        fake_rel, real_rel: relative paths; a fake is never matched to the real at its own path.
        fake_views, real_views: per framing, (N, D) thumbnails of the fakes and the reals.
        ratio: the confidence threshold (see the module docstring).
    """
    from tqdm import tqdm

    index = {r: i for i, r in enumerate(real_rel)}
    own = np.array([index.get(r, -1) for r in fake_rel])
    best = np.full((len(fake_rel), 2 * len(fake_views)), np.inf, dtype=np.float32)
    who = np.full(best.shape, -1, dtype=np.int64)
    bar = tqdm(total=len(fake_rel) * len(fake_views), desc="pairs", unit="img", disable=not progress)
    for v, (fv, rv) in enumerate(zip(fake_views, real_views, strict=True)):
        d, i = knn(fv, rv, 2, query_groups=own, ref_groups=np.arange(len(real_rel)), candidates=CANDIDATES,
                   distance=trimmed_distance, progress=bar.update)
        best[:, 2 * v:2 * v + 2], who[:, 2 * v:2 * v + 2] = d, i
    bar.close()
    order = np.argsort(best, axis=1)
    best, who = np.take_along_axis(best, order, 1), np.take_along_axis(who, order, 1)
    d1, p1 = best[:, 0], who[:, 0]
    # the runner-up must be another real: the same real found in a second framing doesn't count
    other = np.where(who != p1[:, None], best, np.inf)
    d2 = other.min(axis=1)
    partner = np.where(p1 >= 0, real_rel[np.maximum(p1, 0)], "")
    conf = (p1 >= 0) & (d1 < ratio * d2)
    return Pairs(np.asarray(fake_rel), partner.astype(str), d1, d2, conf)


def pairs_from_store(images: np.ndarray, squashed: np.ndarray | None, sources: np.ndarray,
                     relpaths: np.ndarray, progress: bool = False) -> Pairs | None:
    """:func:`recover_pairs` for the insight fakes of a store's arrays; None without any."""
    fakes, reals = np.flatnonzero(sources == SWAP_SOURCE), np.flatnonzero(sources == REAL_SOURCE)
    if not len(fakes) or len(reals) < 2:
        return None
    size = min(THUMB, images.shape[1])
    fake_views, real_views = [thumbnails(images, size, rows=fakes)], [thumbnails(images, size, rows=reals)]
    if squashed is not None:
        fake_views.append(thumbnails(squashed, size, rows=fakes))
        real_views.append(thumbnails(squashed, size, rows=reals))
    return recover_pairs(relpaths[fakes], fake_views, relpaths[reals], real_views, progress=progress)


def score_pairs(pairs: Pairs, truth: dict[str, str]) -> dict:
    """Precision and recall of the confident pairs against known partners.

    Precision: correct among confident; recall: confident and correct among all fakes
    with a known partner; ``top1``: the nearest real is right, confident or not.
    """
    known = np.array([r in truth for r in pairs.relpath])
    right = np.array([truth.get(r) == p for r, p in zip(pairs.relpath, pairs.partner, strict=True)])
    conf = pairs.confident & known
    return {"fakes": int(known.sum()), "confident": int(conf.sum()),
            "precision": float(right[conf].mean()) if conf.any() else float("nan"),
            "recall": float((right & conf).sum() / max(1, known.sum())),
            "top1": float(right[known].mean()) if known.any() else float("nan")}


def write_pairs(path: Path | str, pairs: Pairs) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["relpath", "partner", "distance", "ratio", "confident"])
    for r, p, d, q, c in zip(pairs.relpath, pairs.partner, pairs.distance, pairs.ratio, pairs.confident,
                             strict=True):
        w.writerow([r, p, f"{d:.3f}", f"{q:.4f}", int(c)])
    atomic_write_text(path, buf.getvalue())


def read_pairs(path: Path | str) -> list[tuple[str, str]]:
    """The confident (relpath, partner) links of a ``pairs.csv``; [] when it doesn't exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [(r["relpath"], r["partner"]) for r in csv.DictReader(f) if r.get("confident") == "1"]


def _quantiles(a: np.ndarray) -> list[float]:
    a = a[np.isfinite(a)]
    return [round(float(v), 3) for v in np.quantile(a, [0.05, 0.5, 0.95])] if len(a) else []


def summary(pairs: Pairs) -> dict:
    """Counts and distance quantiles for ``meta.json``."""
    q = _quantiles
    return {"fakes": len(pairs.relpath), "confident": int(pairs.confident.sum()), "ratio_threshold": RATIO,
            "distance_q05_q50_q95": q(pairs.distance), "second_q05_q50_q95": q(pairs.second)}


def plot_pairs(pairs: Pairs, path: Path | str) -> Path:
    """Histograms of the nearest and second-nearest distances and of their ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    fin = np.isfinite(pairs.distance) & np.isfinite(pairs.second)
    top = max(1.0, float(np.quantile(pairs.second[fin], 0.99))) if fin.any() else 1.0
    bins = np.linspace(0, top, 60)
    a.hist(pairs.distance[fin], bins=bins, alpha=0.7, label="nearest real")
    a.hist(pairs.second[fin], bins=bins, alpha=0.7, label="second-nearest real")
    a.set_xlabel("RMS difference over the best-matching pixels (0-255)")
    a.set_ylabel(f"{SWAP_SOURCE} fakes")
    a.legend()
    b.hist(np.clip(pairs.ratio[fin], 0, 1.2), bins=np.linspace(0, 1.2, 61))
    b.axvline(RATIO, color="k", ls="--", label=f"confident below {RATIO}")
    b.set_xlabel("nearest / second-nearest distance")
    b.legend()
    b.set_title(f"{int(pairs.confident.sum()):,} of {len(pairs.relpath):,} confident", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
