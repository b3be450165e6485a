"""Read run folders into plain records for the report (no training, no store needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfflab.runs import Run, list_runs, read_json


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

    def file(self, name: str) -> Path:
        return self.run.path(name)


def collect(results: Path | str) -> dict[str, list[RunInfo]]:
    """``{stage: [RunInfo, ...]}`` of finished runs, oldest first, newest per (stage, name) only."""
    latest: dict[tuple[str, str], RunInfo] = {}
    for run in list_runs(results):
        if not run.finished:
            continue
        rec = run.record
        info = RunInfo(run, rec, run.summary(), run.metrics())
        latest[(info.stage, info.name)] = info  # list_runs is oldest first: later wins
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


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def read_optional_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None
