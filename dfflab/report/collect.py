"""Read run folders into plain records for the report (no training, no store needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfflab.files import fmt  # noqa: F401  (re-exported: the report modules import it from here)
from dfflab.runs import Run, is_side_run, list_runs, read_json


@dataclass
class RunInfo:
    """One finished run: its record, summary and metrics rows."""

    run: Run
    record: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record.get("name", self.run.name)

    @property
    def stage(self) -> str:
        return self.record.get("stage", "")

    @property
    def folder(self) -> str:
        return self.run.name

    @property
    def parent(self) -> str | None:
        return self.record.get("parent")

    @property
    def note(self) -> str:
        return self.record.get("note", "")

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    @property
    def seed(self) -> int:
        return int(get(self.config, "train.seed", 0) or 0)

    @property
    def fingerprint(self) -> str:
        return self.record.get("dataset_fingerprint") or ""

    @property
    def evolution(self) -> dict[str, Any]:
        return self.record.get("evolution") or {}

    @property
    def side(self) -> bool:
        """A cell of another experiment (crossgen fold, label-efficiency cell, ...), not a model of its own."""
        return is_side_run(self.name)

    @property
    def link(self) -> str:
        """A Markdown link to the run folder, relative to REPORT.md."""
        return f"[{self.folder}](runs/{self.folder})"

    def file(self, name: str) -> Path:
        return self.run.path(name)

    def last(self, key: str) -> Any:
        """The last metrics.csv value of ``key`` (None when no row has it)."""
        vals = [r[key] for r in self.rows if r.get(key) is not None]
        return vals[-1] if vals else None


def collect(results: Path | str) -> dict[str, list[RunInfo]]:
    """``{stage: [RunInfo, ...]}`` of finished runs, oldest first; of the runs sharing a stage, name and
    seed only the newest (a rerun replaces its earlier run; other seeds are replicates and stay)."""
    latest: dict[tuple[str, str, int], RunInfo] = {}
    for run in list_runs(results):
        if not run.finished:
            continue
        info = RunInfo(run, run.record, run.summary(), run.metrics())
        latest[(info.stage, info.name, info.seed)] = info  # list_runs is oldest first: later wins
    out: dict[str, list[RunInfo]] = {}
    for info in sorted(latest.values(), key=lambda i: i.folder):
        out.setdefault(info.stage, []).append(info)
    return out


def by_folder(runs: dict[str, list[RunInfo]]) -> dict[str, RunInfo]:
    return {i.folder: i for infos in runs.values() for i in infos}


def get(d: Any, path: str, default: Any = None) -> Any:
    """``get(summary, "test.auroc")`` with a default for anything missing."""
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def read_optional_json(path: Path) -> Any:
    """The JSON at ``path``, or None when there is no such file or it is not valid JSON."""
    try:
        return read_json(path) if Path(path).is_file() else None
    except ValueError:
        return None
