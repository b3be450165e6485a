"""Results of the conditional GAN: FID/KID (with intervals and the real-vs-real floor where the
run recorded them), per class, the recorded evolution, and the GAN against the detector.

GAN summaries come in two shapes, both read here: ``fid``, ``fid_ci``, ``kid``, ``kid_ci``,
``fid_floor``, ``n_eval`` overall and per class under ``per_class``; or the older flat
``fid_inception_<class>`` / ``kid_inception_<class>`` keys with ``scores.inception``.
"""

from __future__ import annotations

from dfflab.report import plots
from dfflab.report.cells import ci, secs, signed, table
from dfflab.report.chains import chain_names, chain_steps, chain_table
from dfflab.report.collect import RunInfo, fmt, get
from dfflab.report.context import Context
from dfflab.report.describe_gan import gan_runs

PER_CLASS_KEYS = ("per_class", "classes")


def gan_overall(s: dict) -> dict:
    """``{"fid", "fid_ci", "kid", "kid_ci", "fid_floor", "n_eval"}`` of a GAN summary (missing keys absent)."""
    if isinstance(s.get("fid"), int | float):
        return {k: s[k] for k in ("fid", "fid_ci", "kid", "kid_ci", "fid_floor", "n_eval") if k in s}
    out = {}
    for key in ("fid_inception_overall", "fid_overall"):
        if isinstance(s.get(key), int | float):
            out["fid"] = s[key]
            break
    if isinstance(s.get("kid_inception_overall"), int | float):
        out["kid"] = s["kid_inception_overall"]
    if s.get("generated_per_class") is not None:
        out["n_eval"] = s["generated_per_class"]
    return out


def gan_classes(s: dict) -> dict[str, dict]:
    """Per class: the same keys as :func:`gan_overall`."""
    for key in PER_CLASS_KEYS:
        per = s.get(key)
        if isinstance(per, dict) and per:
            return {c: v for c, v in per.items() if isinstance(v, dict) and c != "overall"}
    classes = [c for c in get(s, "scores.inception", {}) if c != "overall"]
    return {c: {"fid": s.get(f"fid_inception_{c}"), "kid": s.get(f"kid_inception_{c}"),
                "fd_ssl": s.get(f"fid_ssl_{c}")} for c in classes}


def fid_text(m: dict) -> str:
    return ci(m, "fid", 1)


def kid_text(m: dict) -> str:
    return ci(m, "kid", 4)


def gan_section(ctx: Context) -> list[str]:
    """3.8."""
    lines = ["### 3.8 Conditional GAN", ""]
    runs = [r for r in gan_runs(ctx) if gan_overall(r.summary)]
    if not runs:
        return lines + ["Not run (`dfflab generative train`).", ""]
    last = runs[-1]
    o = gan_overall(last.summary)
    n_ref = last.summary.get("reference_per_class") or {}
    lines += [f"FID/KID against held-out real images of each class ({fmt(o.get('n_eval'))} generated per class"
              + (" vs " + ", ".join(f"{c} {n}" for c, n in n_ref.items()) + " real" if n_ref else "")
              + "); the floor is real against real at the same sample size (blank where not recorded); FD-SSL is "
              "the Fréchet distance in the SSL backbone's feature space.", ""]
    rows = []
    for r in runs:
        m = gan_overall(r.summary)
        parent = ctx.parent_of(r)
        rows.append([r.name, parent.name if parent else (r.parent or ""), fid_text(m), fmt(m.get("fid_floor"), 1) if m.get("fid_floor") else "–",
                     kid_text(m), fmt(r.summary.get("fid_ssl_overall")), r.summary.get("g_steps", "–"),
                     secs(r.summary.get("train_seconds")), r.link])
    lines += table(["run", "parent", "FID [95% CI]", "FID floor", "KID [95% CI]", "FD-SSL", "G steps", "train seconds",
                    "run folder"], rows)
    classes = gan_classes(last.summary)
    if classes:
        lines += [f"Per class, {last.name}:", ""]
        lines += table(["class", "FID [95% CI]", "FID floor", "KID [95% CI]", "FD-SSL"],
                       [[c, fid_text(m), fmt(m.get("fid_floor"), 1) if m.get("fid_floor") else "–", kid_text(m),
                         fmt(m.get("fd_ssl"))] for c, m in classes.items()])
    gan_folders = {r.folder for r in ctx.stage("generative")}
    for chain in chain_names(ctx):
        if any(s.folder in gan_folders for s in chain_steps(ctx, chain)):
            lines += [f"#### Evolution chain `{chain}`", ""] + chain_table(ctx, chain)
    table_runs = [r for r in ctx.stage("generative") if get(r.summary, "table") and get(r.summary, "chain")]
    if table_runs:
        t = table_runs[-1]
        lines += [f"Recorded evolution ({t.link}; each step's note says what it changes and why):", "",
                  t.summary["table"], ""]
        lines += [f"- **{row.get('step')}**: {row.get('note', '')}" for row in t.summary["chain"]] + [""]
    p = plots.metric_over_epochs(runs, ["fid"], ctx.plots / "gan_fid.png", title="FID during training")
    if p:
        lines += [f"![FID over training](plots/{p.name})", ""]
    grids = sorted(last.run.dir.glob("samples_epoch*.png"), key=lambda f: int(f.stem[len("samples_epoch"):]))
    if grids:
        lines += ctx.img(grids[-1], "gan_samples.png", f"samples of {last.name} (one row per class)")
    return lines + against_detector(ctx)


def delta(m: dict, key: str) -> str:
    """``+0.012 [-0.010, +0.034]`` from ``m[key]`` and ``m[key + "_ci"]``."""
    if m.get(key) is None:
        return "–"
    lo_hi = m.get(f"{key}_ci")
    return signed(m[key]) + (f" [{signed(lo_hi[0])}, {signed(lo_hi[1])}]" if lo_hi else "")


def fooling_table(f: dict) -> list[str]:
    rows = [[c, ci(m, "fooling_rate"), m.get("n_generated"), m.get("called_real_test_native"),
             m.get("called_real_test_resampled")] for c, m in get(f, "per_class", {}).items()]
    return table(["class", "generated called real [95% Wilson CI]", "n generated", "test images called real (native)",
                  "test images called real (resampled)"], rows)


def detector_evals(ctx: Context) -> list[RunInfo]:
    return [r for r in ctx.stage("generative") if r.name == "detector-eval"]


def against_detector(ctx: Context) -> list[str]:
    evals = detector_evals(ctx)
    if not evals:
        return []
    r = evals[-1]
    f = get(r.summary, "fooling", {})
    lines = [f"#### Against the detector ({r.link}, GAN run {r.parent})", "",
             f"Share called real by {f.get('detector')} at its validation threshold {fmt(f.get('threshold'))}; GAN "
             f"images ({f.get('gan_image_size')} px) are upsampled to the detector's {f.get('detector_image_size')} "
             "px, and held-out test images sent through the same down- and up-sampling are the control.", ""]
    lines += fooling_table(f)
    m = get(r.summary, "fooling_matched")
    if m:
        lines += [f"Against a detector trained on images resampled through {m.get('gan_image_size')} px like the "
                  f"GAN's ({m.get('detector_run')}, test AUROC {fmt(m.get('detector_test_auroc'))} on resampled "
                  f"images, threshold {fmt(m.get('threshold'))}), so that resampling is no tell:", ""]
        lines += fooling_table(m)
    logo = get(r.summary, "augmented_logo.held_out")
    if logo:
        n = get(r.summary, "augmented_logo.gan_per_class")
        lines += [f"GAN-augmented leave-one-generator-out (test AUROC on the held-out generator). The control adds "
                  f"as many non-GAN images ({fmt(n)} per class: train images of the fold's own sources sent through "
                  "the GAN's resolution and back), so *GAN vs control* is the gain attributable to the generated "
                  "content; intervals are paired 95% bootstrap intervals over the same test images.", ""]
        lines += table(["held out", "n test", "base", "+ GAN images", "+ control images", "GAN - base",
                        "control - base", "GAN - control", "verdict (GAN vs control)"],
                       [[h, v.get("n_test", "–"), v["auroc_base"], v["auroc_gan"], v.get("auroc_control", "–"),
                         delta(v, "delta"), delta(v, "delta_control"), delta(v, "gan_vs_control"),
                         v.get("gan_vs_control_verdict", "–")] for h, v in logo.items()])
    return lines
