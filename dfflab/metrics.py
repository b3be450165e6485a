"""Detection metrics (torchmetrics), overall and per fake source, the threshold rule, entropy.

All functions take p(fake) scores and 0/1 labels as 1-D tensors. Per-source metrics
score each fake source's images against all reals of the same set, which is how the
DFF paper reports its per-generator AUROCs.
"""

from __future__ import annotations

import torch


def eer(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Equal error rate: where the false-positive and false-negative rates cross.

    Linear interpolation between the two ROC points that bracket the crossing.
    """
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(scores, labels.long())
    fnr = 1 - tpr
    diff = fpr - fnr  # increasing from <= 0 to >= 0 along the ROC
    i = int(torch.nonzero(diff >= 0)[0])
    if i == 0 or diff[i] == 0:
        return float((fpr[i] + fnr[i]) / 2)
    d0, d1 = float(diff[i - 1]), float(diff[i])
    t = d0 / (d0 - d1)
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, balanced accuracy, AUROC, AP, EER, F1, precision, recall and the confusion matrix.

    AUROC, AP and EER are threshold-free; the others use ``threshold`` on p(fake).
    With a single class present the ranking metrics are NaN.
    """
    # imported here: torchmetrics (with torchvision and torch._dynamo) costs seconds, paid only by
    # processes that score (not by a Flower client that only trains)
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_auroc,
        binary_average_precision,
        binary_confusion_matrix,
        binary_f1_score,
        binary_precision,
        binary_recall,
    )

    scores, labels = scores.float().cpu(), labels.long().cpu()
    cm = binary_confusion_matrix(scores, labels, threshold=threshold)  # [[tn, fp], [fn, tp]]
    tn, fp, fn, tp = (int(v) for v in cm.flatten())
    tpr = tp / (tp + fn) if tp + fn else float("nan")
    tnr = tn / (tn + fp) if tn + fp else float("nan")
    both = bool(labels.min() != labels.max())
    out = {
        "accuracy": float(binary_accuracy(scores, labels, threshold=threshold)),
        "balanced_accuracy": (tpr + tnr) / 2,
        "auroc": float(binary_auroc(scores, labels)) if both else float("nan"),
        "ap": float(binary_average_precision(scores, labels)) if both else float("nan"),
        "eer": eer(scores, labels) if both else float("nan"),
        "f1": float(binary_f1_score(scores, labels, threshold=threshold)),
        "precision": float(binary_precision(scores, labels, threshold=threshold)),
        "recall": float(binary_recall(scores, labels, threshold=threshold)),
        "tn": tn, "fp": fp, "fn": fn, "tp": tp, "n": len(labels),
    }
    return out


def per_source_metrics(scores: torch.Tensor, labels: torch.Tensor, source_ids: torch.Tensor,
                       source_names: list[str], threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """``{source: metrics of that source's fakes vs all reals}`` for each fake source present."""
    out = {}
    real = labels == 0
    for i, name in enumerate(source_names):
        fake = (source_ids == i) & (labels == 1)
        if fake.any() and real.any():
            m = real | fake
            out[name] = binary_metrics(scores[m], labels[m], threshold)
    return out


def binary_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of Bernoulli(p) in bits: 0 when certain, 1 at p = 0.5."""
    p = probs.double().clamp(1e-7, 1 - 1e-7)
    return -(p * p.log2() + (1 - p) * (1 - p).log2())  # float64: near 1 bit, float32 ties


def choose_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The p(fake) threshold maximising balanced accuracy (Youden's J) -- fit on validation only.

    Computed in float64: float32 would tie the near-0.5 p(fake) of a large temperature,
    so temperature scaling could move the decisions; float32 scores convert exactly.
    """
    from torchmetrics.functional.classification import binary_roc

    if labels.min() == labels.max():
        return 0.5
    fpr, tpr, thr = binary_roc(scores.double().cpu(), labels.long().cpu())
    i = int(torch.argmax(tpr - fpr))
    return float(min(max(thr[i].item(), 0.0), 1.0))


def flatten_metrics(metrics: dict[str, float], per_source: dict[str, dict[str, float]], prefix: str,
                    keys: tuple[str, ...] = ("accuracy", "balanced_accuracy", "auroc", "ap", "eer")) -> dict[str, float]:
    """``{prefix_auroc: .., prefix_auroc_text2img: ..}`` for one metrics.csv row."""
    row = {f"{prefix}_{k}": metrics[k] for k in keys if k in metrics}
    for src, m in per_source.items():
        row.update({f"{prefix}_{k}_{src}": m[k] for k in ("auroc", "accuracy") if k in m})
    return row
