"""Nearest neighbours between images: thumbnails, a PCA sketch, exact re-ranking.

The partner recovery (``pairs.py``) and the leak audit (``leaks.py``) both ask, for
each query image, which reference image is closest. Images are compared as small
thumbnails (16 x 16 x 3 = 768 numbers) or as any feature vectors. A PCA projection to
``dim`` dimensions finds ``candidates`` per query with one matrix product per chunk of
queries; those are re-ranked by their exact distance. The answer is the exact nearest
neighbour whenever it is among the sketch's candidates, which a 64-dimensional PCA of
768 pixels nearly always keeps; 30,000 x 60,000 comparisons take seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

THUMB = 16  # thumbnail side: coarse enough to ignore JPEG noise, fine enough to tell photos apart


def thumbnails(images: np.ndarray, size: int = THUMB, batch: int = 4096, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size * size * 3) float32 in 0..255, area-averaged; of ``images[rows]``
    when ``rows`` is given (read batch by batch: a memory-mapped store is never copied whole)."""
    from dfflab.data.pages import batches

    out = np.empty((len(images) if rows is None else len(rows), size * size * 3), dtype=np.float32)
    for i, part in batches(images, rows, batch):
        x = torch.from_numpy(part).permute(0, 3, 1, 2).float()
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        out[i:i + len(x)] = x.permute(0, 2, 3, 1).reshape(len(x), -1).numpy()
    return out


def pca(x: np.ndarray, dim: int, sample: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), basis (D, dim)) of the top principal directions, fit on a seeded sample."""
    rng = np.random.default_rng(seed)
    fit = x[np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))].astype(np.float32)
    mean = fit.mean(0, dtype=np.float64).astype(np.float32)
    fit -= mean
    # eigenvectors of the (D, D) scatter matrix: the same directions as an SVD of the sample, far cheaper
    _, vecs = np.linalg.eigh((fit.T @ fit).astype(np.float64))
    return mean, np.ascontiguousarray(vecs[:, ::-1][:, :dim]).astype(np.float32)


def squared_distance(q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Mean squared difference of each query (B, D) to its candidates (B, M, D): (B, M)."""
    return ((cand - q[:, None, :]) ** 2).mean(-1)


def knn(queries: np.ndarray, refs: np.ndarray, k: int = 1, *, query_groups: np.ndarray | None = None,
        ref_groups: np.ndarray | None = None, dim: int = 64, candidates: int = 32, chunk: int = 512,
        distance: Callable[[np.ndarray, np.ndarray], np.ndarray] = squared_distance,
        progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest references of every query by ``distance`` (smallest first).

    Args:
        queries: (Q, D) float vectors; refs: (R, D).
        query_groups, ref_groups: int ids; a reference in the query's own group is
            never returned (a query's own photo, its own relatives).
        dim: PCA sketch dimensions (no sketch when D <= dim).
        candidates: sketch candidates re-ranked exactly per query.
        distance: exact distance of (B, D) queries to (B, M, D) candidates.
        progress: called with the number of queries done after each chunk.

    Returns:
        (distances (Q, k), indices (Q, k) into refs); inf / -1 where fewer exist.
    """
    queries, refs = np.asarray(queries, np.float32), np.asarray(refs, np.float32)
    if queries.shape[1] > dim and len(refs) > candidates:
        mean, basis = pca(refs, dim)
        qs, rs = (queries - mean) @ basis, (refs - mean) @ basis
    else:
        qs, rs = queries, refs
    r_norm = (rs ** 2).sum(1)
    m = min(max(candidates, k), len(refs))
    out_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for s in range(0, len(queries), chunk):
        q = qs[s:s + chunk]
        sketch = r_norm[None, :] - 2 * q @ rs.T  # + |q|^2, the same for every reference
        if query_groups is not None:
            sketch[query_groups[s:s + chunk, None] == ref_groups[None, :]] = np.inf
        cand = np.argpartition(sketch, m - 1, axis=1)[:, :m]  # (B, m) unordered
        ok = np.take_along_axis(sketch, cand, 1) < np.inf
        exact = distance(queries[s:s + chunk], refs[cand]).astype(np.float32)
        exact[~ok] = np.inf
        order = np.argsort(exact, axis=1)[:, :k]
        n = min(k, m)
        out_d[s:s + len(q), :n] = np.take_along_axis(exact, order, 1)
        picked = np.take_along_axis(cand, order, 1)
        out_i[s:s + len(q), :n] = np.where(np.isfinite(out_d[s:s + len(q), :n]), picked, -1)
        if progress is not None:
            progress(len(q))
    return out_d, out_i
