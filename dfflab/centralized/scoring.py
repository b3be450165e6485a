"""Scoring a detector on store rows: metrics overall and per source, at a threshold.

:func:`score` takes a model in memory (the trainer's per-epoch val/test scoring);
:func:`evaluate_checkpoint` loads a ``detector.pt`` first (crossgen, robustness, tests);
:func:`metrics_table` prints the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dfflab.device import prepare_model
from dfflab.metrics import binary_metrics, choose_threshold, per_source_metrics
from dfflab.models import load_detector
from dfflab.train.core import evaluate, predict

EVAL_BATCH = 256
SHOWN = (
    "accuracy",
    "balanced_accuracy",
    "auroc",
    "ap",
    "eer",
    "f1",
    "precision",
    "recall",
)


def score(
    model,
    store,
    rows,
    device,
    *,
    threshold: float | None = None,
    loss_fn=None,
    amp: bool = True,
) -> tuple[dict, dict, object, float]:
    """(overall, per_source, predictions, threshold); ``threshold=None`` chooses it on these rows."""
    pred = predict(model, store.batches(rows, EVAL_BATCH), device, amp=amp)
    thr = choose_threshold(pred.probs, pred.labels) if threshold is None else threshold
    overall = binary_metrics(pred.probs, pred.labels, thr)
    if loss_fn is not None:
        overall["loss"] = float(
            loss_fn(pred.logits.to(device), pred.labels.float().to(device))
        )
    return (
        overall,
        per_source_metrics(
            pred.probs, pred.labels, pred.source_ids, store.source_names, thr
        ),
        pred,
        thr,
    )


def evaluate_checkpoint(
    ckpt_path: str | Path,
    store,
    rows: np.ndarray,
    device: torch.device | str = "cpu",
    *,
    threshold: float | None = None,
    transform=None,
    amp: bool = True,
    batch_size: int = EVAL_BATCH,
) -> tuple[dict, dict, object]:
    """Score a detector checkpoint on store ``rows`` at its own (val-chosen) threshold.

    Args:
        threshold: overrides the checkpoint's threshold.
        transform: applied to float images on the device first (robustness distortions).

    Returns:
        (overall metrics, {source: metrics}, Predictions) as :func:`dfflab.train.core.evaluate`.
    """
    device = torch.device(device) if isinstance(device, str) else device
    model, ckpt = load_detector(ckpt_path)
    if int(ckpt["image_size"]) != store.image_size:
        raise ValueError(
            f"{ckpt_path}: trained on {ckpt['image_size']} px images but the store "
            f"{store.path} holds {store.image_size} px; set data.image-size={ckpt['image_size']}"
        )
    model = prepare_model(model, device)
    thr = float(ckpt.get("threshold", 0.5)) if threshold is None else threshold
    return evaluate(
        model,
        store.batches(rows, batch_size),
        device,
        store.source_names,
        threshold=thr,
        amp=amp,
        transform=transform,
    )


def metrics_table(overall: dict, per_source: dict, title: str = "") -> str:
    """A fixed-width table: one line overall, one per fake source."""
    head = f"{'':<12}" + "".join(f"{k[:9]:>10}" for k in SHOWN)
    lines = [title, head] if title else [head]
    for name, m in [("all", overall), *per_source.items()]:
        lines.append(
            f"{name:<12}" + "".join(f"{m.get(k, float('nan')):>10.4f}" for k in SHOWN)
        )
    return "\n".join(lines)
