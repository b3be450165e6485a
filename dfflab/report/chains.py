"""How the models evolved: recorded evolution chains (each step judged against its parent by a
paired interval, :mod:`dfflab.evolution`) and the parent links every run records."""

from __future__ import annotations

from dfflab.report import plots
from dfflab.report.cells import ci, interval, signed, table
from dfflab.report.collect import RunInfo, get
from dfflab.report.context import Context

# Headline metric per stage for the parent-link tables: (label, key in summary, higher is better)
HEADLINES = {
    "centralized": ("test AUROC", "test.auroc", True),
    "federated": ("test AUROC", "test.auroc", True),
    "ssl": ("kNN real/fake acc. (test)", "knn.knn_real_fake_acc_test", True),
}


def chain_names(ctx: Context) -> list[str]:
    out: list[str] = []
    for r in ctx.all_runs():
        c = r.evolution.get("chain")
        if c and c not in out:
            out.append(c)
    return out


def chain_steps(ctx: Context, chain: str) -> list[RunInfo]:
    """The finished steps of ``chain`` in step order (:func:`dfflab.evolution.chain_runs`)."""
    from dfflab.evolution import chain_runs

    return [ctx.folders[r.name] for r in chain_runs(ctx.results, chain) if r.name in ctx.folders]


def step_value(r: RunInfo, metric: str) -> str:
    """The step's own value of the chain's metric with its interval (detector: ``test``; GAN: top level)."""
    if isinstance(get(r.summary, f"test.{metric}"), int | float):
        return ci(r.summary["test"], metric)
    if isinstance(r.summary.get(metric), int | float):
        return ci(r.summary, metric, 1 if metric.startswith(("fid", "kid")) and r.summary[metric] > 10 else 3)
    return "–"


def chain_metric(steps: list[RunInfo]) -> str:
    for r in steps:
        comp = r.evolution.get("comparison") or {}
        if comp.get("metric"):
            return comp["metric"]
    return "auroc" if any(get(r.summary, "test.auroc") is not None for r in steps) else "fid"


def chain_table(ctx: Context, chain: str) -> list[str]:
    """One row per step: what it changes and why, its metric, the paired comparison with its
    parent, and whether it was accepted."""
    steps = chain_steps(ctx, chain)
    if not steps:
        return []
    metric = chain_metric(steps)
    digits = 1 if metric.startswith("fid") else 4 if metric.startswith("kid") else 3
    label = {"auroc": "test AUROC", "fid": "FID", "kid": "KID"}.get(metric, metric)
    rows = []
    for r in steps:
        e = r.evolution
        comp = e.get("comparison") or {}
        vs = ctx.folders.get(comp.get("vs", ""))
        rows.append([e.get("step"), r.link, e.get("change", ""), e.get("reason", ""), step_value(r, metric),
                     vs.name if vs else comp.get("vs", "–") or "–",
                     f"{signed(comp['diff'], digits)} {interval(comp.get('ci'), digits, signed=True)}"
                     if "diff" in comp else "–",
                     comp.get("verdict", "first step" if not comp else "–"),
                     {True: "accepted", False: "rejected"}.get(e.get("accepted"), "–")])
    accepted = [r for r in steps if r.evolution.get("accepted")]
    lines = [f"Chain `{chain}`: {len(steps)} step(s), {len(accepted)} accepted. A step is accepted only when its "
             f"{label} is significantly better than the last accepted step's (paired interval excludes zero); the "
             "next step starts from the last accepted one.", ""]
    lines += table(["step", "run", "change", "reason (read off the parent)", f"{label} [95% CI]", "vs",
                    "difference [95% CI]", "verdict", "outcome"], rows)
    if accepted:
        lines += [f"Result of the chain: {accepted[-1].link} ({accepted[-1].evolution.get('change', '')}).", ""]
    return lines


def evolution_section(ctx: Context, done: set[str]) -> list[str]:
    """3.9: chains not shown elsewhere, then each stage's parent links with paired comparisons."""
    lines = ["### 3.9 How the models evolved", "",
             "Each run names its parent and says what it changes and why. For detectors the change is a paired "
             "difference on the same test images with its 95% interval; other stages have no paired scores, so "
             "their change is a bare difference and carries no verdict.", ""]
    for chain in chain_names(ctx):
        if chain not in done:
            lines += [f"#### Chain `{chain}`", ""] + chain_table(ctx, chain)
    series: dict[str, list[tuple[str, float | None]]] = {}
    labels: dict[str, str] = {}
    for stage, (label, key, higher) in HEADLINES.items():
        runs = [g[0] for g in ctx.groups(stage) if get(g[0].summary, key) is not None]
        if not runs:
            continue
        rows = []
        for r in runs:
            parent = ctx.parent_of(r)
            change, verdict = "–", "–"
            if parent is not None and stage in ("centralized", "federated") and parent.stage in HEADLINES:
                comp = ctx.paired(ctx.seeds(r.stage, r.name), ctx.seeds(parent.stage, parent.name))
                if comp:
                    change, verdict = f"{signed(comp['diff'])} {interval(comp['ci'], signed=True)}", comp["verdict"]
            elif parent is not None and get(parent.summary, key) is not None:
                change = f"{signed(get(r.summary, key) - get(parent.summary, key))} (no interval)"
            rows.append([r.name, parent.name if parent else "–", ci(get(r.summary, key.rsplit('.', 1)[0])
                                                                    if "." in key else r.summary, key.rsplit(".", 1)[-1]),
                         change, verdict, r.note])
        labels[stage] = label
        series[stage] = [(r.name, get(r.summary, key)) for r in runs]
        lines += [f"#### {stage} ({label}, {'higher' if higher else 'lower'} is better)", ""]
        lines += table(["run", "parent", label, "change vs parent [95% CI]", "verdict", "why (the run's note)"], rows)
    p = plots.evolution(series, labels, ctx.plots / "evolution.png")
    if p:
        lines += [f"![evolution](plots/{p.name})", ""]
    return lines
