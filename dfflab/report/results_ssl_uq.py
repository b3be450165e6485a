"""Results of SSL pretraining, label efficiency and uncertainty."""

from __future__ import annotations

from dfflab.report import plots
from dfflab.report.cells import diff, interval, secs, table
from dfflab.report.collect import fmt, get, read_optional_json
from dfflab.report.context import Context


def ssl_section(ctx: Context) -> list[str]:
    """3.6: frozen-feature probes of each SSL run, the views experiment, label efficiency."""
    lines = ["### 3.6 Self-supervised pretraining and label efficiency", ""]
    # centralized SSL runs, then federated ones (stage federated-ssl: no image left its client)
    runs = [g[0] for g in ctx.groups("ssl")] + [g[0] for g in ctx.groups("federated-ssl")]
    if runs:
        lines += ["Frozen backbone features: kNN and linear-probe accuracy (no intervals recorded for the probes):", ""]
        lines += table(["run", "views", "epochs", "kNN r/f (random init, val)", "kNN real/fake (test)",
                        "kNN 4-way source (test)", "linear real/fake (test)", "linear source (test)", "seconds"],
                       [[r.name if r.stage == "ssl" else f"{r.name} (federated)", get(r.summary, "views"), get(r.summary, "epochs"),
                         get(r.summary, "random_init.knn_real_fake_acc"), get(r.summary, "knn.knn_real_fake_acc_test"),
                         get(r.summary, "knn.knn_source_acc_test"), get(r.summary, "linear.linear_real_fake_acc_test"),
                         get(r.summary, "linear.linear_source_acc_test"), secs(get(r.summary, "seconds"))] for r in runs])
        p = plots.metric_over_epochs(runs, ["knn_real_fake_acc", "knn_source_acc"], ctx.plots / "ssl_knn.png",
                                     title="kNN accuracy on val during SSL")
        if p:
            lines += [f"![kNN during pretraining](plots/{p.name})", ""]
    views = [r for r in ctx.stage("ssl-views") if r.file("views_experiment.md").is_file()]
    if views:  # `dfflab ssl compare-views`: the evidence for ssl.views' default
        text = views[-1].file("views_experiment.md").read_text().strip()
        lines += [text.replace("# SSL views experiment", "#### Views experiment"), ""]
    le = ctx.stage("label-efficiency")
    if le:
        lines += label_efficiency_lines(ctx, le[-1])
    if not runs and not le:
        lines += ["Not run.", ""]
    return lines


def label_efficiency_lines(ctx: Context, x) -> list[str]:
    s = x.summary
    cells, comps = s.get("cells") or [], s.get("comparisons") or []
    lines = [f"#### Label efficiency ({x.link})", ""]
    if cells:
        budget = get(x.config, "ssl.label_budget", "steps")
        fractions = sorted({c["fraction"] for c in cells})
        inits = list(dict.fromkeys(c["init"] for c in cells))
        by = {(c["init"], c["fraction"]): c for c in cells}

        def show(c):
            if not c:
                return "–"
            text = f"{c['test_auroc']:.3f}"
            if c.get("n_seeds", 1) > 1:
                text += f" ± {c['test_auroc_std']:.3f} ({c['n_seeds']} seeds)"
            iv = interval(c.get("test_auroc_ci"))
            return f"{text} {iv}".strip() + (f", {c['steps']} steps" if c.get("steps") is not None else "")

        lines += [f"Test AUROC [95% CI of the first seed] of the fine-tuned detector per share of training labels; "
                  f"`ssl.label-budget={budget}`"
                  + (" (every fraction made the full-label run's optimizer steps)." if budget == "steps" else "."), ""]
        lines += table(["init"] + [f"{f:.0%} labels" for f in fractions],
                       [[i] + [show(by.get((i, f))) for f in fractions] for i in inits])
        if comps:
            lines += ["SSL init against scratch at the same fraction (paired bootstrap on the same test images):", ""]
            lines += table(["labels", "init", "AUROC − scratch [95% CI]", "verdict"],
                           [[f"{c['fraction']:.0%}", c["init"], diff(c), c["verdict"]] for c in comps])
    elif x.file("label_efficiency.md").is_file():  # a run from before the summary held the cells
        lines += [x.file("label_efficiency.md").read_text().strip(), ""]
    lines += ctx.img(x.file("label_efficiency.png"), "label_efficiency.png", "label efficiency")
    return lines


UQ_KEYS = ("ece", "nll", "brier", "aurc", "auroc")


def uq_section(ctx: Context) -> list[str]:
    """3.7: calibration and selective prediction of each evaluated detector."""
    lines = ["### 3.7 Uncertainty and calibration", ""]
    found = False
    for g in ctx.groups("centralized") + ctx.groups("federated"):
        r = g[0]
        uq = read_optional_json(r.file("uq.json"))
        if not isinstance(uq, dict):
            continue
        found = True
        lines += [f"#### {r.stage}: {r.name} ({r.link})", ""]
        methods = uq.get("methods", {})
        rows = [[m] + [get(v, k) for k in UQ_KEYS] for m, v in methods.items() if isinstance(v, dict)]
        if rows:
            lines += [f"On {get(uq, 'sizes.test', '–')} test images (point values: uq.json records no intervals):",
                      ""]
            lines += table(["method", "ECE", "NLL", "Brier", "AURC", "AUROC"], rows)
        if uq.get("skipped"):
            lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in uq["skipped"].items()) + ".", ""]
        unseen = uq.get("unseen")
        if isinstance(unseen, dict) and unseen:
            lines += ["Unseen-generator separation (AUROC of each uncertainty score, held-out vs seen fakes):", ""]
            for k, v in unseen.items():
                vals = ", ".join(f"{a} {fmt(b)}" for a, b in v.items() if not isinstance(b, dict)) \
                    if isinstance(v, dict) else fmt(v)
                lines.append(f"- {k}: {vals}")
            lines.append("")
        for png in ("reliability.png", "risk_coverage.png"):
            lines += ctx.img(r.file(png), f"uq_{r.name}_{png}", png[:-4].replace("_", " "))
    if not found:
        lines += ["Not run (`dfflab uq evaluate RUN`).", ""]
    return lines
