"""``dfflab compare RUN...``: centralized, federated and local-only runs side by side.

Reads only run folders (``metrics.csv``, ``summary.json``, ``config.json``) and writes
to ``<results>/compare/`` (or ``--out``):

* ``compare.png``             test AUROC against samples processed in epochs-equivalent
                              (training images seen / training-set size), against
                              sequential optimizer steps and against epochs per client,
                              one line per run;
* ``compare_per_source.png``  final test AUROC per fake source, one bar per run;
* ``compare.md``, ``compare.csv``  the table: final metrics with their 95% intervals,
                              per-source AUROC, epochs-equivalent, sequential steps,
                              epochs per client and wall time.

    dfflab compare results/runs/*-centralized-scratch results/runs/*-federated-*
"""

from __future__ import annotations

import math
from pathlib import Path

from dfflab.files import atomic_write_text, markdown_table, pyplot, save_figure, write_csv
from dfflab.runs import Run


def resolve_runs(names: list[str], results: Path | str) -> list[Run]:
    """Run folders from paths or folder names under ``<results>/runs``."""
    runs = []
    for name in names:
        p = Path(name)
        if not (p / "config.json").is_file():
            p = Path(results) / "runs" / name
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{name}: not a run folder (no config.json), nor one under "
                                    f"{Path(results) / 'runs'}")
        runs.append(Run.open(p))
    return runs


def label(run: Run) -> str:
    rec = run.record
    return f"{rec.get('stage', '?')}/{rec.get('name', run.name)}"


def train_images(run: Run) -> int:
    """Training-set size of a run (what one epoch-equivalent is)."""
    s = run.summary()
    if "sizes" in s:  # centralized
        return int(s["sizes"]["train"])
    if "partition" in s:  # federated and local-only: the clients' training rows
        return int(sum(p["images"] for p in s["partition"]))
    rows = [r for r in run.metrics() if r.get("samples")]
    return int(rows[0]["samples"]) if rows else 1


def wall_seconds(run: Run) -> float:
    """Wall time: the whole Flower launch for federated runs, the training loop otherwise."""
    flower = run.record.get("flower") or {}
    s = run.summary()
    return float(flower.get("wall_seconds") or s.get("seconds") or math.nan)


def epochs_per_client(run: Run, row: dict) -> float | None:
    """Epochs each client (or the one centralized trainer) had trained at a metrics row."""
    if row.get("epochs_per_client") is not None:
        return row["epochs_per_client"]
    if row.get("epoch") is not None:
        return row["epoch"]
    if row.get("round") is not None:  # local-only: rounds x local epochs
        return row["round"] * int(run.config.get("fl", {}).get("local_epochs", 1))
    return None


def table(runs: list[Run]) -> list[dict]:
    """One row per run: final test metrics (with intervals), per-source AUROC, epochs-equivalent,
    sequential steps, epochs per client, seconds."""
    out = []
    for run in runs:
        s = run.summary()
        rows = run.metrics()
        test = s.get("test", {})
        ci = test.get("auroc_ci") or [None, None]
        row = {"run": label(run), "folder": run.name,
               "test_accuracy": test.get("accuracy"), "test_balanced_accuracy": test.get("balanced_accuracy"),
               "test_auroc": test.get("auroc"), "test_auroc_lo": ci[0], "test_auroc_hi": ci[1],
               **{f"test_auroc_{src}": m.get("auroc") for src, m in s.get("test_per_source", {}).items()},
               "epochs_equivalent": (rows[-1]["samples"] / train_images(run)) if rows else None,
               "steps": s.get("steps") or (rows[-1].get("steps") if rows else None),
               "epochs_per_client": epochs_per_client(run, rows[-1]) if rows else None,
               "seconds": wall_seconds(run)}
        out.append(row)
    return out


def plot_curves(runs: list[Run], path: Path) -> None:
    """Test AUROC against epochs-equivalent samples, sequential optimizer steps and epochs per client."""
    plt = pyplot()
    axes_x = (("samples processed (epochs-equivalent)", lambda run, r, n: r["samples"] / n if r.get("samples")
               is not None else None),
              ("sequential optimizer steps", lambda run, r, n: r.get("steps")),
              ("epochs per client", lambda run, r, n: epochs_per_client(run, r)))
    fig, axes = plt.subplots(1, len(axes_x), figsize=(15, 4), sharey=True)
    for run in runs:
        n = train_images(run)
        rows = [r for r in run.metrics() if r.get("test_auroc") is not None]
        for ax, (_, fx) in zip(axes, axes_x, strict=True):
            pts = [(fx(run, r, n), r["test_auroc"]) for r in rows if fx(run, r, n) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label(run))
    for ax, (title, _) in zip(axes, axes_x, strict=True):
        ax.set_xlabel(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test AUROC")
    axes[-1].legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def plot_per_source(rows: list[dict], path: Path) -> None:
    import numpy as np

    plt = pyplot()
    sources = [k.removeprefix("test_auroc_") for k in rows[0] if k.startswith("test_auroc_")]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 2 + 1.5 * len(sources)), 4))
    for i, row in enumerate(rows):
        vals = [row.get(f"test_auroc_{s}") or np.nan for s in sources]
        ax.bar(np.arange(len(sources)) + i * width, vals, width, label=row["run"])
    ax.set_xticks(np.arange(len(sources)) + 0.4 - width / 2, sources)
    ax.set_ylabel("final test AUROC")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def markdown(rows: list[dict]) -> str:
    cols = [c for c in rows[0] if c != "folder"]
    return markdown_table(cols, [[r.get(c) for c in cols] for r in rows], cell=_fmt)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return "" if v is None else str(v)


def compare(runs: list[Run], out: Path | str) -> Path:
    """Write the comparison figures and table to ``out``; returns it."""
    if not runs:
        raise ValueError("compare needs at least one run folder")
    unfinished = [r.name for r in runs if not r.finished]
    if unfinished:
        raise ValueError(f"runs without summary.json (unfinished or crashed): {', '.join(unfinished)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = table(runs)
    plot_curves(runs, out / "compare.png")
    plot_per_source(rows, out / "compare_per_source.png")
    atomic_write_text(out / "compare.md", markdown(rows))
    write_csv(out / "compare.csv", rows)
    return out
