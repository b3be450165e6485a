"""Section 2, the experimental setup: data and splits as the runs recorded them, metric
definitions, seeds and the bootstrap behind every interval.

Split counts come from each run (``summary.json`` ``sizes``, ``partition``, and the test rows in
``test_scores.npz``), never from a store that happens to sit at the configured path: a store is
read only for its leak audit, and only when its fingerprint is the runs' own.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from dfflab.report.cells import table
from dfflab.report.collect import RunInfo, fmt, get, read_optional_json
from dfflab.report.context import PAIRED_SEED, Context, resamples

METRICS = [
    "- **AUROC**: probability that a random fake scores above a random real (threshold-free).",
    "- **AP**: average precision of the fake class over all thresholds.",
    "- **Accuracy / balanced accuracy / F1 / precision / recall**: at the decision threshold chosen on validation "
    "only (max. balanced accuracy); balanced accuracy averages the real and fake recalls, so the 1 real : 3 fakes "
    "imbalance cannot inflate it.",
    "- **Per source**: that generator's fakes against all reals of the same split.",
    "- **EER**: the error rate where false-positive and false-negative rates are equal (lower is better).",
    "- **Samples processed**: training images seen, summed over clients for federated runs.",
    "- **Sequential optimizer steps**: steps one after another; a federated round counts the most steps any "
    "client made in it (clients train in parallel). **Epochs per client**: rounds × local epochs (a centralized "
    "run's epochs). Centralized and federated runs are compared on all three axes.",
    "- **ECE / NLL / Brier / AURC**: calibration error (equal-width bins), negative log-likelihood, mean squared "
    "error of p(fake), area under the risk–coverage curve (lower is better for all four).",
    "- **FID / KID**: Fréchet and kernel Inception distances between generated and held-out real images of one "
    "class (lower is better); the floor, where recorded, is the same distance between two disjoint sets of real "
    "images of the same size: what a perfect generator would score at that sample size.",
]


def test_composition(r: RunInfo) -> dict[str, int] | None:
    """Test images per source, from the run's ``test_scores.npz`` (labels, source ids, source names)."""
    path = r.file("test_scores.npz")
    if not path.is_file():
        return None
    with np.load(path) as z:
        if "source_ids" not in z or "source_names" not in z:
            return None
        names, ids, labels = list(z["source_names"]), z["source_ids"], z["labels"]
    counts = Counter(("real" if y == 0 else (names[i] if i < len(names) else str(i))) for i, y in zip(ids, labels,
                                                                                                       strict=True))
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != "real", kv[0])))


def split_row(r: RunInfo) -> list:
    s = r.summary
    sizes = s.get("sizes") or {}
    part = s.get("partition") or []
    train = sizes.get("train") or (sum(p.get("images", 0) for p in part) if part else None)
    comp = test_composition(r)
    test = sizes.get("test") or (sum(comp.values()) if comp else None)
    return [r.name, r.stage, train, sizes.get("val"), test, r.fingerprint or "–", r.link]


def leak_audit(ctx: Context, fingerprint: str) -> tuple[dict | None, str]:
    """(the leak audit's figures, where they come from): a run's own record first, else the store's
    ``meta.json`` when that store holds the runs' dataset (same fingerprint)."""
    for r in ctx.all_runs():
        leaks = r.summary.get("leaks") or r.record.get("leaks")
        if isinstance(leaks, dict):
            return leaks, f"recorded by {r.link}"
    for r in ctx.all_runs():
        data = r.config.get("data", {})
        store = data.get("store") or f"{str(data.get('root', '')).rstrip('/')}-store-{data.get('image_size')}"
        meta = read_optional_json(Path(store) / "meta.json")
        if isinstance(meta, dict) and meta.get("fingerprint") == fingerprint and isinstance(meta.get("leaks"), dict):
            return meta["leaks"], f"the store `{store}` (fingerprint {fingerprint}, the runs' own)"
    return None, ""


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            out.append((f"{prefix}{k}", v))
    return out


def data_section(ctx: Context) -> list[str]:
    lines = ["### 2.1 Data and splits", ""]
    runs = ctx.all_runs()
    if not runs:
        return lines + ["No runs.", ""]
    base = (ctx.baseline() or runs)[0]
    d = base.config.get("data", {})
    synth = "synthdff" in str(d.get("root", "")).lower()
    lines += [f"Dataset root `{d.get('root')}`"
              + (f" (SynthDFF: {d.get('n_real')} procedural reals, each with one fake per generator, artifact "
                 f"strength {d.get('difficulty')})" if synth else "")
              + f"; every image centre-cropped and resized once to {d.get('image_size')}×{d.get('image_size')} px, "
              "identically for reals and fakes. Splits are grouped by relative path (a real and its fakes share a "
              f"split): {fmt(d.get('val_frac'))} of the paths to validation, {fmt(d.get('test_frac'))} to test, "
              f"seed {d.get('split_seed')}.", ""]
    fps = Counter(r.fingerprint for r in runs if r.fingerprint)
    if len(fps) == 1:
        lines += [f"All {sum(fps.values())} runs recorded the same dataset fingerprint `{next(iter(fps))}`.", ""]
    elif fps:
        lines += ["**The runs were made on different data** (dataset fingerprints "
                  + ", ".join(f"`{k}` × {v}" for k, v in fps.items()) + "): only runs on the same fingerprint "
                  "are compared with each other.", ""]
    heads = [g[0] for g in ctx.groups("centralized") + ctx.groups("federated")]
    if heads:
        lines += ["Images per split as each headline run recorded them (federated: the clients' training images; "
                  "validation and test are the server's, the centralized baseline's own):", ""]
        lines += table(["run", "stage", "train", "val", "test", "fingerprint", "run folder"],
                       [split_row(r) for r in heads])
    comp = test_composition(base)
    if comp:
        lines += [f"Test images per source ({base.link}'s `test_scores.npz`): "
                  + ", ".join(f"{k} {v}" for k, v in comp.items()) + ".", ""]
    leaks, where = leak_audit(ctx, base.fingerprint)
    if leaks:
        lines += [f"**Leak audit** ({where}):", ""]
        lines += table(["check", "value"], [[k, v] for k, v in _flat(leaks)])
    else:
        lines += ["No leak audit recorded for this dataset.", ""]
    return lines


def seeds_section(ctx: Context) -> list[str]:
    lines = ["### 2.3 Seeds, intervals and budget", ""]
    groups = [g for s in ("centralized", "federated") for g in ctx.groups(s)]
    runs = ctx.all_runs()
    n_boot = resamples(runs) if runs else 0
    boot = sorted({int(get(r.config, "train.bootstrap", 0) or 0) for r in runs if r.config.get("train")})
    lines += [f"- **Intervals**: 95% percentile intervals from a stratified bootstrap of the test set (reals and "
              f"fakes resampled separately), `train.bootstrap` = {', '.join(map(str, boot)) or '–'} resamples, "
              "seeded by the run's seed.",
              "- **Comparisons**: a paired bootstrap draws the same test images for both detectors, so what they "
              "share cancels; with several seeds per side, seeds (paired by seed) are resampled too. A difference "
              "is called *better* or *worse* only when its 95% interval excludes zero, otherwise *no significant "
              f"difference*. The report's own comparisons use {n_boot} resamples, bootstrap seed {PAIRED_SEED}.",
              f"- **Seeds** (`pipeline.seeds` = {get((ctx.baseline() or runs or [None])[0].config if runs else {}, 'pipeline.seeds', '–')}): "
              "a headline run with one seed carries test-set uncertainty only, not seed-to-seed variation.", ""]
    if groups:
        lines += table(["run", "stage", "seeds", "epochs (per client)", "sequential steps", "samples"],
                       [[g[0].name, g[0].stage, ", ".join(str(r.seed) for r in g),
                         g[0].summary.get("epochs_run") or _epc(g[0]),
                         g[0].summary.get("steps") or g[0].last("steps"), g[0].summary.get("samples")]
                        for g in groups])
    return lines


def _epc(r: RunInfo):
    from dfflab.report.describe_federated import epochs_per_client

    return epochs_per_client(r)


def setup_section(ctx: Context) -> list[str]:
    """Section 2."""
    return (["## 2. Experimental setup", ""] + data_section(ctx)
            + ["### 2.2 Metrics", ""] + METRICS + [""] + seeds_section(ctx))
