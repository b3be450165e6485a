"""FID/KID of a generator per class against held-out reals, with intervals and the real-vs-real floor.

For each class c, ``n`` generated images (fixed noise seeds, so every run is scored on
the same z) are compared with set A of class c (:mod:`dfflab.generative.reference`);
the floor is set B's first ``n`` images against the same A. "overall" is the mean over
classes (mean intra-class FID / KID, the conditional-GAN convention of Miyato & Koyama
2018), its interval from the class means of the bootstrap replicates. Every number
carries its n.

:func:`summary_scores` turns the scores into the keys of a GAN run's ``summary.json``
(``fid``, ``fid_ci``, ``kid``, ``kid_ci``, ``fid_floor`` ..., overall and per class);
the bootstrap replicates go to ``bootstrap.json`` so that two runs scored against the
same reference can be compared with a paired interval later.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from dfflab.generative.metrics import mean_of, score
from dfflab.generative.sample import generate

EVAL_SEED = 12345  # noise of the evaluation images: the same for every run
HEADLINE = "inception"


def generated_images(g, source_names: list[str], n: int, seed: int = EVAL_SEED) -> dict[str, torch.Tensor]:
    """``{class: uint8 (n, 3, S, S)}``; the fixed ``seed`` gives every run the same noise."""
    return {c: generate(g, torch.full((n,), k), seed=seed + k) for k, c in enumerate(source_names)}


def score_generator(g, source_names: list[str], extractors: dict[str, nn.Module], reference, n: int,
                    progress: bool = True, floor: bool = True) -> dict:
    """``{extractor: {"per_class": {class | overall: score}, "floor": {...}}}`` of ``n`` images per class.

    ``g`` is sampled as it is (eval mode): give the EMA generator after
    :func:`~dfflab.generative.steps.standing_stats`.
    """
    images = generated_images(g, source_names, n)
    out = {}
    for name, ex in extractors.items():
        per = {}
        for c in tqdm(source_names, desc=f"generated features ({name}, n={n})", disable=not progress, leave=False):
            per[c] = score(reference.features[name][c], ex(images[c]), **reference.settings)
        per["overall"] = mean_of([per[c] for c in source_names])
        out[name] = {"per_class": per, "floor": reference.floor(name, n) if floor else None}
    return out


def _public(s: dict) -> dict:
    return {k: v for k, v in s.items() if not k.endswith("_reps")}


def _entry(s: dict, floor: dict | None) -> dict:
    """The summary keys of one class (or overall) of the headline extractor."""
    out = {"fid": s["fid"], "fid_ci": s.get("fid_ci"), "kid": s["kid"], "kid_ci": s.get("kid_ci"),
           "kid_std": s["kid_std"], "kid_subset_size": s["kid_subset_size"],
           "n_eval": s["n_fake"], "n_real": s["n_real"]}
    if floor is not None:
        out |= {"fid_floor": floor["fid"], "fid_floor_ci": floor.get("fid_ci"), "kid_floor": floor["kid"],
                "kid_floor_ci": floor.get("kid_ci")}
    return out


def summary_scores(scores: dict, reference, extractors: dict[str, nn.Module], n: int) -> dict:
    """summary.json keys: the headline (Inception) overall and ``per_class``; every extractor's scores
    ``{class | overall: score}`` under ``scores`` and its floors under ``floors``."""
    head = scores[HEADLINE]
    classes = [c for c in head["per_class"] if c != "overall"]
    floor = head["floor"] or {}  # none when n exceeds set B
    out = _entry(head["per_class"]["overall"], floor.get("overall")) | {"n_eval": n}
    out["per_class"] = {c: _entry(head["per_class"][c], floor.get(c)) for c in classes}
    out["metric"] = {
        "extractor": HEADLINE, "precision": getattr(extractors[HEADLINE], "precision", "fp32"),
        "overall": "mean over classes", "ci": f"95% percentile bootstrap, {reference.settings['reps']} replicates",
        "kid": "unbiased MMD^2 over all pairs; kid_std over subsets of kid_subset_size",
        "floor": "set B (disjoint held-out reals, same n) against set A", "reference": reference.source}
    out["scores"] = {ex: {c: _public(v) for c, v in s["per_class"].items()} for ex, s in scores.items()}
    out["floors"] = {ex: {c: _public(v) for c, v in (s["floor"] or {}).items()} for ex, s in scores.items()}
    # flat copies of the headline numbers (older report tables read these)
    for ex, s in scores.items():
        for c, v in s["per_class"].items():
            out[f"fid_{ex}_{c}"], out[f"kid_{ex}_{c}"] = v["fid"], v["kid"]
    out["generated_per_class"] = n
    out["reference_per_class"] = {c: head["per_class"][c]["n_real"] for c in classes}
    return out


def replicates(scores: dict) -> dict:
    """``{extractor: {class | overall: {fid_reps, kid_reps}}}`` for ``bootstrap.json``."""
    return {ex: {c: {k: v[k] for k in ("fid_reps", "kid_reps") if k in v} for c, v in s["per_class"].items()}
            for ex, s in scores.items()}
