"""The federated recipe search: what closes the gap to the centralized baseline at equal epochs per client.

    dfflab federated search --preset standard

An evolution chain (:mod:`dfflab.evolution`) on IID clients, where client heterogeneity
cannot be the cause of a gap: every step changes one thing, its reason is read off the
parent's curves, and it is accepted only when its test AUROC is significantly better than the
last accepted step's (paired bootstrap on the same test images). Every step trains
``fl.rounds`` x ``fl.local-epochs`` epochs per client, the centralized run's ``train.epochs``.
The steps, in order:

1. ``fl-iid-base`` -- FedAvg with the centralized recipe on every client;
2. ``fl-iid-keep-optimizer`` -- clients keep AdamW's moments across rounds (``fl.keep-optimizer``);
3. ``fl-iid-local-batch`` -- each client steps with batch ``train.batch-size / N``
   (``fl.local-batch-size``): as many optimizer steps per epoch as the centralized run;
4. ``fl-iid-client-trajectory`` -- both together: each client runs the centralized optimizer
   trajectory (each alone was not enough in the measurements that motivated this step);
5. ``fl-iid-server-momentum`` -- FedAvgM (``fl.strategy=fedavgm``) on top;
6. ``fl-iid-server-step`` -- the averaged update applied with step sqrt(N) (FedAvgM, no momentum);
7. ``fl-iid-fewer-rounds`` -- 5 local epochs per round and a fifth of the rounds (the same epochs
   per client, a fifth of the averagings).

The accepted settings are the search's result (``summary.json`` of its last step and
``recipe`` in :func:`run_search`'s return); the pipeline then trains the by-source runs with them.
"""

from __future__ import annotations

from collections.abc import Callable

from dfflab.config import derive
from dfflab.evolution import judge, step_record
from dfflab.runs import Run, find_run

CHAIN = "fl-recipe"


def _steps(cfg) -> list[tuple[str, dict, str, Callable[[Run, Run | None], str]]]:
    """(name, overrides, the change, reason from the parent's curves) of each step."""
    n = cfg.fl.num_partitions
    total = cfg.fl.rounds * cfg.fl.local_epochs  # epochs per client, kept by every step
    epochs_per_round = 5 if total >= 10 else max(1, total // 2)

    def per_round_gain(parent: Run, central: Run | None) -> str:
        rows = [r for r in parent.metrics() if r.get("test_auroc") is not None]
        last = rows[-1]["test_auroc"] - rows[-2]["test_auroc"] if len(rows) > 1 else float("nan")
        steps = rows[-1].get("steps")
        ref = f" against {central.summary().get('steps')} for the centralized run" if central else ""
        return (f"the parent made {steps} sequential optimizer steps{ref} and its test AUROC still rose "
                f"{last:+.3f} in its last round: it is short of steps, not of data")

    def optimizer_restart(parent: Run, central: Run | None) -> str:
        rows = [r for r in parent.metrics() if r.get("train_loss") is not None]
        jumps = sum(1 for a, b in zip(rows, rows[1:], strict=False) if b["train_loss"] > a["train_loss"])
        return (f"every round starts AdamW afresh on each client (its moment estimates are lost); the parent's "
                f"train loss rose in {jumps} of {max(0, len(rows) - 1)} round transitions")

    def drift(parent: Run, central: Run | None) -> str:
        rows = [r for r in parent.metrics() if r.get("test_auroc") is not None]
        drops = sum(1 for a, b in zip(rows, rows[1:], strict=False) if b["test_auroc"] < a["test_auroc"])
        return (f"the averaged update is applied with step 1 and no memory; the parent's test AUROC fell in "
                f"{drops} of {max(0, len(rows) - 1)} rounds, which server momentum smooths")

    def together(parent: Run, central: Run | None) -> str:
        tried = [r for r in (find_run(parent.dir.parent.parent, "federated", name=k)
                             for k in ("fl-iid-keep-optimizer", "fl-iid-local-batch")) if r is not None]
        verdicts = [f"{r.record['name']} {r.record.get('evolution', {}).get('comparison', {}).get('verdict', '?')}"
                    for r in tried]
        return ("each was tried alone above (" + (", ".join(verdicts) or "not yet") + "); either alone leaves "
                "a client's Adam short of the centralized trajectory: fresh moments every round, or a third of "
                "the steps")

    def shrinking(parent: Run, central: Run | None) -> str:
        rows = [r for r in parent.metrics() if r.get("train_loss") is not None]
        ref = central.metrics()[-1].get("train_loss") if central and central.metrics() else None
        return (f"the parent's clients end at train loss {rows[-1]['train_loss']:.3f}"
                + (f" against {ref:.3f} for the centralized run" if ref is not None else "")
                + f": averaging {n} clients' Adam steps, whose noisy parts point different ways, shrinks the step")

    def averaging(parent: Run, central: Run | None) -> str:
        rows = [r for r in parent.metrics() if r.get("train_loss") is not None]
        ref = central.metrics()[-1].get("train_loss") if central and central.metrics() else None
        return (f"the parent's clients end at train loss {rows[-1]['train_loss']:.3f}"
                + (f" against {ref:.3f} for the centralized run" if ref is not None else "")
                + f" after {len(rows)} averagings: progress is lost in averaging, so average less often")

    return [
        ("fl-iid-base", {"fl.partitioning": "iid", "fl.strategy": "fedavg", "fl.keep-optimizer": False,
                         "fl.local-batch-size": 0},
         "FedAvg on IID clients with the centralized recipe on every client",
         lambda p, c: "the federated counterpart of the centralized baseline, where heterogeneity cannot cause a gap"),
        ("fl-iid-keep-optimizer", {"fl.keep-optimizer": True}, "clients keep AdamW's state across rounds",
         optimizer_restart),
        ("fl-iid-local-batch", {"fl.local-batch-size": max(1, cfg.train.batch_size // n)},
         f"local batch = train.batch-size / N = {max(1, cfg.train.batch_size // n)}", per_round_gain),
        ("fl-iid-client-trajectory", {"fl.keep-optimizer": True,
                                      "fl.local-batch-size": max(1, cfg.train.batch_size // n)},
         "clients keep AdamW's state and step with batch train.batch-size / N together: each client runs the "
         "centralized run's optimizer trajectory (as many steps per epoch, moments carried over)", together),
        ("fl-iid-server-momentum", {"fl.strategy": "fedavgm"},
         f"FedAvgM: server momentum {cfg.fl.server_momentum}", drift),
        ("fl-iid-server-step", {"fl.strategy": "fedavgm", "fl.server-momentum": 0.0,
                                "fl.server-step": round(n ** 0.5, 3)},
         f"FedAvg's averaged update applied with step sqrt(N) = {n ** 0.5:.2f} (FedAvgM without momentum)",
         shrinking),
        ("fl-iid-fewer-rounds", {"fl.local-epochs": epochs_per_round, "fl.rounds": max(1, total // epochs_per_round)},
         f"{epochs_per_round} local epochs per round, {max(1, total // epochs_per_round)} rounds (the same "
         f"{total} epochs per client)", averaging),
    ]


def run_search(cfg, *, store, central: Run | None = None, progress: bool = True,
               runner: Callable | None = None) -> dict:
    """Run (or reuse) every step; returns ``{"runs": [...], "recipe": accepted overrides, "best": run name}``.

    Args:
        central: the centralized baseline the chain is read against (its steps, for the reasons).
        runner: ``run_federated``-compatible (tests pass a cheaper one).
    """
    if runner is None:
        from dfflab.federated.launcher import run_federated as runner
    recipe: dict = {}
    best: Run | None = None
    runs = []
    for i, (name, over, change, reason) in enumerate(_steps(cfg)):
        step_cfg = derive(cfg, {**recipe, **over})
        run = find_run(cfg.results, "federated", name=name, cfg=step_cfg, fingerprint=store.fingerprint)
        if run is None:
            why = reason(best, central) if best is not None else reason(None, central)
            run = runner(step_cfg, name=name, parent=best.name if best else (central.name if central else None),
                         note=f"{change}: {why}", progress=progress,
                         extra=step_record(CHAIN, i, change, why, best.name if best else None))
        evo = judge(run, best)
        runs.append(run)
        if evo["accepted"]:
            recipe.update(over)
            best = run
        if progress:
            comp = evo.get("comparison") or {}
            print(f"{CHAIN} step {i} {name}: test AUROC {run.summary()['test']['auroc']:.4f}"
                  + (f", {comp['diff']:+.4f} [{comp['ci'][0]:+.4f}, {comp['ci'][1]:+.4f}] vs {comp['vs']}: "
                     f"{comp['verdict']}" if comp else "") + f" -> {'accepted' if evo['accepted'] else 'rejected'}")
    return {"runs": runs, "recipe": {k: v for k, v in recipe.items() if k != "fl.partitioning"},
            "best": best.name if best else None}
