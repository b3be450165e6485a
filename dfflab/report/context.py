"""The report's view of one results folder: runs by stage, seed replicates, paired comparisons.

Every section of the report reads the results through a :class:`Context`; it holds nothing
that the run folders don't (plus the pipeline's ``state.json`` timings), and computes
paired differences from the runs' ``test_scores.npz`` on demand, once each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dfflab.report.collect import RunInfo, by_folder, collect, get, read_optional_json
from dfflab.runs import find_seeds

# The paired bootstrap behind the report's own comparisons: seeded, so a rebuild (and a test
# that recomputes them) gets the very same intervals. Resamples: the runs' train.bootstrap.
PAIRED_SEED = 0
MIN_RESAMPLES = 200


def resamples(runs: list[RunInfo]) -> int:
    """Bootstrap resamples for comparing ``runs``: the smallest ``train.bootstrap`` they recorded."""
    values = [int(get(r.config, "train.bootstrap", 1000) or 0) for r in runs]
    n = min(values) if values else 1000
    return 0 if n <= 0 else max(n, MIN_RESAMPLES)


class Context:
    """Runs of ``<results>/runs`` grouped for the report."""

    def __init__(self, results: Path | str, pipeline_state: dict | None = None):
        self.results = Path(results)
        self.plots = self.results / "plots"
        self.plots.mkdir(parents=True, exist_ok=True)
        self.runs = collect(self.results)
        self.folders = by_folder(self.runs)
        self.state = pipeline_state or read_optional_json(self.results / "pipeline" / "state.json") or {}
        self._scored: dict[str, object] = {}
        self._paired: dict[tuple, dict | None] = {}
        self._seeds: dict[tuple[str, str], list[RunInfo]] = {}
        self.notes: list[str] = []  # comparisons that could not be made, and why

    # -- finding runs ----------------------------------------------------------------------
    def stage(self, name: str) -> list[RunInfo]:
        return self.runs.get(name, [])

    def all_runs(self) -> list[RunInfo]:
        return [r for v in self.runs.values() for r in v]

    def seeds(self, stage: str, name: str) -> list[RunInfo]:
        """The seed replicates of ``stage``/``name`` (:func:`dfflab.runs.find_seeds`), in seed order."""
        if (stage, name) not in self._seeds:  # find_seeds reads every run's config: once per name
            group = [self.folders[r.name] for r in find_seeds(self.results, stage, name) if r.name in self.folders]
            self._seeds[(stage, name)] = group or [r for r in self.stage(stage) if r.name == name][:1]
        return self._seeds[(stage, name)]

    def find(self, stage: str, name: str) -> RunInfo | None:
        """The first seed of ``stage``/``name``."""
        group = self.seeds(stage, name)
        return group[0] if group else None

    def names(self, stage: str, side: bool = False) -> list[str]:
        """Distinct run names of a stage in first-run order (side runs left out unless ``side``)."""
        out: list[str] = []
        for r in self.stage(stage):
            if (side or not r.side) and r.name not in out:
                out.append(r.name)
        return out

    def groups(self, stage: str) -> list[list[RunInfo]]:
        """Seed groups of the stand-alone runs of a stage (one list per name)."""
        return [g for g in (self.seeds(stage, n) for n in self.names(stage)) if g]

    def baseline(self) -> list[RunInfo]:
        """The centralized baseline's seeds: ``scratch``, else the first centralized detector."""
        names = self.names("centralized")
        if not names:
            return []
        return self.seeds("centralized", "scratch" if "scratch" in names else names[0])

    def parent_of(self, r: RunInfo) -> RunInfo | None:
        return self.folders.get(r.parent or "")

    # -- evidence --------------------------------------------------------------------------
    def scored(self, r: RunInfo):
        """The run's test scores (:class:`dfflab.evidence.Scored`), or None without ``test_scores.npz``."""
        if r.folder not in self._scored:
            from dfflab.detector.scoring import load_scored

            path = r.file("test_scores.npz")
            self._scored[r.folder] = load_scored(path) if path.is_file() else None
        return self._scored[r.folder]

    def paired(self, a: list[RunInfo], b: list[RunInfo], metric: str = "auroc") -> dict | None:
        """``metric(a) - metric(b)`` with its paired-bootstrap interval and verdict
        (:func:`dfflab.evidence.paired_difference`), seeds paired by seed value; None (and a note)
        when the runs share no seed, lack test scores, or were scored on different test rows."""
        pairs = [(x, y) for x in a for y in b if x.seed == y.seed]
        if not pairs:
            pairs = [(a[0], b[0])] if a and b else []
        key = (tuple(x.folder for x, _ in pairs), tuple(y.folder for _, y in pairs), metric)
        if key in self._paired:
            return self._paired[key]
        out = None
        if pairs:
            sa, sb = [self.scored(x) for x, _ in pairs], [self.scored(y) for _, y in pairs]
            n = resamples([r for p in pairs for r in p])
            label = f"{pairs[0][0].name} vs {pairs[0][1].name}"
            if any(s is None for s in sa + sb):
                self.notes.append(f"{label}: no paired interval (a run has no test_scores.npz)")
            elif any(not np.array_equal(s.rows, sa[0].rows) for s in sa + sb):
                self.notes.append(f"{label}: no paired interval (scored on different test rows)")
            elif n == 0:
                self.notes.append(f"{label}: no paired interval (train.bootstrap=0)")
            else:
                from dfflab.evidence import paired_difference

                out = {**paired_difference(sa, sb, metric, n, PAIRED_SEED),
                       "a_runs": [x.folder for x, _ in pairs], "b_runs": [y.folder for _, y in pairs]}
        self._paired[key] = out
        return out

    # -- figures ---------------------------------------------------------------------------
    def img(self, src: Path | None, name: str, alt: str) -> list[str]:
        """Copy a run's PNG into plots/ and link it (nothing if it does not exist)."""
        if src is None or not Path(src).is_file():
            return []
        dest = self.plots / name
        if Path(src).resolve() != dest.resolve():
            shutil.copyfile(src, dest)
        return [f"![{alt}](plots/{name})", ""]
