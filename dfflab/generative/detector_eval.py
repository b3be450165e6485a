"""The GAN against the detector: fooling rate, and GAN-augmented detection.

    dfflab generative evaluate --run results/runs/<gan run> [--detector detector.pt] [--augment]

**Fooling rate**: the share of generated images of each class that a trained detector
(``dfflab centralized train``'s ``detector.pt``) calls real at its own validation-chosen
threshold. The GAN's images are smaller than the detector's input (32 vs 64 px in the
quick preset), so they are upsampled bilinearly; as a control the same is reported for
held-out test images of each class sent through the same down- and up-sampling, and
at their native size.

**GAN-augmented leave-one-generator-out (LOGO)**: for each fake source h, a detector is
trained on reals + the other fake sources (baseline), again with GAN images added as
extra fakes (augmented), and again with **the same number of extra non-GAN images**
(control): train images of the fold's own sources, reals and fakes with their labels,
sent through the GAN's resolution and back exactly as the GAN's images are. All with
:func:`dfflab.detector.trainer.train_detector`. The gain attributable to the GAN is
augmented minus control: more images, or resampled-looking images, alone do not count.
Differences in test AUROC on the held-out h carry a paired bootstrap interval over the
test images. The extra images come from *extra prepared stores*: the original store
plus the generated images as new fake sources ``gan-<class>`` (or the control copies
under their own source names) in the train split, upsampled to the store's size, so the
detector's trainer needs no hook. Fold h leaves out ``gan-h`` (and h's control copies);
the GAN itself was trained on all sources, so its shared weights have seen h's training
images (a mild leak, stated in the summary).
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from dfflab.generative.sample import generate
from dfflab.generative.stores import resize_uint8, write_resampled_store
from dfflab.runs import Run, find_run, is_side_run


def find_detector(results: str | Path, fake_sources: list[str]) -> Path | None:
    """``detector.pt`` of the newest finished centralized run trained on all ``fake_sources``."""
    def usable(run: Run) -> bool:  # not a LOGO fold, label-efficiency cell, matched detector, ...
        trained = run.summary().get("train_sources")
        return (not is_side_run(run.record.get("name", "")) and bool(trained)
                and set(fake_sources) <= set(trained) and run.path("detector.pt").is_file())

    run = find_run(results, "centralized", where=usable)
    return run.path("detector.pt") if run is not None else None


@torch.no_grad()
def p_fake(model, images: torch.Tensor, image_size: int, device: torch.device, batch: int = 256) -> torch.Tensor:
    """The detector's p(fake) for uint8 images of any size (resized to ``image_size``)."""
    from dfflab.device import to_device_images

    model.eval()
    out = []
    for x in images.split(batch):
        x = to_device_images(resize_uint8(x, image_size), device)
        out.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(out)


def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    """Wilson 95% interval of a proportion k / n."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]


def _rate(called_real: torch.Tensor) -> tuple[float, list[float]]:
    return float(called_real.float().mean()), wilson(int(called_real.sum()), len(called_real))


def fooling_rates(detector_path: str | Path, g, store, n: int, device: torch.device,
                  seed: int = 4242) -> dict:
    """Per class: share of ``n`` generated images called real (Wilson 95% interval), with real-image controls."""
    from dfflab.models import load_detector

    model, ckpt = load_detector(detector_path)
    model = model.to(device)
    size, thr = int(ckpt["image_size"]), float(ckpt.get("threshold", 0.5))
    rows = {c: np.flatnonzero((store.split == "test") & (store.source_ids == k))
            for k, c in enumerate(store.source_names)}
    out, fooled_all = {}, []
    for k, c in enumerate(store.source_names):
        fake = p_fake(model, generate(g, torch.full((n,), k), seed=seed + k), size, device)
        x, _, _ = store.batch(rows[c])
        native = p_fake(model, x, size, device)
        resampled = p_fake(model, resize_uint8(x, g.image_size), size, device)
        rate, ci = _rate(fake < thr)
        out[c] = {"fooling_rate": rate, "fooling_rate_ci": ci, "n_generated": n,
                  "called_real_test_native": _rate(native < thr)[0],
                  "called_real_test_resampled": _rate(resampled < thr)[0],
                  "called_real_test_resampled_ci": _rate(resampled < thr)[1], "n_test": len(rows[c])}
        fooled_all.append(fake < thr)
    rate, ci = _rate(torch.cat(fooled_all))
    out["overall"] = {"fooling_rate": rate, "fooling_rate_ci": ci, "n_generated": n * len(store.source_names)}
    return {"detector": str(detector_path), "threshold": thr, "detector_image_size": size,
            "gan_image_size": g.image_size, "per_class": out}


def train_matched_detector(cfg, store, gan_size: int, run: Run, progress: bool = True) -> Run:
    """A detector trained on images resampled through the GAN's resolution (its run folder).

    Against the ordinary detector every upsampled image looks fake (resampling alone is a
    tell, see the resampled control), so its fooling rate says nothing about the GAN. This
    detector sees reals and fakes with the same resampling, so only the content is left.
    """
    from dfflab.detector.trainer import train_detector

    rs_dir = run.path("resampled-store")
    rs = write_resampled_store(store, gan_size, rs_dir)
    child = copy.deepcopy(cfg)
    child.train.audit = False
    det = train_detector(child, name=f"gan-matched-detector-{gan_size}px", parent=run.name, store=rs,
                         progress=progress,
                         note=f"Detector for the fooling rate: every image resampled through {gan_size} px "
                              "like the GAN's, so resampling is no tell.")
    shutil.rmtree(rs_dir, ignore_errors=True)  # a full copy of the store: only needed while training
    return det


# -- the evaluation run ---------------------------------------------------------------------


def evaluate_gan(cfg, gan_dir: str | Path, store, detector: str | Path, *, n: int = 500,
                 augment_n: int = 0, matched: bool = False, fid: bool = False, progress: bool = True) -> Run:
    """A ``generative/detector-eval`` run: fooling rates, optionally GAN-augmented LOGO and FID.

    ``matched`` also trains a detector on images resampled through the GAN's resolution
    (:func:`train_matched_detector`) and reports the fooling rate against it.
    ``augment_n`` > 0 runs the LOGO experiment with that many generated fakes per class.
    """
    from dfflab.device import resolve_device, set_threads
    from dfflab.generative.sample import load_generator

    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    gan_dir = Path(gan_dir)
    g, _ = load_generator(gan_dir, device)
    run = Run.create(cfg.results, "generative", "detector-eval", cfg.to_dict(), parent=gan_dir.name,
                     note=f"fooling rate{' + GAN-augmented LOGO' if augment_n else ''} of {gan_dir.name}",
                     fingerprint=store.fingerprint)
    out = {"gan_run": str(gan_dir), "fooling": fooling_rates(detector, g, store, n, device)}
    if matched:
        det = train_matched_detector(cfg, store, g.image_size, run, progress)
        out["fooling_matched"] = {**fooling_rates(det.path("detector.pt"), g, store, n, device),
                                  "detector_run": det.name, "detector_test_auroc": det.summary()["test"]["auroc"]}
    if fid:
        from dfflab.generative.evaluation import score_generator, summary_scores
        from dfflab.generative.features import build_extractors
        from dfflab.generative.reference import load_reference

        ex = build_extractors(cfg.gan, cfg.results, device)
        ref = load_reference(cfg, store, ex, progress)
        scores = score_generator(g, list(store.source_names), ex, ref, cfg.gan.eval_n, progress)
        out["scores"] = summary_scores(scores, ref, ex, cfg.gan.eval_n)
    if augment_n:
        from dfflab.generative.augment import augmented_logo

        out["augmented_logo"] = augmented_logo(cfg, g, store, run, augment_n, progress)
        for h, m in out["augmented_logo"]["held_out"].items():
            run.log_metrics({"held_out": h, **{k: v for k, v in m.items() if not isinstance(v, list | dict)}})
    run.write_summary(out)
    return run
