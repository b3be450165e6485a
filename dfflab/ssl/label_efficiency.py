"""Label efficiency: does SSL pretraining help when labels are scarce?

    dfflab ssl label-efficiency --preset quick                 # newest simclr and byol runs
    dfflab ssl label-efficiency --ssl-runs results/runs/...-ssl-simclr results/runs/...-ssl-byol

Fine-tunes the centralized detector (``dfflab.centralized.train.train_detector``) with
each share of the training labels in ``ssl.label-fractions`` from each init (scratch
and every SSL run), and writes, into a run folder of stage ``label-efficiency``:
``label_efficiency.md`` / ``.json`` (test AUROC and accuracy per init and fraction)
and ``label_efficiency.png`` (test AUROC against the label fraction, one line per init).
Without ``--ssl-runs`` the newest finished simclr and byol runs made with the same
``[data]``, ``[model]`` and ``[ssl]`` settings are used, and missing ones are pretrained
first, so the whole experiment is one command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from dfflab.config import ConfigError
from dfflab.runs import Run, atomic_write_text, find_finished, list_runs, write_json
from dfflab.ssl.sweep import derive, markdown_table, open_sweep


def label_efficiency(cfg, ssl_runs: list[str] | None = None, *, seeds: int = 1, note: str = "",
                     parent: str | None = None, store=None, resume: bool = True, progress: bool = True,
                     train_fn: Callable | None = None) -> Run:
    """Run the experiment; returns its ``label-efficiency`` run.

    Args:
        ssl_runs: SSL run folders or backbone files (default: newest simclr and byol).
        seeds: fine-tuning seeds per (init, fraction) cell; the table shows mean and std.
        train_fn: ``train_detector``-compatible function (default: the centralized one).
    """
    train_fn = train_fn or _train_detector()
    fractions = _fractions(cfg.ssl.label_fractions)
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    spec = {"ssl_runs": ssl_runs, "fractions": fractions, "seeds": seeds}
    note = note or "Label efficiency: test AUROC with 1/10/100% of training labels, SSL init vs scratch."
    sweep, done = open_sweep(cfg, "label-efficiency", "label-efficiency", spec,
                             fingerprint=store.fingerprint, parent=parent, note=note, resume=resume)
    inits = {"scratch": "scratch", **_ssl_inits(cfg, ssl_runs, sweep, store, progress)}
    sweep.update_record(inits=inits)
    for frac in fractions:
        for init_name, init in inits.items():
            for seed in range(seeds):
                cell = f"{init_name}-f{frac:g}-s{seed}"
                if cell in done:
                    continue
                child_cfg = derive(cfg, {"train.label-frac": frac, "train.init": init,
                                         "train.seed": cfg.train.seed + seed})
                child = _reusable(cfg.results, child_cfg, store.fingerprint) or train_fn(
                    child_cfg, name=f"le-{cell}", parent=sweep.name, store=store, progress=progress,
                    resume=resume, note=f"label efficiency cell: {frac:.0%} of labels, init {init_name}")
                test = child.summary()["test"]
                done[cell] = {"cell": cell, "init": init_name, "fraction": frac, "seed": seed,
                              "test_auroc": test["auroc"], "test_accuracy": test["accuracy"],
                              "run": child.name}
                sweep.log_metrics(done[cell])
    rows = [done[c] for c in done]
    _write_outputs(sweep, rows, list(inits), fractions)
    return sweep


def _reusable(results, child_cfg, fingerprint: str) -> Run | None:
    """A finished detector run of any name with this cell's config and data: the cell's own
    ``le-`` run, or for the 100% cells the plain detector that ``dfflab centralized train`` and
    the pipeline already trained (training is deterministic, so retraining gives the same numbers)."""
    return find_finished(results, "centralized", None, child_cfg, fingerprint=fingerprint)


def _fractions(values: list[str]) -> list[float]:
    try:
        fractions = [float(f) for f in values]
    except ValueError:
        raise ConfigError(f"ssl.label-fractions must be numbers, got {values}") from None
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"ssl.label-fractions must lie in (0, 1], got {values}")
    return fractions


def _train_detector() -> Callable:
    try:
        from dfflab.centralized.train import train_detector
    except ImportError as e:
        raise RuntimeError("label efficiency needs dfflab.centralized.train.train_detector, "
                           f"which is not available in this checkout ({e})") from None
    return train_detector


def _ssl_inits(cfg, ssl_runs, sweep, store, progress) -> dict[str, str]:
    """{init name: run folder or .pt} from ``ssl_runs``, or the newest fitting simclr/byol runs."""
    if ssl_runs:
        out = {}
        for r in ssl_runs:
            p = Path(r)
            label = Run.open(p).summary().get("method", p.name) if p.is_dir() else p.stem
            out[label if label not in out else p.name] = str(p)
        return out
    from dfflab.ssl.pretrain import pretrain

    out = {}
    for method in ("simclr", "byol"):
        run = _newest_fitting(cfg, method, store.fingerprint)
        if run is None:
            run = pretrain(derive(cfg, {"ssl.method": method}), parent=sweep.name, store=store,
                           progress=progress, note="pretrained for the label-efficiency experiment")
        out[method] = str(run.dir)
    return out


def _newest_fitting(cfg, method: str, fingerprint: str) -> Run | None:
    """The newest finished SSL run with ``cfg``'s data, model and ssl settings (``method``'s).

    ``[train]`` may differ (threads, device): it doesn't change what pretraining learns.
    """
    want = derive(cfg, {"ssl.method": method}).to_dict()
    for run in reversed(list_runs(cfg.results, "ssl")):
        c = run.config
        if (run.finished and run.record.get("dataset_fingerprint") == fingerprint
                and all(c[k] == want[k] for k in ("data", "model", "ssl"))
                and run.path("backbone.pt").is_file()):
            return run
    return None


def _write_outputs(sweep: Run, rows: list[dict], inits: list[str], fractions: list[float]) -> None:
    """Markdown table, JSON and plot of test AUROC per init and label fraction."""
    cells = {}
    for init in inits:
        for f in fractions:
            vals = [r for r in rows if r["init"] == init and float(r["fraction"]) == f]
            au = np.array([float(r["test_auroc"]) for r in vals])
            acc = np.array([float(r["test_accuracy"]) for r in vals])
            cells[(init, f)] = {"init": init, "fraction": f, "n_seeds": len(vals),
                                "test_auroc": float(au.mean()), "test_auroc_std": float(au.std()),
                                "test_accuracy": float(acc.mean()), "runs": [r["run"] for r in vals]}

    def show(c):
        return f"{c['test_auroc']:.3f}" + (f" ± {c['test_auroc_std']:.3f}" if c["n_seeds"] > 1 else "")

    table = markdown_table(["init"] + [f"{f:.0%} labels" for f in fractions],
                           [[i] + [show(cells[(i, f)]) for f in fractions] for i in inits])
    seeds = max(c["n_seeds"] for c in cells.values())
    atomic_write_text(sweep.path("label_efficiency.md"),
                      "# Label efficiency: test AUROC of the fine-tuned detector\n\n"
                      + (f"Mean ± std over {seeds} fine-tuning seeds.\n\n" if seeds > 1 else "")
                      + table)
    write_json(sweep.path("label_efficiency.json"), list(cells.values()))
    _plot(sweep.path("label_efficiency.png"), cells, inits, fractions)
    sweep.write_summary({"cells": list(cells.values()), "inits": inits, "fractions": fractions})


def _plot(path: Path, cells: dict, inits: list[str], fractions: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for init in inits:
        c = [cells[(init, f)] for f in fractions]
        ax.errorbar([100 * f for f in fractions], [v["test_auroc"] for v in c],
                    yerr=[v["test_auroc_std"] for v in c], marker="o", capsize=3, label=init)
    ax.set_xscale("log")
    ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("training labels used")
    seeds = max(c["n_seeds"] for c in cells.values())
    ax.set_ylabel("test AUROC" + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else ""))
    ax.set_title("Label efficiency: SSL init vs scratch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
