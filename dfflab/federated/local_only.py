"""The local-only baseline: each client trains alone on its partition, no communication.

    dfflab federated local-only --preset quick

The lower bound a federation must beat. Every client runs the federated client's round
(:func:`dfflab.federated.task.local_train`, the shared detector recipe) for ``fl.rounds``
x ``fl.local-epochs`` epochs from the same initial model, and is scored after each
round-equivalent on the global test set (threshold on the global val split), as the
Flower server scores its global model.
"""

from __future__ import annotations

import copy
import time

from dfflab.evidence import mean_intervals
from dfflab.federated.runconfig import absolute_paths
from dfflab.runs import Run

STAGE = "federated"


MEAN_KEYS = ("accuracy", "balanced_accuracy", "auroc", "ap", "eer", "f1", "precision", "recall", "loss")


def run_local_only(cfg, *, name: str | None = None, parent: str | None = None, note: str = "",
                   progress: bool = True) -> Run:
    """Train every client of the partition alone; returns the run folder.

    ``metrics.csv`` holds the mean over clients (the curves ``dfflab compare`` draws)
    and each client's ``test_auroc_client<p>``; ``detector_client<p>.pt`` each model.
    """
    from tqdm import tqdm

    from dfflab.data import ensure_store
    from dfflab.detector.recipe import initial_model
    from dfflab.federated import task
    from dfflab.federated.partition import (
        all_client_rows,
        make_partitioner,
        plot_partition,
    )
    from dfflab.federated.shares import composition
    from dfflab.models import save_detector

    cfg = absolute_paths(copy.deepcopy(cfg))
    store = ensure_store(cfg, progress=progress)
    part = make_partitioner(store, cfg)
    parts = all_client_rows(part)
    name = name or f"local-only-{cfg.fl.partitioning}"
    run = Run.create(cfg.results, STAGE, name, cfg.to_dict(), parent=parent, note=note,
                     fingerprint=store.fingerprint)
    plot_partition(part, run.path("partition.png"), f"{cfg.fl.partitioning} partition, N={len(parts)}")
    device = task.device_for(cfg)
    models = {p: initial_model(cfg, device)[0] for p in parts}
    opt_states: dict[int, dict | None] = {p: None for p in parts}
    t0, samples, steps = time.time(), 0, 0
    first = task.global_eval(models[0], store, cfg, device)  # all clients start from this model
    run.log_metrics({"round": 0, "samples": 0, "steps": 0, "epochs_per_client": 0, **task.eval_row(first),
                     "seconds": 0.0})
    for r in tqdm(range(1, cfg.fl.rounds + 1), desc=f"local-only {name}", disable=not progress):
        evals, round_steps = {}, []
        for p, rows in parts.items():
            stats, opt = task.local_train(models[p], store, rows["train"], cfg, device, server_round=r,
                                          partition_id=p, optimizer_state=opt_states[p])
            opt_states[p] = opt if cfg.fl.keep_optimizer else None
            samples += stats["images"]
            round_steps.append(stats["steps"])
            evals[p] = task.global_eval(models[p], store, cfg, device)
        steps += max(round_steps)  # the clients would train side by side: the longest counts
        row = {"round": r, "samples": samples, "steps": steps, "epochs_per_client": r * cfg.fl.local_epochs,
               **_mean_rows([task.eval_row(e) for e in evals.values()]),
               **{f"test_auroc_client{p}": e["test"]["auroc"] for p, e in evals.items()},
               "seconds": round(time.time() - t0, 2)}
        run.log_metrics(row)
    for p, e in evals.items():
        e["scores"].add_intervals(cfg.train.bootstrap, cfg.train.seed)  # each client model's own intervals
        e["scores"].save(run.path(f"test_scores_client{p}.npz"))
        save_detector(run.path(f"detector_client{p}.pt"), models[p], cfg.model, store.image_size,
                      threshold=e["threshold"], source_names=store.source_names, stage=STAGE,
                      run=run.name, partition_id=p, train_sources=store.resolve_sources(cfg.train.train_sources))
    scored = [e["scores"] for e in evals.values()]
    mean_ci = mean_intervals([sc.probs for sc in scored], scored[0].pred.labels.numpy(),
                             [sc.threshold for sc in scored], cfg.train.bootstrap, cfg.train.seed)
    summary = {"test": {**_mean_metrics([e["test"] for e in evals.values()]), **mean_ci},
               "test_per_source": {s: _mean_metrics([e["test_per_source"][s] for e in evals.values()])
                                   for s in first["test_per_source"]},
               "clients": {str(p): {"test": e["test"], "test_per_source": e["test_per_source"],
                                    "threshold": e["threshold"]} for p, e in evals.items()},
               "strategy": "local-only", "partitioning": cfg.fl.partitioning, "num_partitions": len(parts),
               "rounds": cfg.fl.rounds, "rounds_run": cfg.fl.rounds, "local_epochs": cfg.fl.local_epochs,
               "samples": samples, "steps": steps, "epochs_per_client": cfg.fl.rounds * cfg.fl.local_epochs,
               "seconds": round(time.time() - t0, 2), "init": cfg.train.init,
               "partition": composition(store, parts), "device": str(device)}
    run.write_summary(summary)
    if progress:
        print(f"{name}: mean client test AUROC {summary['test']['auroc']:.4f}; run folder {run.dir}")
    return run


def _mean_metrics(ms: list[dict]) -> dict[str, float]:
    return {k: sum(m[k] for m in ms) / len(ms) for k in MEAN_KEYS if all(k in m for m in ms)}


def _mean_rows(rows: list[dict]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
