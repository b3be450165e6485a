"""Evolution chains: a model improved one change at a time, each step judged against its parent.

A step is an ordinary run folder whose ``config.json`` carries an ``evolution`` record::

    {"chain": "fl-recipe", "step": 2, "change": "local batch = batch / N",
     "reason": "<read off the parent's curves>", "parent": "<run folder>",
     "comparison": {paired difference of the test metric, its 95% CI, verdict},
     "accepted": true}

:func:`judge` scores a finished step against its parent with a paired bootstrap on the same
test images (:func:`dfflab.evidence.paired_difference`): a step is **accepted** only when it is
significantly better; a rejected step stays in the chain (and in the report) marked as rejected,
and the next step starts from the last accepted one. :func:`chain_runs` reads a chain back.
"""

from __future__ import annotations

from pathlib import Path

from dfflab.runs import Run, list_runs


def step_record(chain: str, step: int, change: str, reason: str, parent: str | None) -> dict:
    """The ``extra`` of :meth:`dfflab.runs.Run.create` for one step (before it is judged)."""
    return {"evolution": {"chain": chain, "step": step, "change": change, "reason": reason, "parent": parent}}


def scores_of(run: Run):
    """A run's test scores (``test_scores.npz``) for paired comparisons."""
    from dfflab.detector.scoring import load_scored

    path = run.path("test_scores.npz")
    if not path.is_file():
        raise FileNotFoundError(f"{run.dir}: no test_scores.npz to compare (a run from before intervals existed?)")
    return load_scored(path)


def judge(run: Run, parent: Run | None, metric: str = "auroc", n_resamples: int = 1000) -> dict:
    """Compare ``run`` with ``parent`` (paired), record the verdict and acceptance in its
    ``evolution`` record; returns that record. The first step of a chain (no parent) is accepted."""
    from dfflab.evidence import paired_difference

    evo = dict(run.record.get("evolution") or {})
    if parent is None:
        evo.update(accepted=True, comparison=None)
    else:
        comp = paired_difference(scores_of(run), scores_of(parent), metric, n_resamples)
        evo.update(comparison={**comp, "vs": parent.name}, accepted=comp["verdict"] == "better")
    run.update_record(evolution=evo)
    return evo


def chain_runs(results: Path | str, chain: str) -> list[Run]:
    """The finished steps of ``chain``, in step order (the newest run of each step)."""
    steps: dict[int, Run] = {}
    for run in list_runs(results):
        evo = run.record.get("evolution") or {}
        if evo.get("chain") == chain and run.finished:
            steps[int(evo.get("step", 0))] = run  # list_runs is oldest first: the newest wins
    return [steps[k] for k in sorted(steps)]
