"""The report's own figures, drawn from run records (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from dfflab.files import pyplot, save_figure
from dfflab.report.collect import RunInfo, get

plt = pyplot()

# x axes of the centralized-vs-federated curves: (label, value of a metrics.csv row of a run)
AXES = (
    ("training images processed (all clients)", lambda r, row: row.get("samples")),
    ("sequential optimizer steps", lambda r, row: row.get("steps")),
    ("epochs (per client)", lambda r, row: _epochs(r, row)),
)


def _epochs(r: RunInfo, row: dict):
    if row.get("epochs_per_client") is not None:
        return row["epochs_per_client"]
    if row.get("epoch") is not None:
        return row["epoch"]
    if row.get("round") is not None:  # local-only: rounds x local epochs
        return row["round"] * (r.summary.get("local_epochs") or get(r.config, "fl.local_epochs", 1) or 1)
    return None


def curves(runs: list[RunInfo], path: Path) -> Path | None:
    """Test AUROC against samples, sequential optimizer steps and epochs per client, one line per run."""
    runs = [r for r in runs if any(row.get("test_auroc") is not None for row in r.rows)]
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(AXES), figsize=(5 * len(AXES), 4), sharey=True)
    for r in runs:
        style = "-" if r.stage == "centralized" else "--"
        rows = [row for row in r.rows if row.get("test_auroc") is not None]
        for ax, (_, x) in zip(axes, AXES, strict=True):
            pts = [(x(r, row), row["test_auroc"]) for row in rows if x(r, row) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=".", label=f"{r.stage}: {r.name}")
    for ax, (label, _) in zip(axes, AXES, strict=True):
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test AUROC")
    handles, labels = axes[0].get_legend_handles_labels()
    # below the panels (bbox_inches="tight" makes room), so it hides no curve
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=min(5, len(labels)), bbox_to_anchor=(0.5, 0.0))
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def per_source_bars(runs: list[RunInfo], path: Path) -> Path | None:
    """Final test AUROC per fake source with its 95% interval, one group of bars per run."""
    runs = [r for r in runs if get(r.summary, "test_per_source")]
    if not runs:
        return None
    sources = sorted({s for r in runs for s in r.summary["test_per_source"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(runs) + 2), 4))
    width = 0.8 / len(sources)
    for j, s in enumerate(sources):
        vals = [get(r.summary, f"test_per_source.{s}.auroc", float("nan")) for r in runs]
        cis = [get(r.summary, f"test_per_source.{s}.auroc_ci") for r in runs]
        err = [[v - c[0] if c else 0 for v, c in zip(vals, cis, strict=True)],
               [c[1] - v if c else 0 for v, c in zip(vals, cis, strict=True)]]
        ax.bar([i + j * width for i in range(len(runs))], vals, width, yerr=err, capsize=2, label=s)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(runs))])
    ax.set_xticklabels([f"{r.stage[:4]}:{r.name}" for r in runs], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test AUROC (that source's fakes vs reals)")
    lo = min((v for r in runs for v in (get(r.summary, f"test_per_source.{s}.auroc") for s in sources)
              if v is not None), default=0.5)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def evolution(chains: dict[str, list[tuple[str, float | None]]], labels: dict[str, str], path: Path) -> Path | None:
    """One panel per stage: the headline metric along each chain of runs (parent -> child)."""
    chains = {k: v for k, v in chains.items() if any(m is not None for _, m in v)}
    if not chains:
        return None
    fig, axes = plt.subplots(1, len(chains), figsize=(4.2 * len(chains), 3.6), squeeze=False)
    for ax, (stage, chain) in zip(axes[0], chains.items(), strict=True):
        xs = list(range(len(chain)))
        ax.plot(xs, [m if m is not None else float("nan") for _, m in chain], marker="o")
        ax.set_xticks(xs)
        ax.set_xticklabels([n for n, _ in chain], rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{stage}: {labels.get(stage, '')}", fontsize=9)
        ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=110)


def metric_over_epochs(runs: list[RunInfo], keys: list[str], path: Path, xlabel: str = "epoch",
                       x: str = "epoch", title: str = "") -> Path | None:
    """Columns of metrics.csv over epochs (kNN accuracy, FID, ...), one line per run and key."""
    lines = [(r, k) for r in runs for k in keys if any(row.get(k) is not None for row in r.rows)]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r, k in lines:
        pts = [(row.get(x), row.get(k)) for row in r.rows if row.get(k) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"{r.name}: {k}")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)
