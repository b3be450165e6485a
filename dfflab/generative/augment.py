"""GAN-augmented leave-one-generator-out detection, with its control: ``dfflab generative evaluate --augment``.

For each fake source h three detectors are trained on reals + the other fake sources
(:func:`dfflab.detector.trainer.train_detector`, the project's recipe):

* ``base``: nothing added;
* ``gan``: plus ``n`` generated images of each GAN class except h, labelled fake
  (``gan-wiki`` too: generated "reals" are fakes);
* ``control``: plus as many non-GAN images (``n`` per source except h): train images of
  the fold's own sources, reals and fakes with their labels, sent through the GAN's
  resolution and back exactly as generated images are (:func:`write_control_store`).

Each detector is scored on the same test images (reals and the held-out h); AUROC
differences carry a paired 95% bootstrap interval over those images. ``gan - control``
is the gain attributable to the GAN's content rather than to more, or resampled, images.
Finished folds are kept in the run's ``logo.pt``, so a crashed experiment resumes.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np

from dfflab.evidence import Scored, intervals, paired_difference, weighted_metrics
from dfflab.generative.stores import GAN_PREFIX, write_augmented_store, write_control_store
from dfflab.runs import Run

VARIANTS = ("base", "gan", "control")


def logo_jobs(fake_sources: list[str]) -> list[tuple[str, str, list[str]]]:
    """(held out, variant, train sources) for every fold: baseline, GAN-augmented, control.

    The control's extra images live under the fold's own source names (and the reals'),
    so its train sources are the baseline's.
    """
    jobs = []
    for h in fake_sources:
        others = [s for s in fake_sources if s != h]
        gan = [f"{GAN_PREFIX}{c}" for c in ("wiki", *fake_sources) if c != h]
        jobs += [(h, "base", others), (h, "gan", others + gan), (h, "control", others)]
    return jobs


def paired_auroc(preds: dict[str, Scored], reps: int = 1000, seed: int = 0) -> dict[str, dict]:
    """AUROC of each variant and the differences gan-base, control-base, gan-control with 95% intervals.

    ``preds``: ``{variant: scores}`` on the same test rows; the differences are paired
    (:func:`dfflab.evidence.paired_difference`: every resample draws the same images for all).
    """
    out = {}
    for v, s in preds.items():
        ci = intervals(s.probs, s.labels, s.threshold, reps, seed).get("auroc_ci", [float("nan")] * 2)
        out[v] = {"auroc": float(weighted_metrics(s.probs, s.labels, np.ones((1, len(s.labels))))["auroc"][0]),
                  "auroc_ci": ci}
    for a, b in (("gan", "base"), ("control", "base"), ("gan", "control")):
        if a in preds and b in preds:
            d = paired_difference(preds[a], preds[b], "auroc", n_resamples=reps, seed=seed)
            out[f"{a}-{b}"] = {"delta": d["diff"], "delta_ci": d["ci"], "verdict": d["verdict"]}
    return out


def _test_predictions(run: Run, store, rows: np.ndarray, device) -> Scored:
    from dfflab.detector.scoring import score_checkpoint

    return score_checkpoint(run.path("detector.pt"), store, rows, device).scored()


def augmented_logo(cfg, g, store, run: Run, n_per_class: int, progress: bool = True) -> dict:
    """Train the base, GAN-augmented and control detector of every LOGO fold; returns the AUROC table."""
    from dfflab.detector.trainer import train_detector
    from dfflab.device import resolve_device

    fake_sources = list(store.fake_sources)
    done = run.load("logo.pt")["done"] if run.path("logo.pt").is_file() else {}
    made = {}
    writers = {"gan": lambda d: write_augmented_store(store, g, n_per_class, d),
               "control": lambda d: write_control_store(store, g.image_size, n_per_class, d)}
    for h, variant, sources in logo_jobs(fake_sources):
        key = f"{h}/{variant}"
        if key in done:
            continue
        if variant != "base" and variant not in made:
            made[variant] = writers[variant](run.path(f"{variant}-store"))
        child = copy.deepcopy(cfg)
        child.train.train_sources, child.train.test_sources = sources, fake_sources
        child.train.audit = False
        crun = train_detector(child, name=f"gan-logo-{h}-{variant}", parent=run.name,
                              note=f"LOGO fold {h} ({variant}): train on {'+'.join(sources)}"
                                   + (f" + {n_per_class} extra images per source" if variant != "base" else ""),
                              store=made.get(variant, store), progress=progress)
        done[key] = {"run": crun.name, "auroc_held_out": crun.summary()["test_per_source"][h]["auroc"]}
        run.save("logo.pt", {"done": done})
    for variant in made:  # full copies of the store: only needed while training
        shutil.rmtree(run.path(f"{variant}-store"), ignore_errors=True)
    device = resolve_device(cfg.train.device)
    table = {}
    for h in fake_sources:
        k = store.source_names.index(h)
        rows = np.flatnonzero((store.split == "test") & ((store.labels == 0) | (store.source_ids == k)))
        preds = {v: _test_predictions(Run.open(run.dir.parent / done[f"{h}/{v}"]["run"]), store, rows, device)
                 for v in VARIANTS}
        cmp = paired_auroc(preds)
        table[h] = {"auroc_base": cmp["base"]["auroc"], "auroc_gan": cmp["gan"]["auroc"],
                    "auroc_control": cmp["control"]["auroc"], "delta": cmp["gan-base"]["delta"],
                    "delta_ci": cmp["gan-base"]["delta_ci"], "delta_control": cmp["control-base"]["delta"],
                    "delta_control_ci": cmp["control-base"]["delta_ci"],
                    "gan_vs_control": cmp["gan-control"]["delta"], "gan_vs_control_ci": cmp["gan-control"]["delta_ci"],
                    "gan_vs_control_verdict": cmp["gan-control"]["verdict"], "n_test": len(rows),
                    "runs": [done[f"{h}/{v}"]["run"] for v in VARIANTS]}
    return {"held_out": table, "mean_delta": float(np.mean([v["delta"] for v in table.values()])),
            "mean_gan_vs_control": float(np.mean([v["gan_vs_control"] for v in table.values()])),
            "gan_per_class": n_per_class, "control_per_class": n_per_class,
            "note": "GAN and control images go through the GAN's size and back to the store's; fold h adds no "
                    "gan-h or h images, but the GAN was trained on all sources (its weights saw h). Intervals: "
                    "paired bootstrap over the fold's test images (1000 replicates)."}
