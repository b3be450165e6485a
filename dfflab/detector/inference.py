"""Inference for ``dfflab detect``: score image files with any trained detector.

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
bits, :func:`detect_uncertainty`); ``--abstain`` marks images above the abstain threshold
``uncertain`` instead of forcing a label (the threshold `dfflab uq evaluate` fitted on
validation and stored in the checkpoint, or ``--abstain-entropy``). Any detector
checkpoint works: centralized, federated (global or client model), crossgen fold,
ensemble member.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfflab.data.layout import IMAGE_SUFFIXES
from dfflab.files import csv_text
from dfflab.metrics import binary_entropy

DETECT_METHODS = ("temperature", "mc-dropout")
DEFAULT_ABSTAIN_ENTROPY = 0.9  # bits: abstains when 0.32 < p(fake) < 0.68, used before any fit


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
    """``path,p_fake,decision,error,uncertainty``, one row per file (blank where there is no score)."""
    rows = [{"path": d.path, "p_fake": "" if d.p_fake is None else f"{d.p_fake:.6f}", "decision": d.decision,
             "error": d.error, "uncertainty": "" if d.uncertainty is None else f"{d.uncertainty:.6f}"} for d in dets]
    return csv_text(rows, ["path", "p_fake", "decision", "error", "uncertainty"])


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


# -- uncertainty and abstaining ------------------------------------------------------------
@torch.no_grad()
def detect_uncertainty(model: nn.Module, ckpt: dict, x: torch.Tensor, method: str = "temperature",
                       passes: int | None = None, score: str = "entropy") -> tuple[torch.Tensor, torch.Tensor]:
    """(p(fake), uncertainty), each (B,), for a float image batch ``x`` (B, 3, S, S) in [0, 1].

    Args:
        model: the detector, on ``x``'s device.
        ckpt: its checkpoint dict (``temperature``, and ``uq`` once evaluated).
        method: ``temperature`` (one pass, logits / T) or ``mc-dropout`` (``passes``
            stochastic passes, default the checkpoint's fitted ``uq.mc_samples`` or 20).
        score: ``entropy`` (predictive entropy, bits) or, with mc-dropout,
            ``mutual-info`` (its epistemic part).
    """
    if method not in DETECT_METHODS:
        raise ValueError(f"unknown detect uncertainty method '{method}' (known: {', '.join(DETECT_METHODS)})")
    if score not in ("entropy", "mutual-info") or (score == "mutual-info" and method != "mc-dropout"):
        raise ValueError(f"score '{score}' needs method mc-dropout (entropy works with both)")
    was_training = model.training
    model.eval()
    try:
        if method == "temperature":
            p = torch.sigmoid(model(x).float() / float(ckpt.get("temperature", 1.0)))
            return p, binary_entropy(p)
        t = passes or int(ckpt.get("uq", {}).get("mc_samples", 20))
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        member = torch.sigmoid(torch.stack([model(x).float() for _ in range(t)]))  # (T, B)
        p = member.mean(0)
        h = binary_entropy(p)
        if score == "entropy":
            return p, h
        return p, (h - binary_entropy(member).mean(0)).clamp(min=0)
    finally:
        model.train(was_training)


def should_abstain(uncertainty: torch.Tensor, threshold: float) -> torch.Tensor:
    """True where the image is too uncertain to label (uncertainty above ``threshold``)."""
    return uncertainty > threshold


def decision_threshold(ckpt: dict, method: str = "temperature") -> float:
    """The p(fake) threshold on the scale :func:`detect_uncertainty` returns.

    The checkpoint's threshold was chosen on uncalibrated validation scores;
    temperature scaling maps it monotonically (the decisions stay the same). For
    mc-dropout, the threshold `uq evaluate` chose on validation, if fitted.
    """
    thr = float(ckpt.get("threshold", 0.5))
    if method == "mc-dropout":
        return float(ckpt.get("uq", {}).get("thresholds", {}).get("mc-dropout", thr))
    return calibrated_threshold(thr, float(ckpt.get("temperature", 1.0)))


def abstain_threshold(ckpt: dict, method: str = "temperature", ucfg=None, score: str = "entropy") -> float:
    """The uncertainty (bits) above which ``detect --abstain`` abstains.

    For entropy: ``uq.abstain-entropy`` if set (> 0), else the threshold `uq evaluate`
    fitted on validation for ``uq.coverage``, else :data:`DEFAULT_ABSTAIN_ENTROPY`.
    For mutual-info only the fitted threshold exists.

    Raises:
        ValueError: mutual-info asked for but never fitted for this checkpoint.
    """
    key = score.replace("-", "_")
    if key == "entropy" and ucfg is not None and ucfg.abstain_entropy > 0:
        return float(ucfg.abstain_entropy)
    fitted = ckpt.get("uq", {}).get("abstain", {}).get(method, {})
    if key in fitted:
        return float(fitted[key])
    if key == "entropy":
        return DEFAULT_ABSTAIN_ENTROPY
    raise ValueError(f"no {score} abstain threshold in this checkpoint: run `dfflab uq evaluate` on its run first")
