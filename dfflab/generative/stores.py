"""Derived stores for the detector experiments: GAN-augmented, its control, resampled.

Each is a copy of a prepared store with extra train images appended (or every image
resampled), written once (``meta.json`` marks it complete) and opened as a
:class:`~dfflab.data.store.Store`, so the detector's trainer reads them like any store:

* :func:`write_augmented_store`: generated images as new fake sources ``gan-<class>``;
* :func:`write_control_store`: as many train images of each source, resampled through
  the GAN's resolution like its images, under their own names and labels;
* :func:`write_resampled_store`: every image sent through the GAN's resolution and back.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfflab.files import atomic_write_text, write_json
from dfflab.generative.reference import downscale
from dfflab.generative.sample import generate

GAN_PREFIX = "gan-"


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, s, s) -> uint8 (N, 3, size, size): bilinear up, box-filtered down."""
    f = x.float() / 255
    if size > f.shape[-1]:
        f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
    else:
        f = downscale(f, size)
    return (f * 255).round_().clamp_(0, 255).to(torch.uint8)


def write_derived_store(store, out: Path | str, *, extra: list[tuple] = (),
                        resample_to: int | None = None, tag: str = "derived"):
    """A copy of ``store`` at ``out``, with each image optionally sent through ``resample_to``
    px (box-filtered down, bilinear up: the GAN's resolution) and ``extra`` images appended
    in the train split: ``(source name, uint8 (N, 3, s, s))`` (label 1, a generated fake)
    or ``(source name, images, label, prefix)``.

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
                                    shape=(len(store) + sum(len(e[1]) for e in extra), size, size, 3))
    for i in range(0, len(store), 1024):
        j = min(i + 1024, len(store))
        if resample_to:
            x = torch.from_numpy(np.array(store.images[i:j])).permute(0, 3, 1, 2)  # a writable copy
            arr[i:j] = resize_uint8(resize_uint8(x, resample_to), size).permute(0, 2, 3, 1).numpy()
        else:
            arr[i:j] = store.images[i:j]
    rows = [dict(r) for r in store.rows]
    i = len(store)
    for source, imgs, *more in extra:
        label, prefix = more if more else (1, "gan")
        arr[i:i + len(imgs)] = resize_uint8(imgs, size).permute(0, 2, 3, 1).numpy()
        rows += [{"row": i + j, "relpath": f"{prefix}/{source}/{j:05d}", "source": source, "label": label,
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


def write_control_store(store, gan_size: int, n_per_class: int, out: Path | str, seed: int = 9100):
    """The store plus ``n_per_class`` train images of each source, resampled through ``gan_size``
    px and back like the GAN's images, under their own source names and labels (train split):
    the control for :func:`write_augmented_store` (as many extra images, none from the GAN)."""
    rng = np.random.default_rng(seed)
    extra = []
    for k, c in enumerate(store.source_names):
        rows = np.flatnonzero((store.split == "train") & (store.source_ids == k))
        pick = np.sort(rng.choice(rows, n_per_class, replace=n_per_class > len(rows)))
        x, y, _ = store.batch(pick)
        extra.append((c, resize_uint8(x, gan_size), int(y[0]), "control"))
    return write_derived_store(store, out, extra=extra, tag=f"control{n_per_class}-{gan_size}px")


def write_resampled_store(store, size: int, out: Path | str):
    """The store with every image sent through ``size`` px and back (what GAN images go through)."""
    return write_derived_store(store, out, resample_to=size, tag=f"resampled{size}")
