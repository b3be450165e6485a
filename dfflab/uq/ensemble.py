"""Deep ensembles: M centralized detectors that differ only in their seed, by one command.

    dfflab uq ensemble --preset quick --m 3            # trains ens-0..ens-2, then evaluates

Member i is a normal centralized run (``train.seed`` = base seed + i, name
``<name>-<i>``) with its own curves and checkpoint, so member 0 is the plain seed-0
detector. The ensemble's own run folder (stage ``ensemble``) logs one metrics.csv row
per finished member and lists them in summary.json; `dfflab uq evaluate` on that folder
compares the single detector (member 0) with the ensemble of all. After a crash,
rerunning the command continues the same ensemble: finished members are skipped and
a crashed member resumes from its last.pt.
"""

from __future__ import annotations

import copy

from dfflab.config import ConfigError
from dfflab.runs import Run, open_or_resume

STAGE = "ensemble"


def member_config(cfg, i: int):
    """``cfg`` for member ``i``: the seed is the only difference; the audit runs once (member 0)."""
    child = copy.deepcopy(cfg)
    child.train.seed = cfg.train.seed + i
    if i > 0 and hasattr(child.train, "audit"):
        child.train.audit = False
    return child


def train_ensemble(cfg, m: int | None = None, *, name: str = "ens", parent: str | None = None, note: str = "",
                   store=None, progress: bool = True, resume: bool = True) -> Run:
    """Train ``m`` (default ``cfg.uq.ensemble_size``) seeded detectors; returns the ensemble's run folder."""
    from dfflab.detector.trainer import train_detector

    m = cfg.uq.ensemble_size if m is None else m
    if m < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, got {m} (--m / uq.ensemble-size)")
    if store is None:
        from dfflab.data import ensure_store

        store = ensure_store(cfg, progress=progress)
    run, _ = open_or_resume(cfg, STAGE, name, fingerprint=store.fingerprint, parent=parent,
                            note=note or f"deep ensemble of {m} seeds", resume=resume, extra={"m": m},
                            quiet=not progress)
    run.save("last.pt", {"m": m})  # resumable until the summary is written; the members are in metrics.csv
    done = {int(r["member"]): r["run"] for r in run.metrics()}
    for i in range(m):
        if i in done:
            continue
        child_cfg = member_config(cfg, i)
        child = train_detector(child_cfg, name=f"{name}-{i}", parent=run.name, store=store, progress=progress,
                               note=f"member {i} of deep ensemble {run.name}: train.seed={child_cfg.train.seed}")
        s = child.summary()
        run.log_metrics({"member": i, "seed": child_cfg.train.seed, "run": child.name,
                         "val_auroc": s["val"].get("auroc"), "test_auroc": s["test"].get("auroc"),
                         "test_balanced_accuracy": s["test"].get("balanced_accuracy")})
        done[i] = child.name
    rows = sorted(run.metrics(), key=lambda r: int(r["member"]))
    run.write_summary({"m": m, "members": [done[i] for i in range(m)],
                       "seeds": [cfg.train.seed + i for i in range(m)],
                       "member_test_auroc": [r["test_auroc"] for r in rows]})
    if progress:
        print(f"ensemble run folder: {run.dir} (members: {', '.join(done[i] for i in range(m))})")
    return run
