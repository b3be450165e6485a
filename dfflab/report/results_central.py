"""Results of the centralized detectors: the headline table with intervals and paired verdicts,
per-source and cross-generator results, robustness and the shortcut audit."""

from __future__ import annotations

from dfflab.report import plots
from dfflab.report.cells import ci, diff, table
from dfflab.report.collect import RunInfo, fmt, get
from dfflab.report.context import Context

METRIC_HEAD = ["test AUROC [95% CI]", "AP", "bal. acc.", "EER"]


def metric_cells(m: dict | None) -> list[str]:
    return [ci(m, k) for k in ("auroc", "ap", "balanced_accuracy", "eer")]


def seed_cell(group: list[RunInfo], path: str = "test.auroc") -> str:
    """``mean ± std (k seeds)`` of a seed group, or '1 seed'."""
    from dfflab.evidence import seed_spread

    vals = [get(r.summary, path) for r in group if get(r.summary, path) is not None]
    if len(vals) < 2:
        return f"{len(vals)} seed"
    s = seed_spread(vals)
    return f"{s['mean']:.3f} ± {s['std']:.3f} ({s['n_seeds']} seeds)"


def verdict_cell(comp: dict | None) -> str:
    return f"{diff(comp)}: {comp['verdict']}" if comp else "–"


def centralized_section(ctx: Context) -> list[str]:
    """3.1: every headline centralized detector with its intervals, against the baseline (paired)."""
    lines = ["### 3.1 Centralized detectors", ""]
    groups, base = ctx.groups("centralized"), ctx.baseline()
    if not groups:
        return lines + ["No centralized runs yet.", ""]
    rows = []
    for g in groups:
        r = g[0]
        comp = ctx.paired(g, base) if g is not base and g[0].name != base[0].name else None
        rows.append([r.name] + metric_cells(r.summary.get("test")) + [seed_cell(g), verdict_cell(comp), r.link])
    n_test = get(base[0].summary, "sizes.test")
    lines += [f"Test metrics of the selected epoch at the validation threshold, on {fmt(n_test)} test images "
              f"(first seed; the seed column gives the mean ± std over seeds). The last columns compare each detector "
              f"with the baseline `{base[0].name}` on the same test images (paired bootstrap):", ""]
    lines += table(["run", *METRIC_HEAD, "seeds", f"AUROC − {base[0].name} [95% CI]: verdict", "run folder"], rows)
    lines += ctx.img(base[0].file("training.png"), "training.png", f"training curves of {base[0].name}")
    return lines


def per_source_section(ctx: Context) -> list[str]:
    """3.4: test AUROC per generator, and the cross-generator protocol."""
    lines = ["### 3.4 Per-source and cross-generator results", ""]
    heads = [g[0] for s in ("centralized", "federated") for g in ctx.groups(s)]
    sources = sorted({s for r in heads for s in (r.summary.get("test_per_source") or {})})
    if sources:
        lines += ["Test AUROC [95% CI] on each generator's fakes against all test reals:", ""]
        lines += table(["run", *sources, "run folder"],
                       [[r.name] + [ci(get(r.summary, f"test_per_source.{s}"), "auroc") for s in sources] + [r.link]
                        for r in heads if r.summary.get("test_per_source")])
        p = plots.per_source_bars(heads, ctx.plots / "per_source.png")
        if p:
            lines += [f"![per-source test AUROC with 95% intervals](plots/{p.name})", ""]
    xg = ctx.stage("crossgen")
    if not xg:
        return lines + ["Cross-generator protocol not run (`dfflab centralized crossgen`).", ""]
    x = xg[-1]
    lines += [f"Cross-generator protocol ({x.link}): a detector trained on one source (rows) scored on each "
              "source (columns); then leave one generator out of training and test on it.", ""]
    lines += ctx.img(x.file("crossgen.png"), "crossgen.png", "cross-generator AUROC")
    matrix = get(x.summary, "matrix") or {}
    if matrix:
        children = job_runs(ctx, x)
        tested = sorted({t for row in matrix.values() for t in row})
        lines += ["Test AUROC [95% CI]; rows: trained on reals + that source, columns: fakes tested:", ""]
        lines += table(["trained on", *tested, "run folder"],
                       [[s] + [ci(get(children[f"xgen-{s}"].summary, f"test_per_source.{t}"), "auroc")
                               if f"xgen-{s}" in children else fmt(row.get(t)) for t in tested]
                        + [children[f"xgen-{s}"].link if f"xgen-{s}" in children else "–"]
                        for s, row in matrix.items()])
    logo = logo_rows(ctx, x)
    if logo:
        lines += table(["held out", "AUROC on its unseen fakes [95% CI]", "AUROC in distribution", "gap",
                        "run folder"], [[h, ci(m, "auroc"), fmt(g["auroc_in_dist"]), f"{g['gap']:+.3f}",
                                         child.link if child else "–"] for h, (g, m, child) in logo.items()])
    return lines


def job_runs(ctx: Context, x: RunInfo) -> dict[str, RunInfo]:
    """{job name (``xgen-<source>``, ``logo-<source>``): its child run} of a crossgen run."""
    out = {}
    for row in x.rows:
        child = ctx.folders.get(str(row.get("child_run") or ""))
        if child is not None and row.get("job"):
            out[str(row["job"])] = child
    return out


def logo_rows(ctx: Context, x: RunInfo) -> dict:
    """{held-out source: (crossgen's logo entry, the child's metrics on that source, child RunInfo)}."""
    children = job_runs(ctx, x)
    out = {}
    for h, g in (get(x.summary, "logo") or {}).items():
        child = children.get(f"logo-{h}")
        m = get(child.summary, f"test_per_source.{h}") if child else None
        out[h] = (g, m or {"auroc": g.get("auroc_held_out")}, child)
    return out


def robustness_section(ctx: Context) -> list[str]:
    """3.5: distortions of the test images, and the metadata shortcut audit."""
    from dfflab.report.collect import read_optional_json

    lines = ["### 3.5 Robustness and shortcut audit", ""]
    base = (ctx.baseline() or [None])[0]
    rob = read_optional_json(base.file("robustness.json")) if base else None
    if rob:
        rows = [["clean", "", ci(rob["clean"], "auroc"), ""]]
        rows += [[d["name"], f"{d['param']}={d['strength']}", ci(d, "auroc"), f"{-d['auroc_drop']:+.3f}"]
                 for d in rob["distortions"]]
        lines += [f"Detector {base.link} on {rob['n_test']} test images degraded after training (nothing re-tuned):",
                  ""]
        lines += table(["distortion", "strength", "test AUROC", "change"], rows)
        lines += ctx.img(base.file("robustness.png"), "robustness.png", "robustness")
    audit = get(base.summary, "audit") if base else None
    if audit:
        meta = audit.get("metadata", {})
        pix = audit.get("pixels", {})
        lines += [f"**Shortcut audit.** A classifier on metadata alone ({', '.join(meta.get('features', []))}) "
                  f"reaches test AUROC {fmt(meta.get('auroc'))}; the detector, which sees only identically cropped "
                  f"and resized pixels, reaches {fmt(audit.get('detector_auroc'))}. Pixel check: "
                  f"{pix.get('identical', '–')} of {pix.get('checked', '–')} re-decoded files identical to the "
                  "store.", "", f"> {audit.get('message', '')}", ""]
    if not rob and not audit:
        lines += ["Not run.", ""]
    return lines


