"""Run records: one folder per run under ``<results>/runs/<timestamp>-<stage>-<name>/``.

A run folder holds ``config.json`` (resolved config, git commit, package versions,
dataset fingerprint, ``parent`` run and a free-text ``note`` on what the run changes
and why), ``metrics.csv`` (one row per epoch or round), ``summary.json`` (written once
at the end) and checkpoints. Every file is written atomically: a crash leaves either
the old file or the new one, never half of one. The report is built from these
folders alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "torchvision", "lightly", "flwr", "flwr-datasets", "torchmetrics", "numpy")


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """torch.save through a temp file; load with :func:`load_checkpoint`."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors are many; name the file
        raise RuntimeError(f"{path}: not a loadable dfflab checkpoint ({e})") from e


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
        p = self.dir / "metrics.csv"
        if not p.is_file():
            return []
        with open(p, newline="") as f:
            return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]

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
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
        atomic_write_text(self.dir / "metrics.csv", buf.getvalue())

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

    def load(self, name: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
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


def find_finished(results: Path | str, stage: str, name: str | None, cfg, fingerprint: str | None = None) -> Run | None:
    """The newest finished run of ``stage``/``name`` made with config ``cfg`` (to reuse it).

    ``name=None`` accepts a run of any name (the same computation recorded by another
    experiment); ``fingerprint`` also requires the run's dataset fingerprint. A run
    recorded before a setting existed counts as made with that setting's default.
    """
    from dfflab.config import ConfigError, config_from_dict

    want = cfg.to_dict()
    for run in reversed(list_runs(results, stage)):
        if (name is not None and run.record.get("name") != name) or not run.finished:
            continue
        if fingerprint is not None and run.record.get("dataset_fingerprint") != fingerprint:
            continue
        try:
            if config_from_dict(run.config).to_dict() == want:
                return run
        except ConfigError:  # a setting that no longer exists: not comparable
            continue
    return None


def find_unfinished(results: Path | str, stage: str, name: str) -> Run | None:
    """The newest run of ``stage``/``name`` that has a checkpoint but no summary (crashed)."""
    for run in reversed(list_runs(results, stage)):
        if run.record.get("name") == name and not run.finished and (run.dir / "last.pt").is_file():
            return run
    return None
