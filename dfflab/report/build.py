"""``dfflab report``: ``<results>/REPORT.md`` and ``<results>/plots/*.png`` from run folders alone.

Re-runnable at any time without training: it reads ``config.json``, ``metrics.csv``,
``summary.json``, ``test_scores.npz`` and the per-run JSON/PNG outputs of every finished run
under ``<results>/runs`` (and the pipeline's ``state.json`` for timings). The report is a
write-up, top to bottom:

1. models and training strategy (built from each headline run's config and model object);
2. experimental setup (data and splits as the runs recorded them, metrics, seeds, bootstrap);
3. results, every number with its 95% interval and a link to its run folder, comparisons
   from paired intervals;
4. discussion and conclusions, each sentence carrying the numbers it rests on;
5. pipeline timings.
"""

from __future__ import annotations

import time
from pathlib import Path

from dfflab.files import atomic_write_text
from dfflab.report.cells import secs, table
from dfflab.report.chains import evolution_section
from dfflab.report.context import Context, resamples
from dfflab.report.describe_detector import detector_section
from dfflab.report.describe_federated import federated_section as fl_setup
from dfflab.report.describe_gan import gan_section as gan_setup
from dfflab.report.describe_ssl import ssl_section as ssl_setup
from dfflab.report.discussion import discussion_section
from dfflab.report.privacy import privacy_section
from dfflab.report.results_central import centralized_section, per_source_section, robustness_section
from dfflab.report.results_federated import SEARCH_CHAIN, federated_section
from dfflab.report.results_gan import gan_section
from dfflab.report.results_ssl_uq import ssl_section, uq_section
from dfflab.report.setup import setup_section
from dfflab.runs import git_commit


def header(ctx: Context) -> list[str]:
    runs = ctx.all_runs()
    root = next((str(r.config.get("data", {}).get("root", "")) for r in runs if r.config.get("data")), "")
    lines = ["# dfflab report", ""]
    if "synthdff" in root.lower():
        lines += ["> **These are SynthDFF numbers, not DFF numbers.** SynthDFF is dfflab's procedural",
                  "> stand-in for DeepFakeFace; nothing here says how a method does on real DFF.", ""]
    lines += [f"Built {time.strftime('%Y-%m-%d %H:%M')} from {len(runs)} finished run folders under "
              f"`{ctx.results / 'runs'}` (code at commit `{git_commit()}`). Rebuild with "
              "`dfflab report --results DIR`; regenerate everything with "
              + (f"`{ctx.state['command']}`." if ctx.state.get("command") else
                 "`dfflab pipeline` and the preset that made them."), "",
              "Contents: 1. Models and training strategy · 2. Experimental setup · 3. Results · "
              "4. Discussion and conclusions" + (" · 5. Pipeline timings." if ctx.state.get("stages") else "."), ""]
    return lines


def models_section(ctx: Context) -> list[str]:
    return (["## 1. Models and training strategy", "",
             "Generated from each headline run's resolved `config.json` and from the model objects those settings "
             "build, so the description cannot drift from what ran.", ""]
            + detector_section(ctx) + ssl_setup(ctx) + fl_setup(ctx) + gan_setup(ctx))


def results_section(ctx: Context) -> list[str]:
    lines = ["## 3. Results", "",
             "Every number carries its 95% interval where the run recorded one (in brackets) and links its run "
             "folder; a difference is *better* or *worse* only when its paired interval excludes zero.", ""]
    lines += centralized_section(ctx) + federated_section(ctx)
    private = privacy_section(ctx.results, ctx.plots, resamples(ctx.all_runs()))
    if private:
        lines += ["### 3.2b Privacy: federated SSL and differential privacy", ""] + private
    lines += per_source_section(ctx) + robustness_section(ctx)
    lines += ssl_section(ctx) + uq_section(ctx) + gan_section(ctx)
    from dfflab.report.chains import chain_names, chain_steps

    gan_folders = {r.folder for r in ctx.stage("generative")}
    shown = {SEARCH_CHAIN} | {c for c in chain_names(ctx)
                              if any(s.folder in gan_folders for s in chain_steps(ctx, c))}
    return lines + evolution_section(ctx, shown)


def timings(ctx: Context) -> list[str]:
    stages = ctx.state.get("stages", {})
    if not stages:
        return []
    rows = [[s, v.get("status"), secs(v.get("seconds")), secs(v.get("peak_rss_mb"))] for s, v in stages.items()]
    return (["## 5. Pipeline timings", ""] + table(["stage", "status", "seconds", "peak memory so far (MB)"], rows)
            + ([f"Stage time in all: {ctx.state['total_seconds']} s."] if ctx.state.get("total_seconds") else [])
            + [""])


def build(ctx: Context) -> str:
    """The whole report as Markdown."""
    head = header(ctx) + models_section(ctx) + setup_section(ctx)
    results = results_section(ctx)
    discussion, _ = discussion_section(ctx)
    if ctx.notes:  # comparisons that could not be made, and why (collected while writing 3 and 4)
        results += ["### 3.10 Comparisons not made", ""] + [f"- {n}" for n in dict.fromkeys(ctx.notes)] + [""]
    return "\n".join(head + results + discussion + timings(ctx)) + "\n"


def build_report(results: Path | str = "results", pipeline_state: dict | None = None) -> Path:
    """Write ``<results>/REPORT.md`` (and plots); returns its path."""
    ctx = Context(results, pipeline_state)
    path = Path(results) / "REPORT.md"
    atomic_write_text(path, build(ctx))
    return path
