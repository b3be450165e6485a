"""Experiments made of several runs (the views experiment, label efficiency).

A sweep is a parent run folder whose ``metrics.csv`` has one row per finished cell
(``cell`` names it, ``run`` is the child run folder). Rerunning the same command after
a crash reopens the unfinished sweep with the same settings and spec
(:func:`dfflab.runs.open_or_resume`) and skips finished cells; each child resumes on its
own from its ``last.pt``. A cell whose run already exists, finished, with the same name
and settings (from an earlier sweep, say one with fewer cells) is reused rather than
trained again.
"""

from __future__ import annotations

from typing import Any

from dfflab.config import Config
from dfflab.runs import Run, open_or_resume


def open_sweep(cfg: Config, stage: str, name: str, spec: dict[str, Any], *, fingerprint: str,
               parent: str | None = None, note: str = "", resume: bool = True) -> tuple[Run, dict]:
    """(sweep run, {cell: row} of the cells already done)."""
    run, _ = open_or_resume(cfg, stage, name, fingerprint=fingerprint, parent=parent, note=note, resume=resume,
                            extra={"spec": spec}, quiet=True)
    run.save("last.pt", {"spec": spec})  # resumable until its summary is written
    return run, {r["cell"]: r for r in run.metrics()}


def finish_sweep(run: Run, summary: dict[str, Any]) -> None:
    """Write the sweep's summary; it is no longer resumable."""
    run.write_summary(summary)
    run.path("last.pt").unlink(missing_ok=True)
