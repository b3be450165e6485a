"""The ServerApp's federated SSL run (``fl.task=ssl``): aggregate the online network, monitor, save the backbone.

    dfflab federated ssl --method byol --preset quick
    flwr run . --stream --run-config 'preset="quick" fl.task="ssl" ssl.method="byol"' \\
        --federation-config "num-supernodes=3"

``dfflab federated ssl`` sets ``fl.rounds`` to ``ssl.epochs / fl.local-epochs`` (:func:`ssl_config`);
a bare ``flwr run .`` takes ``fl.rounds`` as given. Each round ``fl.strategy`` (FedAvg by default) averages the clients' online networks
(:mod:`dfflab.federated.ssl_task`); the server then probes the global backbone as
``dfflab ssl pretrain`` does each epoch. The run folder (stage ``federated-ssl``) holds:

* ``metrics.csv``: one row per round (round 0 = the random init, with the linear probe; the
  last round adds it again): ``epoch`` (epochs per client so far), the clients' mean SSL loss
  ``train_loss``, kNN real/fake and source scores on val, the round's timings; ``clients.csv``
  (per client and round: loss, FedEMA divergence and mu);
* ``backbone.pt``: what ``--init <run>`` loads for the centralized detector and for
  federated fine-tuning (``dfflab federated run --set train.init=<run>``);
* ``summary.json``: kNN and linear probe on val and test, under the keys ``dfflab ssl pretrain``
  writes (``knn``, ``linear``, ``random_init``), and the federation's settings.
"""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import ArrayRecord, MetricRecord
from flwr.common import log

from dfflab.config import ConfigError
from dfflab.federated import privacy, records, shares, ssl_task, task
from dfflab.federated.config import dp_enabled
from dfflab.federated.strategies import KEEPS_LOCAL_BN, make_strategy
from dfflab.models import save_backbone


def ssl_config(cfg, method: str | None = None, rounds: int | None = None):
    """``cfg`` for a federated SSL run: ``fl.task=ssl``, ``ssl.method``, and ``fl.rounds`` (default
    ``ssl.epochs / fl.local-epochs``: each client passes over its own images as often as centralized
    pretraining passes over all of them -- the same epochs, so the two compare at one budget)."""
    from dfflab.config import derive

    over = {"fl.task": "ssl", **({"ssl.method": method} if method else {})}
    cfg = derive(cfg, over)
    if rounds is None:
        rounds = max(1, cfg.ssl.epochs // cfg.fl.local_epochs)
    return derive(cfg, {"fl.rounds": rounds})


def run(grid, cfg, meta: dict, store, t0: float) -> None:
    """Federated SSL pretraining of ``cfg.ssl.method``; writes the run folder."""
    if cfg.fl.strategy in KEEPS_LOCAL_BN:
        raise ConfigError(f"fl.strategy={cfg.fl.strategy}: federated SSL clients do not keep local BatchNorm")
    cfg.fl.fraction_evaluate = 0.0  # SSL clients have nothing to validate; the server probes the backbone
    n = cfg.fl.num_partitions
    run = records.open_run(cfg, meta, store.fingerprint)
    log(INFO, "dfflab run folder: %s", run.dir)
    parts = shares.composition(store, shares.prepare(run.dir, store, cfg, n))

    device = task.device_for(cfg)
    method = ssl_task.new_method(cfg, device)
    resume = records.resume_point(run)  # clients restart their own state (target, FedEMA lambda)
    done = int(resume["round"]) if resume else 0
    if resume:
        task.load_state(method, resume["state"])
        log(INFO, "resuming %s after round %d", run.dir, done)
    recorder = records.RoundRecorder(run, offset=done, samples=int(resume["samples"]) if resume else 0,
                                     steps=int(resume.get("steps", 0)) if resume else 0)
    strategy = make_strategy(cfg, n, task.bn_keys(method), recorder, done_rounds=done)
    probes = ssl_task.probe_rows(store, cfg)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """kNN scores of the global backbone on val (and the linear probe first and last): one row."""
        recorder.mark(server_round, "server")
        ssl_task.load_online(method, arrays.to_torch_state_dict())
        if server_round == 0 and done:
            return MetricRecord({"round": float(done)})
        r = done + server_round
        row = {"epoch": r * cfg.fl.local_epochs,
               **ssl_task.probe(method.backbone, store, probes, cfg, device, linear=r in (0, cfg.fl.rounds))}
        if dp_enabled(cfg.fl):
            row["epsilon"] = privacy.epsilon(strategy)
        row = recorder.log_round(server_round, row)
        records.save_resume_point(run, method, r, recorder.samples, recorder.steps)
        return MetricRecord({k: float(v) for k, v in row.items() if isinstance(v, int | float)})

    config = records.round_config(cfg, run, done)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(privacy.dp_arrays(cfg, ssl_task.online_state(method))),
                   num_rounds=max(0, cfg.fl.rounds - done), timeout=cfg.fl.round_timeout or 6 * 3600,
                   train_config=config, evaluate_config=config, evaluate_fn=evaluate_global)

    run.path("last.pt").unlink(missing_ok=True)
    _finish(run, cfg, store, method, probes, device, strategy, {"partition": parts, "seconds": time.time() - t0})
    log(INFO, "dfflab run folder: %s (%s)", run.dir, records.result_line(run.summary()))
    records.announce_finished(run)


def _finish(run, cfg, store, method, probes: dict, device, strategy, extra: dict) -> None:
    """``backbone.pt`` and ``summary.json`` (final kNN and linear probes on val and test)."""
    s, fl = cfg.ssl, cfg.fl
    epochs = fl.rounds * fl.local_epochs
    save_backbone(run.path("backbone.pt"), method.backbone, cfg.model, store.image_size, method=s.method,
                  views=s.views, epochs=epochs, federated=True, ssl_update=fl.ssl_update, rounds=fl.rounds)
    final = ssl_task.probe(method.backbone, store, probes, cfg, device, splits=("val", "test"), linear=True)
    rows = run.metrics()
    knn = {k: v for k, v in final.items() if k.startswith("knn_")}
    linear = {k: v for k, v in final.items() if k.startswith("linear_")}
    dp = {"dp": privacy.summary(fl, strategy), "epsilon": privacy.epsilon(strategy)} if dp_enabled(fl) else {}
    run.write_summary({
        "method": s.method, "views": s.views, "reals_only": s.reals_only, "epochs": epochs, "federated": True,
        "ssl_update": fl.ssl_update if s.method == "byol" else "global", "strategy": fl.strategy,
        "partitioning": fl.partitioning, "num_partitions": fl.num_partitions, "rounds": fl.rounds,
        "rounds_run": max((r["round"] for r in rows), default=0), "local_epochs": fl.local_epochs,
        "samples": rows[-1]["samples"] if rows else 0,
        "failures": sum(int(r.get("failures") or 0) for r in rows),
        "seconds": round(extra.pop("seconds"), 1), "final_ssl_loss": rows[-1].get("train_loss") if rows else None,
        "random_init": {k: v for k, v in rows[0].items() if k.startswith(("knn_", "linear_"))} if rows else {},
        "knn": knn, "linear": linear, "source_names": store.source_names, "backbone": str(run.path("backbone.pt")),
        **dp, **extra})
