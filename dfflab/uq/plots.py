"""Figures of ``dfflab uq evaluate``, drawn from the numbers stored in ``uq.json``.

Every function takes the ``methods`` part of a ``uq.json`` and writes one PNG, so the
figures can be redrawn from a run folder without scoring anything again. Matplotlib
runs headless (Agg).
"""

from __future__ import annotations

import math
from pathlib import Path

from dfflab.files import pyplot, save_figure

plt = pyplot()


def plot_reliability(methods: dict[str, dict], path: Path | str) -> Path:
    """One reliability diagram per method (test): share of fakes against mean p(fake) per bin."""
    names = list(methods)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.5 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        m = methods[name]["test"]
        b = m["reliability"]
        n = len(b["edges"]) - 1
        width = 1 / n
        centers = [b["edges"][i] + width / 2 for i in range(n)]
        # bin n holds p == 1 exactly (as in torchmetrics' ECE); draw it at the top bin's place
        frac, mean, cnt = list(b["frac_fake"][:n]), list(b["mean_prob"][:n]), list(b["count"][:n])
        if b["count"][n]:
            tot = cnt[-1] + b["count"][n]
            frac[-1] = (frac[-1] * cnt[-1] + b["frac_fake"][n] * b["count"][n]) / tot
            mean[-1] = (mean[-1] * cnt[-1] + b["mean_prob"][n] * b["count"][n]) / tot
            cnt[-1] = tot
        shown = [i for i in range(n) if cnt[i]]
        x = [centers[i] for i in shown]
        ax.bar(x, [frac[i] for i in shown], width=width * 0.95, color="tab:blue", alpha=0.75,
               label="share of fakes")
        # the ECE's per-bin term: the gap between the share of fakes and the mean p(fake)
        ax.bar(x, [abs(frac[i] - mean[i]) for i in shown], bottom=[min(frac[i], mean[i]) for i in shown],
               width=width * 0.95, fill=False, edgecolor="tab:red", hatch="///", lw=0.8,
               label="gap to mean p(fake)")
        for i in shown:  # few images make a bin's bar noise; say how many
            ax.text(centers[i], 0.01, str(cnt[i]), ha="center", va="bottom", fontsize=5, rotation=90,
                    color="white")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="p(fake)", ylabel="share of fakes",
               title=f"{name}\nECE {m['ece']:.3f}  NLL {m['nll']:.3f}  Brier {m['brier']:.3f}")
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return save_figure(fig, path, dpi=110)


def plot_risk_coverage(methods: dict[str, dict], path: Path | str) -> Path:
    """Risk-coverage curves (test), abstaining on predictive entropy (solid) or mutual information (dashed)."""
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for i, (name, m) in enumerate(methods.items()):
        color = f"C{i}"
        for score, style in (("entropy", "-"), ("mutual_info", "--")):
            sel = m["test"]["selective"].get(score)
            if sel is None:
                continue
            c = sel["curve"]
            ax.plot(c["coverage"], c["risk"], ls=style, c=color, lw=1.5,
                    label=f"{name} / {score} (AURC {sel['aurc']:.4f})")
    ax.set(xlabel="coverage (share of images kept)", ylabel="risk (error rate of kept images)",
           xlim=(0, 1), title="Selective prediction (test)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def plot_unseen(unseen: dict[str, dict], path: Path | str) -> Path:
    """Separation AUROC of each uncertainty score (held-out vs seen generators' fakes), per method."""
    held = list(unseen)
    fig, axes = plt.subplots(1, len(held), figsize=(4.8 * len(held), 3.6), squeeze=False)
    for ax, h in zip(axes.flat, held, strict=True):
        labels, values = [], []
        for method, r in unseen[h].items():
            for score, v in r["separation_auroc"].items():
                labels.append(f"{method}\n{score}")
                values.append(v)
        ax.bar(range(len(values)), values, color=["C0" if "entropy" in s else "C1" for s in labels])
        ax.axhline(0.5, ls=":", c="grey")
        ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=45, ha="right")
        ax.set(ylim=(0, 1), ylabel="AUROC held-out vs seen fakes", title=f"held out: {h}")
    return save_figure(fig, path, dpi=110)
