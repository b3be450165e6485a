"""The privacy results, read from finished run folders only (no training here).

    dfflab federated privacy-tables --preset quick      # newest runs of this preset's data

* **Inits for federated fine-tuning**: FedAvg by source from scratch, from the centralized SSL
  backbone and from the federated SSL backbone (the fully federated path): test AUROC with
  its 95% interval, and each paired difference (:func:`dfflab.evidence.paired_difference` on
  the runs' ``test_scores.npz``; "better"/"worse" only when its interval excludes zero).
* **Privacy-utility**: each DP-FedAvg run's epsilon (at its delta), noise multiplier and clip
  beside its test AUROC with interval and its paired difference from non-private FedAvg;
  ``privacy_utility.png`` plots test AUROC against epsilon.

Run names are the pipeline's (``fedavg-source``, ``fedavg-source-<method>-init``,
``fedavg-source-fed<method>-init``, ``dp-fedavg-source-z<z>``).
"""

from __future__ import annotations

import math
from pathlib import Path

from dfflab.files import markdown_table, pyplot, save_figure
from dfflab.runs import Run, find_run

BASE = "fedavg-source"


def _auroc(run: Run) -> tuple[float, list]:
    t = run.summary()["test"]
    return t["auroc"], t.get("auroc_ci", [math.nan, math.nan])


def _paired(a: Run, b: Run, resamples: int) -> dict:
    from dfflab.detector.scoring import load_scored
    from dfflab.evidence import paired_difference

    return paired_difference(load_scored(a.path("test_scores.npz")), load_scored(b.path("test_scores.npz")),
                             "auroc", n_resamples=resamples)


def init_comparison(runs: dict[str, Run], resamples: int = 1000) -> list[dict]:
    """One row per init (``runs``: label -> finished federated run; the first is the reference)."""
    labels = list(runs)
    rows = []
    for i, label in enumerate(labels):
        run = runs[label]
        auroc, ci = _auroc(run)
        row = {"init": label, "run": run.name, "test_auroc": auroc, "auroc_ci": ci}
        for other in labels[:i]:
            row[f"vs {other}"] = _paired(run, runs[other], resamples)
        rows.append(row)
    return rows


def privacy_utility(dp_runs: list[Run], base: Run | None, resamples: int = 1000) -> list[dict]:
    """One row per DP run (sorted by epsilon), the non-private ``base`` first with epsilon inf."""
    rows = []
    for run in ([base] if base else []) + dp_runs:
        s = run.summary()
        dp = s.get("dp")
        auroc, ci = _auroc(run)
        row = {"run": run.name, "noise_multiplier": dp["noise_multiplier"] if dp else None,
               "clip": dp["clip"] if dp else None, "delta": dp["delta"] if dp else None,
               "epsilon": s["epsilon"] if dp else math.inf, "private": dp is not None and dp["noise_multiplier"] > 0,
               "test_auroc": auroc, "auroc_ci": ci}
        if base is not None and run is not base:
            row["vs non-private"] = _paired(run, base, resamples)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["epsilon"], r["run"]))


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _diff(d: dict | None) -> str:
    return "" if not d else f"{d['diff']:+.3f} {_ci(d['ci'])} ({d['verdict']})"


def init_table(rows: list[dict]) -> str:
    labels = [r["init"] for r in rows]
    header = ["init", "test AUROC", "95% CI", *(f"vs {x} (paired)" for x in labels[:-1]), "run"]
    return markdown_table(header, [[r["init"], r["test_auroc"], _ci(r["auroc_ci"]),
                                    *(_diff(r.get(f"vs {x}")) for x in labels[:-1]), r["run"]] for r in rows])


def privacy_table(rows: list[dict]) -> str:
    header = ["noise z", "clip C", "delta", "epsilon", "test AUROC", "95% CI", "vs non-private (paired)", "run"]
    return markdown_table(header, [[r["noise_multiplier"] if r["noise_multiplier"] is not None else "none",
                                    r["clip"] if r["clip"] is not None else "none", r["delta"] or "",
                                    f"{r['epsilon']:.3g}", r["test_auroc"], _ci(r["auroc_ci"]),
                                    _diff(r.get("vs non-private")), r["run"]] for r in rows])


def plot_privacy_utility(rows: list[dict], path: Path | str) -> Path | None:
    """Test AUROC (95% interval) against epsilon (log scale) for the private runs; the non-private
    and clipping-only runs as horizontal references."""
    private = [r for r in rows if r["private"] and math.isfinite(r["epsilon"])]
    if not private:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    eps = [r["epsilon"] for r in private]
    au = [r["test_auroc"] for r in private]
    err = [[r["test_auroc"] - r["auroc_ci"][0] for r in private], [r["auroc_ci"][1] - r["test_auroc"] for r in private]]
    ax.errorbar(eps, au, yerr=err, marker="o", capsize=3, label="DP-FedAvg (z = " +
                ", ".join(f"{r['noise_multiplier']:g}" for r in private) + ")")
    for r, style in ((next((r for r in rows if r["noise_multiplier"] is None), None), "--"),
                     (next((r for r in rows if r["noise_multiplier"] == 0), None), ":")):
        if r is not None:
            ax.axhline(r["test_auroc"], ls=style, color="grey",
                       label="non-private FedAvg" if style == "--" else f"clipping only (C = {r['clip']:g})")
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel(f"epsilon at delta = {private[0]['delta']:g} (client-level, after all rounds)")
    ax.set_ylabel("test AUROC (95% CI)")
    ax.set_title("Privacy-utility of DP-FedAvg (by source)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def find_privacy_runs(cfg, methods=("simclr", "byol")) -> tuple[dict[str, Run], list[Run], Run | None]:
    """(inits to compare, DP runs, the non-private base) among the finished runs of ``cfg.results``."""
    from dfflab.runs import list_runs

    base = find_run(cfg.results, "federated", name=BASE)
    inits = {"scratch": base} if base else {}
    for m in methods:
        for label, name in ((f"centralized {m}", f"{BASE}-{m}-init"), (f"federated {m}", f"{BASE}-fed{m}-init")):
            run = find_run(cfg.results, "federated", name=name)
            if run is not None:
                inits[label] = run
    newest: dict[str, Run] = {}
    for run in list_runs(cfg.results, "federated"):
        if run.finished and run.record.get("name", "").startswith(f"dp-{BASE}-z"):
            newest[run.record["name"]] = run  # list_runs is oldest first
    return inits, list(newest.values()), base
