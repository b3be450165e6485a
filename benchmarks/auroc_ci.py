"""Test AUROC with stratified bootstrap 95% intervals, per run and paired against a reference run.

For each centralized run folder: score its ``detector.pt`` on the test rows of the store
its config names (the rows the trainer tested on), save ``test_scores.npz`` (relpath,
source, label, score) beside it, and resample reals and fakes separately (``--n`` seeded
resamples) for the interval. With ``--ref`` every other run is also compared with the
reference on the same resampled images (paired by relative path and source): a
difference is significant only when its interval excludes zero.

    python benchmarks/auroc_ci.py results/runs/*scratch* results/runs/*faces* --ref results/runs/*scratch*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count one half)."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n1 = int(labels.sum())
    n0 = len(labels) - n1
    return float((r[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_scores(run_dir: Path) -> dict[str, np.ndarray]:
    """Scores of the run's best checkpoint on its test rows (cached in test_scores.npz)."""
    out = run_dir / "test_scores.npz"
    if out.is_file():
        with np.load(out) as z:
            return dict(z)
    from dfflab.centralized.rows import select_rows
    from dfflab.centralized.scoring import evaluate_checkpoint
    from dfflab.config import config_from_dict
    from dfflab.data.store import Store
    from dfflab.runs import Run

    run = Run.open(run_dir)
    cfg = config_from_dict(run.config)
    store = Store(cfg.store_dir)
    rows = select_rows(store, cfg.train)["test"]
    _, _, pred = evaluate_checkpoint(run.path("detector.pt"), store, rows, "cpu")
    res = {"relpath": store.relpaths[rows], "source": store.sources[rows],
           "label": pred.labels.numpy(), "score": pred.probs.numpy()}
    np.savez(out, **res)
    return res


def bootstrap(labels: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` index resamples drawing reals and fakes separately (class sizes fixed)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    return [np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(n)]


def ci(values: list[float]) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="centralized run folders")
    ap.add_argument("--ref", type=Path, help="reference run for paired differences")
    ap.add_argument("--n", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = list(dict.fromkeys(args.runs + ([args.ref] if args.ref else [])))
    scored = {r: test_scores(r) for r in runs}
    keys = {r: [f"{s}/{p}" for s, p in zip(d["source"], d["relpath"], strict=True)] for r, d in scored.items()}
    common = sorted(set.intersection(*(set(k) for k in keys.values())))
    if len(common) < min(len(k) for k in keys.values()):
        print(f"note: runs share {len(common)} test images; paired numbers use those", file=sys.stderr)
    aligned = {}
    for r, d in scored.items():
        pos = {k: i for i, k in enumerate(keys[r])}
        idx = np.array([pos[k] for k in common])
        aligned[r] = (d["score"][idx], d["label"][idx])
    labels = next(iter(aligned.values()))[1]
    samples = bootstrap(labels, args.n, args.seed)
    print("| run | test AUROC | 95% CI | n real / fake | vs ref: diff [95% CI] |\n|---|---|---|---|---|")
    ref = aligned.get(args.ref) if args.ref else None
    for r in runs:
        s, y = aligned[r]
        boots = [auroc(s[i], y[i]) for i in samples]
        lo, hi = ci(boots)
        diff = ""
        if ref is not None and r != args.ref:
            d = [b - auroc(ref[0][i], y[i]) for b, i in zip(boots, samples, strict=True)]
            dlo, dhi = ci(d)
            diff = f"{auroc(s, y) - auroc(ref[0], y):+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
        print(f"| {r.name} | {auroc(s, y):.3f} | [{lo:.3f}, {hi:.3f}] | {int((y == 0).sum())} / {int(y.sum())} | {diff} |")
    print(f"\n{args.n} stratified bootstrap resamples (reals and fakes drawn separately), seed {args.seed}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
