"""``dfflab detect``: score image files with a trained detector.

    dfflab detect photo.jpg folder/ --checkpoint results/runs/<run>/detector.pt --out scores.csv

Each file is decoded, centre-cropped and resized exactly as ``dfflab data prepare`` did
for training (:func:`~dfflab.data.reader.decode` + :func:`~dfflab.data.reader.crop_resize`),
so the detector sees what it was trained on. Folders are searched recursively for
images. Output: a CSV (path, p_fake, decision at the checkpoint's val-chosen threshold,
error) and a table on the terminal. When ``dfflab uq`` stored a temperature in the
checkpoint, p_fake is calibrated and the threshold is mapped onto the same scale, so the
decisions are still the ones chosen on validation. Unreadable files get an ``error`` row and a line
on stderr; they never stop the others.

``--uq temperature|mc-dropout`` adds an ``uncertainty`` column (predictive entropy in
bits, :mod:`dfflab.uq.detect`); ``--abstain`` marks images above the abstain threshold
``uncertain`` instead of forcing a label (the threshold `dfflab uq evaluate` fitted on
validation, or ``--abstain-entropy``).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfflab.data.layout import IMAGE_SUFFIXES


@dataclass
class Detection:
    path: str
    p_fake: float | None = None
    decision: str = "error"  # "fake", "real", "uncertain" (with --abstain) or "error"
    error: str = ""
    uncertainty: float | None = (
        None  # predictive entropy in bits, with --uq / --abstain
    )


def expand_paths(paths: list[str]) -> tuple[list[Path], list[Detection]]:
    """Files named directly, plus images found under folders; missing paths become errors."""
    files, missing = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not f.name.startswith(".")
            )
        elif p.is_file():
            files.append(p)
        else:
            missing.append(Detection(str(p), error="no such file or folder"))
    return files, missing


def load_pixels(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8, as prepare makes them; raises BadImage/OSError."""
    from dfflab.data.reader import crop_resize, decode

    return crop_resize(decode(path.read_bytes(), str(path)).rgb, size)


def detect(
    paths: list[str],
    checkpoint: str | Path,
    device: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    uq: str | None = None,
    abstain: bool = False,
    abstain_entropy: float | None = None,
) -> tuple[list[Detection], dict]:
    """Score every image under ``paths``; returns (detections in input order, checkpoint info).

    Args:
        uq: ``temperature`` or ``mc-dropout``: also report each image's uncertainty.
        abstain: decide ``uncertain`` above the abstain threshold (implies ``uq``
            temperature unless given); ``abstain_entropy`` overrides the fitted one.
    """
    from tqdm import tqdm

    from dfflab.data.reader import BadImage
    from dfflab.device import autocast, prepare_model, resolve_device, to_device_images
    from dfflab.models import load_detector

    dev = resolve_device(device)
    model, ckpt = load_detector(checkpoint)
    model = prepare_model(model, dev)
    size, temp = int(ckpt["image_size"]), float(ckpt.get("temperature", 1.0))
    thr = calibrated_threshold(float(ckpt.get("threshold", 0.5)), temp)
    uq = uq or ("temperature" if abstain else None)
    if uq:
        from dfflab.uq.detect import (
            abstain_threshold,
            decision_threshold,
            detect_uncertainty,
        )

        thr = decision_threshold(ckpt, uq)
        cut = (
            abstain_entropy
            if abstain_entropy is not None
            else abstain_threshold(ckpt, uq)
        )
    files, out = expand_paths(paths)
    good: list[tuple[Detection, np.ndarray]] = []
    for f in tqdm(files, desc="decode", unit="img", disable=not progress, leave=False):
        try:
            good.append((Detection(str(f)), load_pixels(f, size)))
        except (
            BadImage,
            ValueError,
            OSError,
        ) as e:  # one bad file never stops the rest
            out.append(Detection(str(f), error=str(e) or type(e).__name__))
    with torch.no_grad():
        for i in range(0, len(good), batch_size):
            chunk = good[i : i + batch_size]
            x = to_device_images(
                torch.from_numpy(np.stack([px for _, px in chunk])), dev
            )  # (B, 3, S, S)
            if uq:
                p, u = (
                    t.cpu().tolist() for t in detect_uncertainty(model, ckpt, x, uq)
                )
            else:
                with autocast(dev):
                    p = torch.sigmoid(model(x).float() / temp).cpu().tolist()
                u = [None] * len(p)
            for (d, _), pf, uf in zip(chunk, p, u, strict=True):
                d.p_fake, d.decision = pf, "fake" if pf >= thr else "real"
                d.uncertainty = uf
                if abstain and uf > cut:
                    d.decision = "uncertain"
    order = {str(f): k for k, f in enumerate(files)}
    dets = sorted([d for d, _ in good] + out, key=lambda d: order.get(d.path, -1))
    return dets, {
        "checkpoint": str(checkpoint),
        "threshold": thr,
        "image_size": size,
        "temperature": temp,
        "uq": uq,
        "abstain_entropy": cut if abstain else None,
    }


def calibrated_threshold(threshold: float, temperature: float) -> float:
    """The val-chosen threshold (on p = sigmoid(z)) on the reported scale sigmoid(z / T).

    Temperature scaling (``dfflab uq``) is monotone, so decisions stay those chosen on
    validation; only the reported p(fake) is calibrated.
    """
    t = min(max(threshold, 1e-7), 1 - 1e-7)
    return 1 / (1 + math.exp(-math.log(t / (1 - t)) / temperature))


def to_csv(dets: list[Detection]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "p_fake", "decision", "error", "uncertainty"])
    for d in dets:
        w.writerow(
            [
                d.path,
                "" if d.p_fake is None else f"{d.p_fake:.6f}",
                d.decision,
                d.error,
                "" if d.uncertainty is None else f"{d.uncertainty:.6f}",
            ]
        )
    return buf.getvalue()


def table(dets: list[Detection], threshold: float, limit: int = 50) -> str:
    """A terminal table: decision, p(fake) and path, errors last, then counts."""
    ok = [d for d in dets if d.decision != "error"]
    width = min(70, max([len(d.path) for d in ok[:limit]] + [4]))
    lines = [
        f"{'decision':<9}{'p(fake)':>8}  path",
        f"{'-' * 9}{'-' * 8}  {'-' * width}",
    ]
    for d in ok[:limit]:
        lines.append(f"{d.decision:<9}{d.p_fake:>8.4f}  {d.path}")
    if len(ok) > limit:
        lines.append(f"... {len(ok) - limit} more in the CSV")
    n_fake = sum(d.decision == "fake" for d in ok)
    n_unsure = sum(d.decision == "uncertain" for d in ok)
    n_bad = len(dets) - len(ok)
    lines.append(
        f"{len(ok)} scored: {n_fake} fake, {len(ok) - n_fake - n_unsure} real at threshold p(fake) >= "
        f"{threshold:.3f}; {n_bad} unreadable"
        + (f"; {n_unsure} uncertain (abstained)" if n_unsure else "")
    )
    return "\n".join(lines)


def report_errors(dets: list[Detection]) -> None:
    for d in dets:
        if d.decision == "error":
            print(f"dfflab detect: skipped {d.path}: {d.error}", file=sys.stderr)
