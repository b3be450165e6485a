"""Results of the federated runs against the centralized baseline: curves against samples,
sequential optimizer steps and epochs per client; the table at the end of training with paired
verdicts; the centralized run at matched budgets; FedBN per client; re-estimated BatchNorm;
the federated recipe search."""

from __future__ import annotations

from dfflab.report import plots
from dfflab.report.cells import ci, table
from dfflab.report.chains import chain_table
from dfflab.report.collect import RunInfo, fmt, get
from dfflab.report.context import Context
from dfflab.report.describe_federated import epochs_per_client, local_steps
from dfflab.report.results_central import METRIC_HEAD, metric_cells, seed_cell, verdict_cell

SEARCH_CHAIN = "fl-recipe"


def central_at(base: RunInfo, *, epochs: float | None = None, steps: float | None = None) -> dict | None:
    """The baseline's logged test AUROC at ``epochs`` (that epoch) or at ``steps`` (the last logged
    epoch with at most that many steps): ``{"epoch", "steps", "test_auroc"}``."""
    rows = [r for r in base.rows if r.get("test_auroc") is not None and r.get("epoch") is not None]
    if epochs is not None:
        rows = [r for r in rows if r["epoch"] <= epochs]
    if steps is not None:
        rows = [r for r in rows if (r.get("steps") or 0) <= steps]
    if not rows:
        return None
    r = rows[-1]
    return {"epoch": r["epoch"], "steps": r.get("steps"), "test_auroc": r["test_auroc"]}


def _at(c: dict | None, base: RunInfo) -> str:
    if c:
        return f"{c['test_auroc']:.3f} (epoch {c['epoch']}, {c['steps']} steps)"
    first = next((r for r in base.rows if r.get("test_auroc") is not None), None)
    return f"– (first logged: epoch {first.get('epoch')}, {first.get('steps')} steps)" if first else "–"


def budget_rows(ctx: Context, base: RunInfo, runs: list[RunInfo]) -> list[list]:
    rows = []
    for r in runs:
        e, s = epochs_per_client(r), local_steps(r)
        rows.append([r.name, fmt(e), s, r.summary.get("samples"), ci(r.summary.get("test"), "auroc"),
                     _at(central_at(base, epochs=e), base) if e is not None else "–",
                     _at(central_at(base, steps=s), base) if s is not None else "–"])
    return rows


def fedbn_lines(r: RunInfo) -> list[str]:
    pc = r.summary.get("per_client") or {}
    clients = pc.get("clients") or {}
    if not clients:
        return []
    rows = [[p, get(c, "own_source.source", "mixed"), ci(c.get("test"), "auroc"), ci(c.get("own_source"), "auroc"),
             ci(c.get("test"), "balanced_accuracy")] for p, c in clients.items()]
    mean, worst = pc.get("mean") or {}, pc.get("worst") or {}
    rows.append(["mean", "", fmt(mean.get("auroc")), fmt(pc.get("mean_own_source_auroc")),
                 fmt(mean.get("balanced_accuracy"))])
    rows.append([f"worst (client {worst.get('client')})", "", fmt(worst.get("auroc")), "",
                 fmt(worst.get("balanced_accuracy"))])
    return ([f"**{r.name} scored as used** ({r.link}): FedBN never produces one global model; each client deploys "
             "the global weights with its own BatchNorm layers. Each such model on the global test set and on its "
             "own source (test reals against its generator's test fakes):", ""]
            + table(["client", "its source", "test AUROC [95% CI]", "own-source AUROC", "bal. acc."], rows))


def bn_lines(runs: list[RunInfo]) -> list[str]:
    rows = [[r.name, ci(r.summary.get("test"), "auroc"), ci(get(r.summary, "test_bn_reestimated.test"), "auroc"),
             get(r.summary, "test_bn_reestimated.images"), r.link] for r in runs if r.summary.get("test_bn_reestimated")]
    if not rows:
        return []
    return (["Global models with averaged BatchNorm statistics (which are no data's statistics) against the same "
             "model with its BatchNorm statistics re-estimated on the server's validation images. No paired scores "
             "are kept for the re-estimated model, so the two are not compared for significance:", ""]
            + table(["run", "test AUROC (averaged BN)", "test AUROC (BN re-estimated)", "validation images",
                     "run folder"], rows))


def local_only_lines(runs: list[RunInfo]) -> list[str]:
    out = []
    for r in runs:
        clients = r.summary.get("clients") or {}
        if r.summary.get("strategy") != "local-only" or not clients:
            continue
        rows = [[p, ci(c.get("test"), "auroc"), *(ci(get(c, f"test_per_source.{s}"), "auroc")
                                                 for s in sorted(c.get("test_per_source", {})))]
                for p, c in clients.items()]
        srcs = sorted(next(iter(clients.values())).get("test_per_source", {}))
        out += [f"**{r.name}** ({r.link}): each client alone, scored on the global test set; the headline is the "
                f"mean over clients, {ci(r.summary.get('test'), 'auroc')} (interval of the mean: each resample scores "
                "every client on the same draw). There are no paired test scores of the mean, so it is not compared "
                "for significance.", ""]
        out += table(["client", "test AUROC [95% CI]", *srcs], rows)
    return out


def federated_section(ctx: Context) -> list[str]:
    """3.2 and 3.3."""
    lines = ["### 3.2 Centralized vs federated", ""]
    base_g = ctx.baseline()
    fed_g = ctx.groups("federated")
    if not base_g and not fed_g:
        return lines + ["No centralized or federated runs yet.", ""]
    curves = [g[0] for g in ctx.groups("centralized")] + [g[0] for g in fed_g]
    p = plots.curves(curves, ctx.plots / "central_vs_federated.png")
    if p:
        lines += [f"![test AUROC against samples, sequential optimizer steps and epochs per client](plots/{p.name})",
                  ""]
    if not fed_g:
        return lines + ["No federated runs yet.", ""]
    base = base_g[0] if base_g else None
    rows = []
    for g in fed_g:
        r = g[0]
        comp = ctx.paired(g, base_g) if base else None
        rows.append([r.name] + metric_cells(r.summary.get("test")) + [seed_cell(g), verdict_cell(comp), r.link])
    if base:
        rows.insert(0, [f"{base.name} (centralized)"] + metric_cells(base.summary.get("test"))
                    + [seed_cell(base_g), "baseline", base.link])
    lines += ["Global models after the last round (threshold on the server's validation rows), against the centralized "
              "baseline on the same test images (paired bootstrap):", ""]
    lines += table(["run", *METRIC_HEAD, "seeds", "AUROC − centralized [95% CI]: verdict", "run folder"], rows)
    if base:
        lines += [f"Budgets: each federated run's epochs per client and sequential optimizer steps, and the centralized "
                  f"baseline's logged test AUROC (metrics.csv, no interval) after the same epochs and after at most "
                  f"the same steps ({base.summary.get('steps_per_epoch')} steps per centralized epoch):", ""]
        lines += table(["run", "epochs per client", "sequential steps", "samples", "test AUROC [95% CI]",
                        "centralized at equal epochs", "centralized at ≤ equal steps"],
                       budget_rows(ctx, base, [g[0] for g in fed_g]))
    src = ctx.find("federated", "fedavg-source")
    others = [g for g in fed_g if src and g[0].name != src.name and g[0].summary.get("partitioning") == "source"
              and g[0].summary.get("strategy") != "local-only"]
    if src and others:
        src_g = ctx.seeds("federated", src.name)
        lines += ["Strategies on the same by-source clients against FedAvg (paired):", ""]
        lines += table(["run", "AUROC − fedavg-source [95% CI]: verdict"],
                       [[g[0].name, verdict_cell(ctx.paired(g, src_g))] for g in others])
    for g in fed_g:
        lines += fedbn_lines(g[0])
    lines += bn_lines([g[0] for g in fed_g])
    lines += local_only_lines([g[0] for g in fed_g])
    lines += ["### 3.3 Federated recipe search", ""]
    found = chain_table(ctx, SEARCH_CHAIN)
    lines += found or ["Not run (`dfflab federated search`; the pipeline runs it with `pipeline.fl-search`).", ""]
    return lines
