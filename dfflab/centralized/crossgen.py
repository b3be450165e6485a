"""Cross-generator generalization: does a detector catch fakes from a generator it never saw?

    dfflab centralized crossgen --preset quick

One command runs the whole protocol, each job a normal ``centralized`` run (so each is
resumable and has its own curves and checkpoint):

* **single-source**: for each fake source s, train on reals + s's fakes, test on every
  source -> a sources x sources AUROC matrix (row = trained on, column = tested on; the
  diagonal is in-distribution);
* **leave one generator out (LOGO)**: for each source h, train on reals + the other
  sources' fakes, test on h (held out) and on the training sources (in distribution).

Model selection and thresholds use validation rows of the training sources only, so a
held-out generator is unseen until test. The protocol's own run folder (stage
``crossgen``) gets ``summary.json`` (``matrix``, ``logo``, child runs), ``metrics.csv``
(one row per job) and ``crossgen.png``; it resumes after a crash, skipping finished jobs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from dfflab.detector.rows import check_sources
from dfflab.detector.scoring import score_checkpoint
from dfflab.detector.trainer import train_detector
from dfflab.device import resolve_device
from dfflab.files import markdown_table
from dfflab.runs import Run, open_or_resume

STAGE = "crossgen"


@dataclass(frozen=True)
class Job:
    """One training run of the protocol."""

    kind: str  # "single" or "logo"
    source: str  # the one trained on (single) or held out (logo)
    train_sources: tuple[str, ...]
    test_sources: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{'xgen' if self.kind == 'single' else 'logo'}-{self.source}"


def protocol(sources: list[str]) -> list[Job]:
    """The single-source jobs, then the leave-one-out jobs, all tested on every source."""
    every = tuple(sources)
    jobs = [Job("single", s, (s,), every) for s in sources]
    if len(sources) > 1:
        jobs += [
            Job("logo", h, tuple(s for s in sources if s != h), every) for h in sources
        ]
    return jobs


def job_config(cfg, job: Job):
    """``cfg`` with the job's sources; the shortcut audit runs once, not per job."""
    child = copy.deepcopy(cfg)
    child.train.train_sources = list(job.train_sources)
    child.train.test_sources = list(job.test_sources)
    child.train.audit = False
    return child


def _job_result(job: Job, run: Run, store, device) -> dict:
    summary = run.summary()
    per = {s: m["auroc"] for s, m in summary["test_per_source"].items()}
    out = {"run": run.name, "test_auroc_per_source": per}
    if job.kind == "logo":
        in_dist = score_checkpoint(run.path("detector.pt"), store, store.select("test", list(job.train_sources)),
                                   device).add_intervals(run.config["train"].get("bootstrap", 1000)).overall
        held = summary["test_per_source"][job.source]
        out.update(auroc_held_out=per[job.source], auroc_held_out_ci=held.get("auroc_ci"),
                   auroc_in_dist=in_dist["auroc"], auroc_in_dist_ci=in_dist.get("auroc_ci"),
                   gap=in_dist["auroc"] - per[job.source])
    return out


def run_crossgen(
    cfg,
    *,
    name: str = "crossgen",
    parent: str | None = None,
    note: str = "",
    store=None,
    progress: bool = True,
    resume: bool = True,
) -> Run:
    """Run every job of :func:`protocol` over ``cfg.train.test-sources``; returns the protocol's run."""
    from dfflab.detector.plots import plot_crossgen

    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    sources = check_sources(store, cfg.train.test_sources, "train.test-sources")
    device = resolve_device(cfg.train.device)
    run, state = open_or_resume(cfg, STAGE, name, fingerprint=store.fingerprint, parent=parent, note=note,
                                resume=resume, quiet=not progress)
    done: dict = state["done"] if state is not None else {}
    run.save("last.pt", {"done": done})  # marks it resumable from the first job on
    for job in protocol(sources):
        if job.name in done:
            continue
        child = train_detector(
            job_config(cfg, job),
            name=f"{name}-{job.name}",
            parent=run.name,
            note=f"{name}: {job.kind}, train on {'+'.join(job.train_sources)}",
            store=store,
            progress=progress,
        )
        done[job.name] = _job_result(job, child, store, device)
        run.log_metrics(
            {
                "job": job.name,
                "kind": job.kind,
                "train_sources": "+".join(job.train_sources),
                **{
                    f"test_auroc_{s}": v
                    for s, v in done[job.name]["test_auroc_per_source"].items()
                },
                "child_run": child.name,
            }
        )
        run.save("last.pt", {"done": done})
    summary = summarize(sources, done)
    plot_crossgen(summary["matrix"], summary["logo"], run.path("crossgen.png"))
    run.write_summary(summary)
    run.path("last.pt").unlink(missing_ok=True)  # finished: nothing to resume
    if progress:
        print(summary["table"])
        print(f"run folder: {run.dir}")
    return run


def summarize(sources: list[str], done: dict) -> dict:
    """``matrix`` {train: {test: auroc}}, ``logo`` {held_out: {...}} and a Markdown ``table``."""
    matrix = {
        s: done[f"xgen-{s}"]["test_auroc_per_source"]
        for s in sources
        if f"xgen-{s}" in done
    }
    logo = {
        h: {k: done[f"logo-{h}"].get(k) for k in ("auroc_held_out", "auroc_held_out_ci", "auroc_in_dist",
                                                  "auroc_in_dist_ci", "gap")}
        for h in sources
        if f"logo-{h}" in done
    }
    nan = float("nan")
    table = (
        "test AUROC; rows: trained on reals + that source, columns: fakes tested\n\n"
        + markdown_table(["trained on", *sources], [[s, *(row.get(t, nan) for t in sources)] for s, row in matrix.items()])
        + "\nleave one generator out (trained on the other sources)\n\n"
        + markdown_table(["held out", "AUROC held out", "AUROC in distribution", "gap"],
                         [[h, m["auroc_held_out"], m["auroc_in_dist"], f"{m['gap']:+.3f}"] for h, m in logo.items()])
    )
    off = [v for s, row in matrix.items() for t, v in row.items() if t != s]
    diag = [row[s] for s, row in matrix.items() if s in row]
    return {
        "sources": sources,
        "matrix": matrix,
        "logo": logo,
        "mean_in_dist_single": sum(diag) / len(diag) if diag else None,
        "mean_cross_single": sum(off) / len(off) if off else None,
        "max_logo_gap": max((m["gap"] for m in logo.values()), default=None),
        "runs": {job: r["run"] for job, r in done.items()},
        "table": table.rstrip("\n"),
    }
