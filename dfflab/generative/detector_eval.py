"""The GAN against the detector: fooling rate, and GAN-augmented detection.

    dfflab generative evaluate --run results/runs/<gan run> [--detector detector.pt] [--augment]

**Fooling rate**: the share of generated images of each class that a trained detector
(``dfflab centralized train``'s ``detector.pt``) calls real at its own validation-chosen
threshold. The GAN's images are smaller than the detector's input (32 vs 64 px in the
quick preset), so they are upsampled bilinearly; as a control the same is reported for
held-out test images of each class sent through the same down- and up-sampling, and
at their native size.

**GAN-augmented leave-one-generator-out (LOGO)**: for each fake source h, a detector is
trained on reals + the other fake sources (baseline) and again with GAN images added as
extra fakes (augmented), both with :func:`dfflab.detector.trainer.train_detector`; the
change in test AUROC on the held-out h is reported. The GAN images come from an
*extra prepared store*: the original store plus generated images as new fake sources
``gan-<class>`` in the train split (upsampled to the store's size), so the detector's
trainer needs no hook. Fold h leaves out ``gan-h``; the GAN itself was trained on all
sources, so its shared weights have seen h's training images (a mild leak, stated in
the summary).
"""

from __future__ import annotations

import copy
import csv
import io
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfflab.generative.evaluation import downscale, reference_rows
from dfflab.generative.sample import generate
from dfflab.runs import Run, atomic_write_text, is_side_run, list_runs, write_json

GAN_PREFIX = "gan-"


def find_detector(results: str | Path, fake_sources: list[str]) -> Path | None:
    """``detector.pt`` of the newest finished centralized run trained on all ``fake_sources``."""
    for run in reversed(list_runs(results, "centralized")):
        if is_side_run(run.record.get("name", "")):  # LOGO folds, label-efficiency cells, matched detector, ...
            continue
        trained = run.summary().get("train_sources") if run.finished else None
        if trained and set(fake_sources) <= set(trained) and run.path("detector.pt").is_file():
            return run.path("detector.pt")
    return None


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, s, s) -> uint8 (N, 3, size, size): bilinear up, box-filtered down."""
    f = x.float() / 255
    if size > f.shape[-1]:
        f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
    else:
        f = downscale(f, size)
    return (f * 255).round_().clamp_(0, 255).to(torch.uint8)


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


def fooling_rates(detector_path: str | Path, g, store, n: int, device: torch.device,
                  seed: int = 4242) -> dict:
    """Per class: share of ``n`` generated images called real, with real-image controls."""
    from dfflab.models import load_detector

    model, ckpt = load_detector(detector_path)
    model = model.to(device)
    size, thr = int(ckpt["image_size"]), float(ckpt.get("threshold", 0.5))
    rows = reference_rows(store, "test", 0)
    out, fooled_all = {}, []
    for k, c in enumerate(store.source_names):
        fake = p_fake(model, generate(g, torch.full((n,), k), seed=seed + k), size, device)
        x, _, _ = store.batch(rows[c])
        native = p_fake(model, x, size, device)
        resampled = p_fake(model, resize_uint8(x, g.image_size), size, device)
        out[c] = {"fooling_rate": float((fake < thr).float().mean()), "n_generated": n,
                  "called_real_test_native": float((native < thr).float().mean()),
                  "called_real_test_resampled": float((resampled < thr).float().mean()),
                  "n_test": len(rows[c])}
        fooled_all.append(fake < thr)
    out["overall"] = {"fooling_rate": float(torch.cat(fooled_all).float().mean()),
                      "n_generated": n * len(store.source_names)}
    return {"detector": str(detector_path), "threshold": thr, "detector_image_size": size,
            "gan_image_size": g.image_size, "per_class": out}


# -- derived stores: GAN-augmented, resampled -----------------------------------------------


def write_derived_store(store, out: Path | str, *, extra: list[tuple[str, torch.Tensor]] = (),
                        resample_to: int | None = None, tag: str = "derived"):
    """A copy of ``store`` at ``out``, with each image optionally sent through ``resample_to``
    px (box-filtered down, bilinear up: the GAN's resolution) and ``extra`` generated fakes
    appended as new sources (``(source name, uint8 (N, 3, s, s))``, train split, label 1).

    Written once (``meta.json`` marks it complete) and returned opened as a
    :class:`~dfflab.data.store.Store`.
    """
    from dfflab.data.store import INDEX_COLUMNS, Store

    out = Path(out)
    if (out / "meta.json").is_file():
        return Store(out)
    out.mkdir(parents=True, exist_ok=True)
    size = store.image_size
    arr = np.lib.format.open_memmap(out / "images.npy.partial", mode="w+", dtype=np.uint8,
                                    shape=(len(store) + sum(len(x) for _, x in extra), size, size, 3))
    for i in range(0, len(store), 1024):
        j = min(i + 1024, len(store))
        if resample_to:
            x = torch.from_numpy(np.array(store.images[i:j])).permute(0, 3, 1, 2)  # a writable copy
            arr[i:j] = resize_uint8(resize_uint8(x, resample_to), size).permute(0, 2, 3, 1).numpy()
        else:
            arr[i:j] = store.images[i:j]
    rows = [dict(r) for r in store.rows]
    i = len(store)
    for source, imgs in extra:
        arr[i:i + len(imgs)] = resize_uint8(imgs, size).permute(0, 2, 3, 1).numpy()
        rows += [{"row": i + j, "relpath": f"gan/{source}/{j:05d}", "source": source, "label": 1,
                  "split": "train", "width": imgs.shape[-1], "height": imgs.shape[-1], "file_size": 0,
                  "jpeg_quality": "", "mode": "generated"} for j in range(len(imgs))]
        i += len(imgs)
    arr.flush()
    del arr
    (out / "images.npy.partial").replace(out / "images.npy")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "index.csv", buf.getvalue())
    write_json(out / "meta.json", {**store.meta, "image_size": size, "n_images": len(rows),
                                   "fingerprint": f"{store.fingerprint}+{tag}", "derived_from": str(store.path),
                                   "resampled_to": resample_to})
    return Store(out)


def write_augmented_store(store, g, n_per_class: int, out: Path | str, seed: int = 9000):
    """The store plus ``n_per_class`` generated fakes per GAN class as sources ``gan-<class>``
    (label 1, train split, upsampled to the store's image size)."""
    extra = [(f"{GAN_PREFIX}{c}", generate(g, torch.full((n_per_class,), k), seed=seed + k))
             for k, c in enumerate(store.source_names)]
    return write_derived_store(store, out, extra=extra, tag=f"gan{n_per_class}")


def write_resampled_store(store, size: int, out: Path | str):
    """The store with every image sent through ``size`` px and back (what GAN images go through)."""
    return write_derived_store(store, out, resample_to=size, tag=f"resampled{size}")


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


def logo_jobs(fake_sources: list[str]) -> list[tuple[str, str, list[str]]]:
    """(held out, variant, train sources) for the baseline and GAN-augmented fold of each source."""
    jobs = []
    for h in fake_sources:
        others = [s for s in fake_sources if s != h]
        gan = [f"{GAN_PREFIX}{c}" for c in ("wiki", *fake_sources) if c != h]
        jobs += [(h, "base", others), (h, "gan", others + gan)]
    return jobs


def augmented_logo(cfg, g, store, run: Run, n_per_class: int, progress: bool = True) -> dict:
    """Train the baseline and augmented detector of every LOGO fold; returns the AUROC table.

    Finished folds are kept in ``run``'s ``logo.pt`` so a crashed experiment resumes.
    """
    from dfflab.detector.trainer import train_detector

    fake_sources = list(store.fake_sources)
    state_path = run.path("logo.pt")
    done = run.load("logo.pt")["done"] if state_path.is_file() else {}
    aug_dir = run.path("augmented-store")
    aug_store = None
    for h, variant, sources in logo_jobs(fake_sources):
        key = f"{h}/{variant}"
        if key in done:
            continue
        if variant == "gan" and aug_store is None:
            aug_store = write_augmented_store(store, g, n_per_class, aug_dir)
        child = copy.deepcopy(cfg)
        child.train.train_sources, child.train.test_sources = sources, fake_sources
        child.train.audit = False
        crun = train_detector(child, name=f"gan-logo-{h}-{variant}", parent=run.name,
                              note=f"LOGO fold {h} ({variant}): train on {'+'.join(sources)}",
                              store=aug_store if variant == "gan" else store, progress=progress)
        done[key] = {"run": crun.name, "auroc_held_out": crun.summary()["test_per_source"][h]["auroc"]}
        run.save("logo.pt", {"done": done})
    shutil.rmtree(aug_dir, ignore_errors=True)  # 4 x n images: only needed while training
    table = {}
    for h in fake_sources:
        base, aug = done[f"{h}/base"]["auroc_held_out"], done[f"{h}/gan"]["auroc_held_out"]
        table[h] = {"auroc_base": base, "auroc_gan": aug, "delta": aug - base,
                    "runs": [done[f"{h}/base"]["run"], done[f"{h}/gan"]["run"]]}
    deltas = [v["delta"] for v in table.values()]
    return {"held_out": table, "mean_delta": float(np.mean(deltas)), "gan_per_class": n_per_class,
            "note": "GAN images upsampled from the GAN's size to the store's; fold h adds no gan-h "
                    "images, but the GAN was trained on all sources (its weights saw h)."}


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
        from dfflab.generative.evaluation import reference_features, score_generator
        from dfflab.generative.metrics import build_extractors

        ex = build_extractors(cfg.gan, cfg.results)
        ref = reference_features(store, cfg.gan, ex, Path(cfg.results) / "cache" / "gan-reference")
        out["scores"] = score_generator(g, list(store.source_names), ex, ref, cfg.gan.eval_n,
                                        cfg.gan.kid_subset_size, progress)
    if augment_n:
        out["augmented_logo"] = augmented_logo(cfg, g, store, run, augment_n, progress)
        for h, m in out["augmented_logo"]["held_out"].items():
            run.log_metrics({"held_out": h, **{k: v for k, v in m.items() if k != "runs"}})
    run.write_summary(out)
    return run
