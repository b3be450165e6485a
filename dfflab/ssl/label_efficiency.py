"""Label efficiency: does SSL pretraining help when labels are scarce?

    dfflab ssl label-efficiency --preset quick                 # newest simclr and byol runs
    dfflab ssl label-efficiency --ssl-runs results/runs/...-ssl-simclr results/runs/...-ssl-byol

Fine-tunes the detector (:func:`dfflab.detector.trainer.train_detector`) with
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

from dfflab.config import ConfigError, derive
from dfflab.files import atomic_write_text, markdown_table, pyplot, save_figure, write_json
from dfflab.runs import Run, find_run
from dfflab.ssl.sweep import finish_sweep, open_sweep


def label_efficiency(cfg, ssl_runs: list[str] | None = None, *, seeds: int | None = None, note: str = "",
                     parent: str | None = None, store=None, resume: bool = True, progress: bool = True,
                     train_fn: Callable | None = None) -> Run:
    """Run the experiment; returns its ``label-efficiency`` run.

    Args:
        ssl_runs: SSL run folders or backbone files (default: newest simclr and byol).
        seeds: fine-tuning seeds per (init, fraction) cell (default ``ssl.label-seeds``).
        train_fn: ``train_detector``-compatible function (default: the centralized one).
    """
    train_fn = train_fn or _train_detector()
    fractions = _fractions(cfg.ssl.label_fractions)
    seeds = cfg.ssl.label_seeds if seeds is None else seeds
    if cfg.ssl.label_budget not in ("steps", "epochs"):
        raise ConfigError(f"ssl.label-budget must be steps or epochs, got {cfg.ssl.label_budget!r}")
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    spec = {"ssl_runs": ssl_runs, "fractions": fractions, "seeds": seeds, "budget": cfg.ssl.label_budget}
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
                                         "train.seed": cfg.train.seed + seed,
                                         **budget_overrides(cfg, store, frac)})
                child = _reusable(cfg.results, child_cfg, store.fingerprint) or train_fn(
                    child_cfg, name=f"le-{cell}", parent=sweep.name, store=store, progress=progress,
                    resume=resume, note=f"label efficiency cell: {frac:.0%} of labels, init {init_name}")
                s = child.summary()
                test = s["test"]
                done[cell] = {"cell": cell, "init": init_name, "fraction": frac, "seed": seed,
                              "test_auroc": test["auroc"], "test_auroc_lo": test.get("auroc_ci", [None])[0],
                              "test_auroc_hi": test.get("auroc_ci", [None, None])[1],
                              "test_accuracy": test["accuracy"], "steps": s.get("steps"), "run": child.name}
                sweep.log_metrics(done[cell])
    rows = [done[c] for c in done]
    _write_outputs(sweep, rows, list(inits), fractions, cfg.train.bootstrap, cfg.ssl.label_budget)
    return sweep


def budget_overrides(cfg, store, frac: float) -> dict:
    """The settings that give a ``frac`` cell the full-label run's optimizer steps (``ssl.label-budget=steps``):
    epochs, warmup and the validation interval scaled by (full-label steps per epoch) / (this cell's)."""
    from dfflab.detector.recipe import steps_per_epoch
    from dfflab.detector.rows import select_rows

    t = cfg.train
    if cfg.ssl.label_budget != "steps" or frac >= 1:
        return {}
    full = steps_per_epoch(len(select_rows(store, t)["train"]), t.batch_size)[0]
    part = steps_per_epoch(len(select_rows(store, derive(cfg, {"train.label-frac": frac}).train)["train"]),
                           t.batch_size)[0]
    k = max(1, round(full / part))
    return {"train.epochs": t.epochs * k, "train.warmup-epochs": t.warmup_epochs * k,
            "train.eval-every": t.eval_every * k}


def _reusable(results, child_cfg, fingerprint: str) -> Run | None:
    """A finished detector run of any name with this cell's config and data: the cell's own
    ``le-`` run, or for the 100% cells the plain detector that ``dfflab centralized train`` and
    the pipeline already trained (training is deterministic, so retraining gives the same numbers)."""
    return find_run(results, "centralized", cfg=child_cfg, fingerprint=fingerprint)


def _fractions(values: list[str]) -> list[float]:
    try:
        fractions = [float(f) for f in values]
    except ValueError:
        raise ConfigError(f"ssl.label-fractions must be numbers, got {values}") from None
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"ssl.label-fractions must lie in (0, 1], got {values}")
    return fractions


def _train_detector() -> Callable:
    from dfflab.detector.trainer import train_detector

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
    """The newest finished SSL run of ``method`` with ``cfg``'s settings and data, with a backbone."""
    return find_run(cfg.results, "ssl", cfg=derive(cfg, {"ssl.method": method}), fingerprint=fingerprint,
                    where=lambda r: r.path("backbone.pt").is_file())


def _write_outputs(sweep: Run, rows: list[dict], inits: list[str], fractions: list[float], resamples: int,
                   budget: str) -> None:
    """Markdown table, JSON and plot of test AUROC per init and label fraction, with intervals and
    each SSL init's paired comparison against scratch at the same fraction."""
    from dfflab.detector.scoring import load_scored
    from dfflab.evidence import paired_difference, seed_spread

    runs_dir = sweep.dir.parent
    cells, comparisons = {}, []
    for init in inits:
        for f in fractions:
            vals = sorted((r for r in rows if r["init"] == init and float(r["fraction"]) == f), key=lambda r: r["seed"])
            spread = seed_spread([float(r["test_auroc"]) for r in vals])
            one = Run.open(runs_dir / vals[0]["run"]).summary()["test"]
            cells[(init, f)] = {"init": init, "fraction": f, "n_seeds": len(vals), "test_auroc": spread["mean"],
                                "test_auroc_std": spread["std"], "test_auroc_ci": one.get("auroc_ci"),
                                "test_accuracy": float(np.mean([float(r["test_accuracy"]) for r in vals])),
                                "steps": vals[0].get("steps"), "runs": [r["run"] for r in vals]}
    for f in fractions:
        base = [load_scored(runs_dir / r / "test_scores.npz") for r in cells[("scratch", f)]["runs"]]
        for init in inits:
            if init == "scratch":
                continue
            other = [load_scored(runs_dir / r / "test_scores.npz") for r in cells[(init, f)]["runs"]]
            k = min(len(base), len(other))
            comparisons.append({"fraction": f, "init": init, "vs": "scratch",
                                **paired_difference(other[:k], base[:k], "auroc", max(resamples, 200))})

    def show(c):
        text = f"{c['test_auroc']:.3f}"
        if c["n_seeds"] > 1:
            return text + f" ± {c['test_auroc_std']:.3f} ({c['n_seeds']} seeds)"
        return text + (f" [{c['test_auroc_ci'][0]:.3f}, {c['test_auroc_ci'][1]:.3f}]" if c["test_auroc_ci"] else "")

    table = markdown_table(["init"] + [f"{f:.0%} labels" for f in fractions],
                           [[i] + [show(cells[(i, f)]) for f in fractions] for i in inits])
    vs = markdown_table(["labels", "init", "AUROC - scratch", "95% CI (paired)", "verdict"],
                        [[f"{c['fraction']:.0%}", c["init"], f"{c['diff']:+.3f}",
                          f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]", c["verdict"]] for c in comparisons])
    atomic_write_text(sweep.path("label_efficiency.md"),
                      "# Label efficiency: test AUROC of the fine-tuned detector\n\n"
                      "Test AUROC with its 95% stratified-bootstrap interval (or mean ± std over seeds); "
                      + ("every fraction made the same optimizer steps as the full-label run" if budget == "steps"
                         else "every fraction trained the same epochs (so fewer steps with fewer labels)")
                      + f" (ssl.label-budget={budget}).\n\n"
                      + table + "\nSSL init against scratch at the same fraction (paired bootstrap on the same test "
                      "images; with seeds, seeds resampled too):\n\n" + vs)
    write_json(sweep.path("label_efficiency.json"), list(cells.values()))
    _plot(sweep.path("label_efficiency.png"), cells, inits, fractions)
    finish_sweep(sweep, {"cells": list(cells.values()), "comparisons": comparisons, "inits": inits,
                         "fractions": fractions})


def _plot(path: Path, cells: dict, inits: list[str], fractions: list[float]) -> None:
    plt = pyplot()
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
    save_figure(fig, path)
