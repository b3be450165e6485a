"""``dfflab pipeline``: the main job, every stage end to end, then the report.

    dfflab pipeline --preset quick                 # SynthDFF on a CPU
    dfflab pipeline --preset full --data data/dff  # DFF on a GPU
    dfflab pipeline --force centralized            # re-run one stage (and keep the rest)

Stages run in order: data -> ssl -> centralized -> crossgen -> label-efficiency ->
federated -> uq -> generative -> report. Each finished stage is recorded in
``<results>/pipeline/state.json`` with the run folders it made, and is not run again
unless named in ``--force`` (or the settings changed). Each stage's output goes to
``<results>/pipeline/logs/<stage>.log``; a failed stage is reported with that path and
the pipeline stops, keeping everything finished before it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from dfflab.config import derive
from dfflab.files import read_json, write_json
from dfflab.pipeline_federated import seed_key, seeds_of, stage_federated
from dfflab.runs import Run

STAGES: list[tuple[str, str]] = [
    ("data", "synthesize (SynthDFF) and prepare the store"),
    ("ssl", "SimCLR and BYOL pretraining"),
    ("centralized", "detector from scratch and from each SSL backbone, robustness"),
    ("crossgen", "cross-generator matrix and leave-one-generator-out"),
    ("label-efficiency", "1% / 10% / 100% labels, SSL vs scratch"),
    ("federated", "Flower: FedAvg, FedProx, FedBN (source), FedAvg (IID), local-only, federated SSL -> FedAvg, "
                  "DP-FedAvg"),
    ("uq", "calibration, MC dropout, ensembles, unseen generators"),
    ("generative", "conditional GAN: three recorded iterations, FID/KID, fooling rate"),
    ("report", "comparison plots and REPORT.md"),
]


class Tee:
    """Write to the terminal and a log file at once."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, s):
        self.stream.write(s)
        self.log.write(s)
        return len(s)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def isatty(self):
        return self.stream.isatty()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its largest finished child, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, child) / 1024


class Pipeline:
    def __init__(self, cfg, force: list[str], only: list[str] | None = None, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.dir = Path(cfg.results) / "pipeline"
        self.state_path = self.dir / "state.json"
        self.settings_hash = hashlib.sha1(json.dumps(cfg.flat(), sort_keys=True, default=str)
                                          .encode()).hexdigest()[:12]
        self.state = read_json(self.state_path) if self.state_path.is_file() else {}
        if self.state.get("settings") != self.settings_hash and self.state.get("stages"):
            print("pipeline: settings changed since the last run; every stage runs again")
            self.state = {}
        self.state.update(settings=self.settings_hash)
        self.state.setdefault("stages", {})
        unknown = set(force) - {s for s, _ in STAGES} - {"all"}
        if unknown:
            raise SystemExit(f"dfflab pipeline: unknown stage(s) {sorted(unknown)} "
                             f"(stages: {', '.join(s for s, _ in STAGES)})")
        for s in (x for x, _ in STAGES) if "all" in force else force:
            self.state["stages"].pop(s, None)
        self.only = only
        self.store = None

    # -- bookkeeping ---------------------------------------------------------------
    def runs(self, stage: str) -> dict[str, str]:
        return self.state["stages"].get(stage, {}).get("runs", {})

    def run_dir(self, stage: str, key: str) -> str | None:
        return self.runs(stage).get(key)

    def save(self) -> None:
        write_json(self.state_path, self.state)

    def get_store(self):
        if self.store is None:
            from dfflab.data import ensure_store

            self.store = ensure_store(self.cfg, progress=self.progress)
        return self.store

    # -- running -----------------------------------------------------------------------
    def run(self) -> int:
        t_all = time.time()
        todo = [(s, d) for s, d in STAGES if self.only is None or s in self.only]
        for i, (stage, desc) in enumerate(todo, 1):
            done = self.state["stages"].get(stage, {})
            if done.get("status") == "done":
                print(f"[{i}/{len(todo)}] {stage}: done earlier ({done['seconds']:.0f}s), skipped "
                      f"(--force {stage} re-runs it)")
                continue
            print(f"[{i}/{len(todo)}] {stage}: {desc} ...", flush=True)
            log_path = self.dir / "logs" / f"{stage}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            with open(log_path, "w") as log, contextlib.redirect_stdout(Tee(sys.stdout, log)), \
                    contextlib.redirect_stderr(Tee(sys.stderr, log)):
                try:
                    runs = STAGE_FUNCS[stage](self) or {}
                    ok = True
                except Exception:
                    traceback.print_exc()
                    ok = False
            secs = time.time() - t0
            entry = {"status": "done" if ok else "failed", "seconds": round(secs, 1),
                     "peak_rss_mb": round(peak_rss_mb(), 1), "log": str(log_path)}
            if ok:
                entry["runs"] = {k: str(v.dir if isinstance(v, Run) else v) for k, v in runs.items()}
            self.state["stages"][stage] = entry
            self.save()
            if not ok:
                print(f"pipeline: stage '{stage}' failed after {secs:.0f}s; its log: {log_path}\n"
                      f"Finished stages are kept; fix the cause and run the same command again.",
                      file=sys.stderr)
                return 1
            print(f"[{i}/{len(todo)}] {stage}: finished in {secs:.0f}s "
                  f"(peak memory so far {entry['peak_rss_mb']:.0f} MB)", flush=True)
        total = sum(v.get("seconds", 0) for v in self.state["stages"].values())
        self.state["total_seconds"] = round(total, 1)
        self.state["peak_rss_mb"] = round(peak_rss_mb(), 1)
        self.save()
        print(f"pipeline: all stages done; this call {time.time() - t_all:.0f}s, stage time in all "
              f"{total:.0f}s, peak memory {self.state['peak_rss_mb']:.0f} MB")
        print(f"report: {Path(self.cfg.results) / 'REPORT.md'}")
        return 0


# -- stages -------------------------------------------------------------------------------
def stage_data(p: Pipeline) -> dict:
    store = p.get_store()
    print(store.summary())
    return {"store": store.path}


def stage_ssl(p: Pipeline) -> dict:
    from dfflab.ssl.pretrain import pretrain

    store = p.get_store()
    simclr = pretrain(derive(p.cfg, {"ssl.method": "simclr"}), store=store, progress=p.progress,
                      note="SimCLR (NT-Xent, lightly) with artifact-preserving views: the SSL baseline.")
    byol = pretrain(derive(p.cfg, {"ssl.method": "byol"}), store=store, progress=p.progress,
                    parent=simclr.name,
                    note="BYOL instead of SimCLR: no negatives, so no large batch is needed on 2 cores.")
    return {"simclr": simclr, "byol": byol}


def stage_centralized(p: Pipeline) -> dict:
    from dfflab.centralized.distortions import evaluate_robustness, write_robustness
    from dfflab.detector.trainer import train_detector

    store, seeds = p.get_store(), seeds_of(p.cfg.pipeline.seeds)
    out = {}
    for seed in seeds:
        cfg = derive(p.cfg, {"train.seed": seed})
        scratch = train_detector(cfg, name="scratch", store=store, progress=p.progress,
                                 note="Baseline: detector trained from random init on all three fake sources.")
        out[seed_key("scratch", seed, seeds[0])] = scratch
        for method in ("simclr", "byol"):
            ssl_run = p.run_dir("ssl", method)
            if ssl_run:
                out[seed_key(f"{method}-init", seed, seeds[0])] = train_detector(
                    derive(cfg, {"train.init": ssl_run}), name=f"{method}-init", store=store,
                    progress=p.progress, parent=scratch.name,
                    note=f"Same recipe, backbone initialised from the {method} SSL run: does label-free "
                         "pretraining help the detector?")
    result = evaluate_robustness(out["scratch"].path("detector.pt"), store, p.cfg)
    write_robustness(result, out["scratch"].dir)
    return out


def stage_crossgen(p: Pipeline) -> dict:
    from dfflab.centralized.crossgen import run_crossgen

    run = run_crossgen(p.cfg, store=p.get_store(), progress=p.progress,
                       note="Generalization protocol: single-source training and leave-one-generator-out.")
    return {"crossgen": run}


def stage_label_efficiency(p: Pipeline) -> dict:
    from dfflab.ssl.label_efficiency import label_efficiency

    ssl_runs = [r for r in (p.run_dir("ssl", "simclr"), p.run_dir("ssl", "byol")) if r]
    run = label_efficiency(p.cfg, ssl_runs, store=p.get_store(), progress=p.progress)
    return {"label-efficiency": run}


def stage_uq(p: Pipeline) -> dict:
    from dfflab.uq.evaluate import evaluate_run

    out = {}
    for stage, key in (("centralized", "scratch"), ("federated", "fedavg-source")):
        run = p.run_dir(stage, key)
        if run:
            evaluate_run(run)
            out[f"{stage}-{key}"] = run
    return out


def stage_generative(p: Pipeline) -> dict:
    from dfflab.generative.detector_eval import evaluate_gan
    from dfflab.generative.evolve import run_evolution

    store = p.get_store()
    chain = run_evolution(p.cfg, store=store, progress=p.progress)
    out = {"evolution": chain}
    scratch = p.run_dir("centralized", "scratch")
    last = chain.summary()["chain"][-1]["run"]
    if scratch and last:  # how often the detector takes the final GAN's images for real; also against
        # a detector trained on images resampled like the GAN's (the scratch one calls any upsampled image fake)
        out["detector-eval"] = evaluate_gan(p.cfg, Path(p.cfg.results) / "runs" / last, store,
                                            Path(scratch) / "detector.pt", matched=True, progress=p.progress)
    return out


def stage_report(p: Pipeline) -> dict:
    from dfflab.report.build import build_report

    path = build_report(p.cfg.results, pipeline_state=p.state)
    print(f"report written: {path}")
    return {"report": path}


STAGE_FUNCS: dict[str, Callable[[Pipeline], dict]] = {
    "data": stage_data, "ssl": stage_ssl, "centralized": stage_centralized, "crossgen": stage_crossgen,
    "label-efficiency": stage_label_efficiency, "federated": stage_federated, "uq": stage_uq,
    "generative": stage_generative, "report": stage_report,
}


# -- CLI ------------------------------------------------------------------------------------
def register(sub) -> None:
    from dfflab.cli import add_config_args

    p = sub.add_parser("pipeline", help="the main job: every stage end to end, then the report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--data", help="dataset root (sets data.root), e.g. a DFF download")
    p.add_argument("--results", help="output folder (sets results; default: results)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="re-run STAGE even if it finished (repeatable; 'all' re-runs everything)")
    p.add_argument("--only", action="append", metavar="STAGE", help="run only these stages (repeatable)")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args

    extra = []
    if args.data:
        extra.append(f"data.root={args.data}")
    if args.results:
        extra.append(f"results={args.results}")
    cfg = config_from_args(args, extra)
    p = Pipeline(cfg, args.force, args.only)
    p.state["command"] = " ".join(["dfflab pipeline", f"--preset {args.preset}",
                                   *(f"--set {s}" for s in getattr(args, "overrides", None) or []),
                                   *([f"--data {args.data}"] if args.data else [])])
    return p.run()
