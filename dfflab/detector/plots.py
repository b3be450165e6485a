"""Figures of a detector run: ROC, PR, confusion matrix, training curves, heatmaps.

Every function takes plain numbers or a :class:`~dfflab.train.core.Predictions` and
writes one PNG, so figures can be redrawn from a run folder without retraining.
Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    binary_roc,
)

from dfflab.files import pyplot, save_figure

plt = pyplot()


def _subsets(pred, source_names: list[str]):
    """("all", mask) then (source, its fakes + all reals) for each fake source present."""
    real = pred.labels == 0
    yield "all", torch.ones_like(real)
    for i, name in enumerate(source_names):
        fake = (pred.source_ids == i) & (pred.labels == 1)
        if fake.any() and real.any():
            yield name, real | fake


def plot_roc(
    pred, source_names: list[str], path: Path | str, title: str = "ROC (test)"
) -> Path:
    """ROC curves overall and per fake source (each source's fakes vs the reals)."""
    from dfflab.metrics import binary_metrics

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, m in _subsets(pred, source_names):
        s, y = pred.probs[m].float(), pred.labels[m].long()
        fpr, tpr, _ = binary_roc(s, y)
        auc = binary_metrics(s, y)["auroc"]
        ax.plot(
            fpr, tpr, lw=2 if name == "all" else 1.2, label=f"{name} (AUROC {auc:.3f})"
        )
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate (reals called fake)",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path, dpi=110)


def plot_pr(
    pred,
    source_names: list[str],
    path: Path | str,
    title: str = "Precision-recall (test)",
) -> Path:
    """Precision-recall curves overall and per fake source; fakes are the positive class."""
    from dfflab.metrics import binary_metrics

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, m in _subsets(pred, source_names):
        s, y = pred.probs[m].float(), pred.labels[m].long()
        prec, rec, _ = binary_precision_recall_curve(s, y)
        ap = binary_metrics(s, y)["ap"]
        ax.plot(
            rec, prec, lw=2 if name == "all" else 1.2, label=f"{name} (AP {ap:.3f})"
        )
    ax.set(
        xlabel="recall (fakes caught)",
        ylabel="precision",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=8, loc="lower left")
    return save_figure(fig, path, dpi=110)


def plot_confusion(
    metrics: dict, path: Path | str, threshold: float, title: str = "Confusion (test)"
) -> Path:
    """The 2x2 confusion matrix (counts and row shares) at ``threshold``."""
    cm = [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]]
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(
        [[c / max(1, sum(row)) for c in row] for row in cm],
        cmap="Blues",
        vmin=0,
        vmax=1,
    )
    for i in range(2):
        for j in range(2):
            share = cm[i][j] / max(1, sum(cm[i]))
            ax.text(
                j,
                i,
                f"{cm[i][j]}\n{share:.1%}",
                ha="center",
                va="center",
                color="white" if share > 0.5 else "black",
            )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["real", "fake"],
        yticklabels=["real", "fake"],
        xlabel="predicted",
        ylabel="true",
        title=f"{title}\nthreshold p(fake) >= {threshold:.3f}",
    )
    return save_figure(fig, path, dpi=110)


def plot_training(rows: list[dict], path: Path | str) -> Path:
    """Loss and AUROC per epoch from metrics.csv rows (test AUROC is shown, never used)."""
    ep = [r["epoch"] for r in rows]
    ev = [r for r in rows if r.get("val_auroc") is not None]  # epochs that were validated (train.eval-every)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.4))
    a.plot(ep, [r["train_loss"] for r in rows], label="train")
    a.plot([r["epoch"] for r in ev], [r["val_loss"] for r in ev], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend()
    b.plot([r["epoch"] for r in ev], [r["val_auroc"] for r in ev], label="val (selects the model)")
    b.plot([r["epoch"] for r in ev], [r["test_auroc"] for r in ev], ls="--", label="test (reported only)")
    b.set(xlabel="epoch", ylabel="AUROC", title="AUROC")
    b.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def plot_crossgen(
    matrix: dict[str, dict[str, float]],
    logo: dict[str, dict[str, float]],
    path: Path | str,
) -> Path:
    """Left: train-source x test-source AUROC heatmap. Right: leave-one-out bars."""
    rows = list(matrix)
    cols = sorted(
        {c for r in matrix.values() for c in r},
        key=lambda c: (c not in rows, rows.index(c) if c in rows else c),
    )
    fig, (a, b) = plt.subplots(
        1, 2, figsize=(9, 3.8), gridspec_kw={"width_ratios": [1, 1.1]}
    )
    vals = [[matrix[r].get(c, float("nan")) for c in cols] for r in rows]
    im = a.imshow(vals, cmap="viridis", vmin=0.5, vmax=1.0)
    for i, row in enumerate(vals):
        for j, v in enumerate(row):
            a.text(
                j,
                i,
                f"{v:.3f}",
                ha="center",
                va="center",
                color="white" if v < 0.8 else "black",
            )
    a.set(
        xticks=range(len(cols)),
        xticklabels=cols,
        yticks=range(len(rows)),
        yticklabels=rows,
        xlabel="test fakes",
        ylabel="trained on (reals + one source)",
        title="test AUROC",
    )
    fig.colorbar(im, ax=a, fraction=0.046)
    held = list(logo)
    x = range(len(held))
    b.bar(
        [i - 0.2 for i in x],
        [logo[h]["auroc_in_dist"] for h in held],
        0.4,
        label="in-distribution",
    )
    b.bar(
        [i + 0.2 for i in x],
        [logo[h]["auroc_held_out"] for h in held],
        0.4,
        label="held-out source",
    )
    b.set(
        xticks=list(x),
        xticklabels=held,
        xlabel="held-out source (trained on the other two)",
        ylabel="test AUROC",
        ylim=(0.4, 1.0),
        title="leave one generator out",
    )
    b.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path, dpi=110)


def plot_robustness(result: dict, path: Path | str) -> Path:
    """Test AUROC under each distortion and strength, with the clean AUROC as a line."""
    items = result["distortions"]
    fig, ax = plt.subplots(figsize=(max(5, 0.65 * len(items) + 2), 3.8))
    ax.bar(range(len(items)), [d["auroc"] for d in items], color="tab:orange")
    ax.axhline(
        result["clean"]["auroc"],
        c="tab:blue",
        ls="--",
        label=f"clean {result['clean']['auroc']:.3f}",
    )
    ax.set_xticks(
        range(len(items)),
        [d["label"] for d in items],
        rotation=45,
        ha="right",
        fontsize=8,
    )
    ax.set(ylabel="test AUROC", ylim=(0.4, 1.0), title="robustness to distortions")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)
