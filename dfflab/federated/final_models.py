"""A federated run's final models, scored the way they are used.

* **FedBN** never produces one global model: each client keeps its own BatchNorm layers, so
  what a client deploys is the global weights with *its* BatchNorm layers
  (:func:`personalised_scores`). Each such model is scored on the global test set and on its
  own source (the test reals and its generator's test fakes); the summary's ``per_client``
  holds every client, their mean and the worst client (``test_scores_client<p>.npz`` each).
* **FedAvg-style** global models carry averaged BatchNorm running statistics, which are not
  the statistics of any data; :func:`reestimated_scores` re-estimates them on the server's
  validation rows and scores the model again (``test_bn_reestimated``; the plain averaged
  model stays the headline ``test``).

Thresholds are chosen on the global validation rows, as for the global model.
"""

from __future__ import annotations

import copy

import numpy as np

from dfflab.detector.recipe import new_model
from dfflab.federated import task
from dfflab.train.core import reestimate_batchnorm

KEYS = ("auroc", "balanced_accuracy", "accuracy", "ap", "eer")


def _scored(model, store, rows: dict, device, cfg, save_to=None) -> dict:
    """Threshold on val, test metrics with intervals; the test scores saved to ``save_to`` (for pairing)."""
    val = task.test(model, store, rows["val"], device, amp=cfg.train.amp)
    test = task.test(model, store, rows["test"], device, threshold=val.threshold, amp=cfg.train.amp)
    test.add_intervals(cfg.train.bootstrap, cfg.train.seed)
    if save_to is not None:
        test.save(save_to)
    return {"threshold": val.threshold, "test": test.overall, "test_per_source": test.per_source}


def personalised_scores(global_state: dict, client_states: dict[int, dict], bn: set[str], client_source: dict,
                        store, cfg, device, run=None) -> dict:
    """``{"clients": {pid: {...}}, "mean": {...}, "worst": {...}}`` of the FedBN personalised models.

    Args:
        client_source: partition id -> the fake source it holds (``None`` if mixed).
    """
    rows = task.global_rows(store, cfg)
    clients = {}
    for pid, state in sorted(client_states.items()):
        model = new_model(cfg, device)
        task.load_state(model, global_state, keep_local={k: state[k] for k in bn if k in state})
        out = _scored(model, store, rows, device, cfg,
                      run.path(f"test_scores_client{pid}.npz") if run is not None else None)
        src = client_source.get(pid)
        if src is not None and src in out["test_per_source"]:
            out["own_source"] = {"source": src, **out["test_per_source"][src]}
        clients[str(pid)] = out
    if not clients:
        return {}
    mean = {k: float(np.mean([c["test"][k] for c in clients.values()])) for k in KEYS}
    worst_id = min(clients, key=lambda p: clients[p]["test"]["auroc"])
    own = [c["own_source"]["auroc"] for c in clients.values() if "own_source" in c]
    return {"clients": clients, "mean": mean, "mean_own_source_auroc": float(np.mean(own)) if own else None,
            "worst": {"client": int(worst_id), **{k: clients[worst_id]["test"][k] for k in KEYS}}}


def reestimated_scores(model, store, cfg, device, run=None) -> dict:
    """The global model with BatchNorm statistics re-estimated on the global validation rows
    (its test scores in ``test_scores_bn_reestimated.npz`` of ``run``)."""
    model = copy.deepcopy(model)
    rows = task.global_rows(store, cfg)
    n = reestimate_batchnorm(model, store.batches(rows["val"], cfg.train.batch_size), device, cfg.train.amp)
    save = run.path("test_scores_bn_reestimated.npz") if run is not None else None
    return {**_scored(model, store, rows, device, cfg, save), "images": n}
