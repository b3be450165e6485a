"""Experiments made of several runs (the views experiment, label efficiency).

A sweep is a parent run folder whose ``metrics.csv`` has one row per finished cell
(``cell`` names it, ``run`` is the child run folder). Rerunning the same command after
a crash reopens the unfinished sweep with the same config and skips finished cells;
each child resumes on its own from its ``last.pt``. A cell whose run already exists,
finished, with the same name and config (from an earlier sweep, say one with fewer
cells) is reused rather than trained again.
"""

from __future__ import annotations

from typing import Any

from dfflab.config import Config, apply_dict, config_from_dict
from dfflab.runs import Run, list_runs


def open_sweep(cfg: Config, stage: str, name: str, spec: dict[str, Any], *, fingerprint: str,
               parent: str | None = None, note: str = "", resume: bool = True) -> tuple[Run, dict]:
    """(sweep run, {cell: row} of the cells already done)."""
    if resume:
        for run in reversed(list_runs(cfg.results, stage)):
            rec = run.record
            if (rec.get("name") == name and not run.finished and rec.get("spec") == spec
                    and run.config == cfg.to_dict()):
                return run, {r["cell"]: r for r in run.metrics()}
    run = Run.create(cfg.results, stage, name, cfg.to_dict(), parent=parent, note=note,
                     fingerprint=fingerprint, extra={"spec": spec})
    return run, {}


def derive(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with ``{"ssl.views": "crop", ...}`` applied."""
    out = config_from_dict(cfg.to_dict())
    apply_dict(out, overrides, "sweep")
    return out


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats with three decimals."""
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
