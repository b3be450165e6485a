"""Run records: one folder per run under ``<results>/runs/<timestamp>-<stage>-<name>/``.

A run folder holds ``config.json`` (resolved config, git commit, package versions,
dataset fingerprint, ``parent`` run and a free-text ``note`` on what the run changes
and why), ``metrics.csv`` (one row per epoch or round), ``summary.json`` (written once
at the end) and checkpoints; ``last.pt`` marks a run that can be resumed. Every file is
written atomically (:mod:`dfflab.files`). The report is built from these folders alone.

The lifecycle every stage shares:

* :func:`open_or_resume` -- a new run folder, or the crashed one of the same name that is
  :func:`same_run` (same dataset fingerprint and the same :func:`identity`: the settings
  in the stage's :data:`SCOPES` that can change its result);
* :func:`find_run` -- the newest run matching a name, settings, state or any test (reuse of
  finished runs, "the newest SSL run", ...); :func:`find_seeds` -- a run's seed replicates.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from dfflab.files import (
    atomic_write_text,
    load_checkpoint,
    read_csv,
    read_json,
    save_checkpoint,
    write_csv,
    write_json,
)

__all__ = ["Run", "SCOPES", "atomic_write_text", "find_run", "git_commit", "identity", "is_side_run",
           "list_runs", "load_checkpoint", "open_or_resume", "read_json", "same_run", "save_checkpoint",
           "write_json"]

PACKAGES = ("torch", "torchvision", "lightly", "flwr", "flwr-datasets", "torchmetrics", "numpy")

# The settings each stage's result depends on: sections, or single settings (``train.seed``).
# ``!key`` leaves one out. Within them, settings declared ``result=False`` (threads, worker
# counts, output folders) never make two runs different.
TRAIN_CONDITIONS = ("train.seed", "train.device", "train.amp")
SCOPES: dict[str, tuple[str, ...]] = {
    "centralized": ("data", "model", "train"),
    "crossgen": ("data", "model", "train"),
    "ensemble": ("data", "model", "train"),
    "label-efficiency": ("data", "model", "train", "ssl"),
    "federated": ("data", "model", "train", "fl"),
    "federated-ssl": ("data", "model", "ssl", "fl", "!ssl.label-fractions", *TRAIN_CONDITIONS),
    "ssl": ("data", "model", "ssl", "!ssl.label-fractions", *TRAIN_CONDITIONS),
    "ssl-views": ("data", "model", "ssl", "!ssl.label-fractions", *TRAIN_CONDITIONS),
    "generative": ("data", "gan", *TRAIN_CONDITIONS),
}


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5)
        if commit != "unknown" and dirty.stdout.strip():
            commit += "-dirty"
        return commit
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


@dataclass
class Run:
    """A run folder. Create with :meth:`create`, reopen with :meth:`open`."""

    dir: Path

    @classmethod
    def create(cls, results: Path | str, stage: str, name: str, config: dict[str, Any], *,
               parent: str | None = None, note: str = "", fingerprint: str = "",
               extra: dict[str, Any] | None = None) -> Run:
        """Make a new run folder and write its ``config.json``.

        Args:
            results: the results folder (runs go to ``<results>/runs/``).
            stage: ``data``, ``ssl``, ``centralized``, ``federated``, ``generative``, ...
            name: short name of this run (``scratch``, ``simclr``, ``fedavg-source``).
            config: the resolved config (``Config.to_dict()``).
            parent: name of the run folder this run evolves from, for the report.
            note: what this run changes relative to its parent, and why.
            fingerprint: the dataset fingerprint (``Store.fingerprint``).
        """
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(results) / "runs"
        run_dir = base / f"{stamp}-{stage}-{name}"
        i = 1
        while run_dir.exists():
            i += 1
            run_dir = base / f"{stamp}-{stage}-{name}-{i}"
        run_dir.mkdir(parents=True)
        record = {
            "stage": stage, "name": name, "run": run_dir.name, "created": stamp,
            "parent": parent, "note": note, "git_commit": git_commit(),
            "packages": package_versions(), "dataset_fingerprint": fingerprint,
            **(extra or {}), "config": config,
        }
        write_json(run_dir / "config.json", record)
        return cls(run_dir)

    @classmethod
    def open(cls, path: Path | str) -> Run:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a run folder (no config.json)")
        return cls(path)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def record(self) -> dict[str, Any]:
        return read_json(self.dir / "config.json")

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    @property
    def finished(self) -> bool:
        return (self.dir / "summary.json").is_file()

    def path(self, name: str) -> Path:
        return self.dir / name

    # -- metrics -----------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        """Rows of ``metrics.csv`` with numbers parsed back to float/int."""
        return [{k: _parse(v) for k, v in row.items()} for row in read_csv(self.dir / "metrics.csv")]

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row (an epoch or a round) to ``metrics.csv``, atomically.

        New columns may appear in later rows; earlier rows get blanks for them.
        """
        rows = self.metrics() + [row]
        self._write_metrics(rows)

    def truncate_metrics(self, keep: int) -> None:
        """Keep only the first ``keep`` rows (resuming from an earlier checkpoint)."""
        self._write_metrics(self.metrics()[:keep])

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        write_csv(self.dir / "metrics.csv", rows, fmt=_fmt)

    # -- summary, checkpoints, notes -------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.dir / "summary.json", summary)

    def summary(self) -> dict[str, Any]:
        p = self.dir / "summary.json"
        return read_json(p) if p.is_file() else {}

    def save(self, name: str, state: dict[str, Any]) -> Path:
        p = self.dir / name
        save_checkpoint(p, state)
        return p

    def load(self, name: str, map_location: Any = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.dir / name, map_location)

    def update_record(self, **fields: Any) -> None:
        rec = self.record
        rec.update(fields)
        write_json(self.dir / "config.json", rec)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _parse(v: str) -> Any:
    if v is None or v == "":
        return None
    try:
        i = int(v)
        return i
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def list_runs(results: Path | str, stage: str | None = None) -> list[Run]:
    """Run folders under ``<results>/runs``, oldest first, optionally of one stage."""
    base = Path(results) / "runs"
    if not base.is_dir():
        return []
    runs = []
    for d in sorted(base.iterdir()):
        if (d / "config.json").is_file():
            run = Run(d)
            if stage is None or run.record.get("stage") == stage:
                runs.append(run)
    return runs


# Detector runs that are cells of another experiment, not stand-alone models: crossgen folds,
# label-efficiency cells, ensemble members, the GAN evaluation's LOGO folds and matched detector.
SIDE_RUN_PREFIXES = ("crossgen", "le-", "ens-", "gan-")


def is_side_run(name: str) -> bool:
    """Whether a run of this name is a cell of another experiment (:data:`SIDE_RUN_PREFIXES`)."""
    return name.startswith(SIDE_RUN_PREFIXES)


# -- the same run -----------------------------------------------------------------------------
def identity(config, stage: str) -> dict[str, Any]:
    """The settings of ``config`` (a Config, or a run's recorded config dict) that can change a
    ``stage`` run's result: its :data:`SCOPES`, without ``result=False`` settings, paths made
    absolute. A recorded config that predates a setting counts as made with its default.

    Raises:
        ConfigError: the recorded config holds a setting that no longer exists.
    """
    from dfflab.config import Config, config_from_dict, result_settings

    cfg = config if isinstance(config, Config) else config_from_dict(config)
    if stage not in SCOPES:
        raise KeyError(f"no identity scope for stage '{stage}' (known: {', '.join(SCOPES)})")
    return result_settings(cfg, SCOPES[stage])


def same_run(run: Run, cfg, fingerprint: str | None = None, extra: dict[str, Any] | None = None) -> bool:
    """Whether ``run`` is the run ``cfg`` would make: same dataset fingerprint (if given), same
    ``extra`` record fields (an experiment's spec, say) and the same :func:`identity`."""
    from dfflab.config import ConfigError

    rec = run.record
    if fingerprint is not None and rec.get("dataset_fingerprint") != fingerprint:
        return False
    if any(rec.get(k) != v for k, v in (extra or {}).items()):
        return False
    stage = rec.get("stage", "")
    try:
        return identity(rec["config"], stage) == identity(cfg, stage)
    except ConfigError:  # a setting that no longer exists: not comparable
        return False


def find_run(results: Path | str, stage: str, *, name: str | None = None, cfg=None,
             fingerprint: str | None = None, extra: dict[str, Any] | None = None, state: str = "finished",
             where: Callable[[Run], bool] | None = None) -> Run | None:
    """The newest run of ``stage`` that matches everything given.

    Args:
        name: its name (``None``: any name -- the same computation recorded by another experiment).
        cfg, fingerprint, extra: with ``cfg``, it must be :func:`same_run`.
        state: ``finished`` (has summary.json), ``resumable`` (no summary but a ``last.pt``) or ``any``.
        where: any further test.
    """
    if state not in ("finished", "resumable", "any"):
        raise ValueError(f"state must be finished, resumable or any, not {state!r}")
    for run in reversed(list_runs(results, stage)):
        if name is not None and run.record.get("name") != name:
            continue
        if state == "finished" and not run.finished:
            continue
        if state == "resumable" and (run.finished or not run.path("last.pt").is_file()):
            continue
        if cfg is not None and not same_run(run, cfg, fingerprint, extra):
            continue
        if cfg is None and fingerprint is not None and run.record.get("dataset_fingerprint") != fingerprint:
            continue
        if where is not None and not where(run):
            continue
        return run
    return None


def find_seeds(results: Path | str, stage: str, name: str, cfg=None) -> list[Run]:
    """The seed replicates of a run: finished runs of ``stage``/``name`` on the same data whose
    settings differ at most in ``train.seed`` (those of ``cfg``, else of the newest such run);
    the newest one per seed, ordered by seed."""
    from dfflab.config import ConfigError

    runs = [r for r in reversed(list_runs(results, stage)) if r.finished and r.record.get("name") == name]
    if not runs:
        return []

    def key(run_or_cfg):
        ident = dict(identity(run_or_cfg.record["config"] if isinstance(run_or_cfg, Run) else run_or_cfg, stage))
        ident.pop("train.seed", None)
        return ident

    ref, fp = (key(cfg), None) if cfg is not None else (key(runs[0]), runs[0].record.get("dataset_fingerprint"))
    fp = fp or runs[0].record.get("dataset_fingerprint")
    by_seed: dict[int, Run] = {}
    for run in runs:
        try:
            same = run.record.get("dataset_fingerprint") == fp and key(run) == ref
        except ConfigError:
            continue
        seed = int(run.config.get("train", {}).get("seed", 0))
        if same and seed not in by_seed:
            by_seed[seed] = run
    return [by_seed[k] for k in sorted(by_seed)]


def open_or_resume(cfg, stage: str, name: str, *, fingerprint: str, parent: str | None = None, note: str = "",
                   resume: bool = True, resume_from: Path | str | None = None, extra: dict[str, Any] | None = None,
                   where: Callable[[Run], bool] | None = None, quiet: bool = False) -> tuple[Run, dict | None]:
    """(run, its ``last.pt`` state or None): the crashed run to continue, or a new run folder.

    Args:
        resume: continue the newest resumable run of ``stage``/``name`` that is :func:`same_run`.
        resume_from: continue exactly this run folder (it must be resumable).
        extra: fields recorded in config.json that must also match (an experiment's spec).
        where: a further test a run must pass to be resumed (e.g. not diverged).
    """
    from dfflab.config import ConfigError

    run = None
    if resume_from:
        run = Run.open(resume_from)
        if run.finished:
            raise ConfigError(f"{resume_from} already finished (has summary.json); nothing to resume")
        if not run.path("last.pt").is_file():
            raise ConfigError(f"{resume_from} has no last.pt to resume from")
    elif resume:
        run = find_run(cfg.results, stage, name=name, cfg=cfg, fingerprint=fingerprint, extra=extra,
                       state="resumable", where=where)
        newest = find_run(cfg.results, stage, name=name, state="resumable")
        if run is None and newest is not None and not quiet:
            print(f"not resuming {newest.dir}: its data or settings differ; starting afresh")
    if run is not None:
        if not quiet:
            print(f"resuming {run.dir}")
        return run, run.load("last.pt")
    return Run.create(cfg.results, stage, name, cfg.to_dict(), parent=parent, note=note, fingerprint=fingerprint,
                      extra=extra), None
