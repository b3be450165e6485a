"""The privacy results, read from finished run folders only (no training here): a report section.

    dfflab federated privacy-tables --preset quick      # the same tables on the terminal

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


def _seed(run: Run) -> int:
    return int(run.config.get("train", {}).get("seed", 0))


def _scored(runs: list[Run]):
    from dfflab.detector.scoring import load_scored

    return [load_scored(r.path("test_scores.npz")) for r in runs]


def _paired(a: list[Run], b: list[Run], resamples: int) -> dict | None:
    """Paired difference over the seeds both sides have (paired by seed; seeds resampled too)."""
    from dfflab.evidence import paired_difference

    common = sorted({_seed(r) for r in a} & {_seed(r) for r in b})
    if not common:
        return None
    pick = lambda runs: [next(r for r in runs if _seed(r) == s) for s in common]  # noqa: E731
    return paired_difference(_scored(pick(a)), _scored(pick(b)), "auroc", n_resamples=resamples)


def _row(label: str, runs: list[Run]) -> dict:
    per = [_auroc(r) for r in runs]
    return {"label": label, "runs": [r.name for r in runs], "seeds": [_seed(r) for r in runs],
            "test_auroc": float(sum(a for a, _ in per) / len(per)), "per_seed": per}


def init_comparison(runs: dict[str, list[Run]], resamples: int = 1000) -> list[dict]:
    """One row per init (``runs``: label -> its finished federated runs, one per seed): mean test AUROC,
    each seed's with its interval, and the paired difference from every init listed before it."""
    labels = list(runs)
    rows = []
    for i, label in enumerate(labels):
        row = _row(label, runs[label])
        for other in labels[:i]:
            row[f"vs {other}"] = _paired(runs[label], runs[other], resamples)
        rows.append(row)
    return rows


def privacy_utility(dp_runs: list[Run], base: list[Run], resamples: int = 1000) -> list[dict]:
    """One row per DP run (sorted by epsilon), the non-private ``base`` runs (one per seed) first with
    epsilon inf; each DP run's paired difference from the base run of its seed."""
    rows = [{**_row("non-private", base), "noise_multiplier": None, "clip": None, "delta": None,
             "epsilon": math.inf, "private": False}] if base else []
    for run in dp_runs:
        s = run.summary()
        dp = s["dp"]
        row = {**_row(run.name, [run]), "noise_multiplier": dp["noise_multiplier"], "clip": dp["clip"],
               "delta": dp["delta"], "epsilon": s["epsilon"], "private": dp["noise_multiplier"] > 0}
        if base:
            row["vs non-private"] = _paired([run], base, resamples)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["epsilon"], r["label"]))


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _seeds(row: dict) -> str:
    return "; ".join(f"s{s}: {a:.3f} {_ci(ci)}" for s, (a, ci) in zip(row["seeds"], row["per_seed"], strict=True))


def _diff(d: dict | None) -> str:
    if not d:
        return ""
    seeds = f", {d['n_seeds']} seeds" if d["n_seeds"] > 1 else ""
    return f"{d['diff']:+.3f} {_ci(d['ci'])} ({d['verdict']}{seeds})"


def init_table(rows: list[dict]) -> str:
    labels = [r["label"] for r in rows]
    header = ["init", "test AUROC (seed mean)", "per seed [95% CI]", *(f"vs {x} (paired)" for x in labels[:-1]), "runs"]
    return markdown_table(header, [[r["label"], r["test_auroc"], _seeds(r),
                                    *(_diff(r.get(f"vs {x}")) for x in labels[:-1]), ", ".join(r["runs"])]
                                   for r in rows])


def privacy_table(rows: list[dict]) -> str:
    header = ["noise z", "clip C", "delta", "epsilon", "test AUROC", "per seed [95% CI]", "vs non-private (paired)",
              "runs"]
    def g(v):
        return "none" if v is None else f"{v:g}"

    return markdown_table(header, [[g(r["noise_multiplier"]), g(r["clip"]), g(r["delta"]),
                                    f"{r['epsilon']:.3g}", r["test_auroc"], _seeds(r),
                                    _diff(r.get("vs non-private")), ", ".join(r["runs"])] for r in rows])


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
    ci = [r["per_seed"][0][1] for r in private]  # one run per DP setting
    err = [[r["test_auroc"] - c[0] for r, c in zip(private, ci, strict=True)],
           [c[1] - r["test_auroc"] for r, c in zip(private, ci, strict=True)]]
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


def find_privacy_runs(results, methods=("simclr", "byol")) -> tuple[dict[str, list[Run]], list[Run], list[Run]]:
    """(inits to compare: label -> runs by seed, DP runs, the non-private base runs) under ``results``;
    everything on the data of the newest ``fedavg-source`` run."""
    from dfflab.runs import find_seeds, list_runs

    newest = find_run(results, "federated", name=BASE)
    if newest is None:
        return {}, [], []
    fp = newest.record.get("dataset_fingerprint")

    def seeds(name: str) -> list[Run]:
        return [r for r in find_seeds(results, "federated", name) if r.record.get("dataset_fingerprint") == fp]

    base = seeds(BASE)
    inits = {"scratch": base} if base else {}
    for m in methods:
        for label, name in ((f"centralized {m}", f"{BASE}-{m}-init"), (f"federated {m}", f"{BASE}-fed{m}-init")):
            runs = seeds(name)
            if runs:
                inits[label] = runs
    dp: dict[str, Run] = {}
    for run in list_runs(results, "federated"):
        if run.finished and run.record.get("name", "").startswith(f"dp-{BASE}-z") and \
                run.record.get("dataset_fingerprint") == fp:
            dp[f"{run.record['name']}@{_seed(run)}"] = run  # list_runs is oldest first
    return inits, list(dp.values()), base


def privacy_section(results, plots_dir, resamples: int) -> list[str]:
    """Report lines: the inits of federated fine-tuning (the fully federated path) and DP-FedAvg's
    privacy-utility table and plot; nothing when no such runs exist."""
    inits, dp_runs, base = find_privacy_runs(results)
    lines = []
    if len(inits) > 1:
        lines += ["### Fully federated path: which backbone to fine-tune federated", "",
                  "FedAvg by source from scratch, from the centralized SSL backbone and from the federated SSL "
                  "backbone (no image leaves a client at any stage); test AUROC with 95% intervals and paired "
                  "differences on the same test images.", "", init_table(init_comparison(inits, resamples)), ""]
    if dp_runs:
        rows = privacy_utility(dp_runs, base, resamples)
        lines += ["### Differential privacy: privacy against utility", "",
                  "DP-FedAvg by source (client-level clipping and Gaussian noise, Flower's wrappers; epsilon from "
                  "the RDP accountant of dp-accounting after the last round):", "", privacy_table(rows), ""]
        plot = plot_privacy_utility(rows, Path(plots_dir) / "privacy_utility.png")
        if plot:
            lines += [f"![privacy-utility](plots/{plot.name})", ""]
    return lines
