"""Flower ServerApp: runs the strategy and evaluates the global model each round.

Declared in ``pyproject.toml`` (``[tool.flwr.app.components]``); start it with
``flwr run .`` (see ``dfflab/federated/launcher.py`` for the exact commands) or
``dfflab federated run``. The settings arrive as Flower's run config
(:mod:`dfflab.federated.runconfig`); the resolved config travels to the clients in
each round's ``ConfigRecord`` so server and clients agree on data, model and recipe.
``fl.task=ssl`` runs federated SSL instead (:mod:`dfflab.federated.ssl_server`); a DP run
(``fl.dp-clip``) logs the epsilon spent after every round (:mod:`dfflab.federated.privacy`).
"""

from __future__ import annotations

import time
import traceback
from logging import ERROR, INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from dfflab.data import ensure_store
from dfflab.data.store import Store
from dfflab.detector.recipe import initial_model
from dfflab.federated import privacy, records, shares, task
from dfflab.federated.config import check_names, dp_enabled
from dfflab.federated.runconfig import from_run_config, read_run_config
from dfflab.federated.strategies import make_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """One dfflab run, or each run folder of ``batch`` in turn (see :func:`dfflab.federated.launcher.run_batch`)."""
    dirs = [d for d in str(context.run_config.get("batch", "")).split(";") if d]
    if not dirs:
        _run(grid, context.run_config)
        return
    failed = []
    for k, d in enumerate(dirs, 1):
        log(INFO, "dfflab batch: run %d of %d: %s", k, len(dirs), d)
        try:
            _run(grid, read_run_config(Path(d) / "flwr-run-config.toml"))
        except Exception:  # the next runs still run; the launcher reports the ones without a summary
            log(ERROR, "dfflab batch: run %s failed:\n%s", d, traceback.format_exc())
            failed.append(d)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(dirs)} batched runs failed: {', '.join(failed)}")


def _run(grid: Grid, run_config: dict) -> None:
    # -- setup: config, data ------------------------------------------------------------
    t0 = time.time()
    cfg, meta = from_run_config(run_config)
    check_names(cfg.fl)
    n = len(list(grid.get_node_ids()))
    if n != cfg.fl.num_partitions:  # N is the federation's size; say so when they differ
        log(WARNING, "fl.num-partitions=%d but the federation has %d SuperNodes: using N=%d "
            "(set it with --federation-config \"num-supernodes=N\")", cfg.fl.num_partitions, n, n)
        cfg.fl.num_partitions = n
    # the launcher (run_federated) has prepared the store; a bare `flwr run .` prepares it here
    store = Store(cfg.store_dir) if meta["run-dir"] else ensure_store(cfg, progress=False)
    if cfg.fl.task == "ssl":  # imported only here: the detector's server needs no lightly
        from dfflab.federated import ssl_server

        ssl_server.run(grid, cfg, meta, store, t0)
    else:
        _detector(grid, cfg, meta, store, t0)


def _detector(grid: Grid, cfg, meta: dict, store, t0: float) -> None:
    """Federated training of the detector: rounds, per-round global evaluation, final model."""
    n = cfg.fl.num_partitions
    run = records.open_run(cfg, meta, store.fingerprint)
    log(INFO, "dfflab run folder: %s", run.dir)
    client_shares = shares.prepare(run.dir, store, cfg, n)  # the launcher wrote them; a bare flwr run here
    parts = shares.composition(store, client_shares)

    device = task.device_for(cfg)
    model, init_path = initial_model(cfg, device)
    resume = records.resume_point(run)  # a crashed run of the same name continues
    done = int(resume["round"]) if resume else 0
    if resume:
        task.load_state(model, resume["state"])
        log(INFO, "resuming %s after round %d", run.dir, done)
    recorder = records.RoundRecorder(run, offset=done, samples=int(resume["samples"]) if resume else 0,
                                     steps=int(resume.get("steps", 0)) if resume else 0)
    strategy = make_strategy(cfg, n, task.bn_keys(model), recorder, done_rounds=done)
    dp = dp_enabled(cfg.fl)
    last: dict = {}

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """The centralized metrics of the global model, logged as one metrics.csv row."""
        recorder.mark(server_round, "server")
        task.load_state(model, arrays.to_torch_state_dict())
        if dp:  # the update carries no BatchNorm statistics: the server's own, from its validation rows
            privacy.server_batchnorm(model, store, cfg, device)
        last.update(task.global_eval(model, store, cfg, device))
        if server_round == 0 and done:  # the resumed-from model: its row is already there
            return MetricRecord({"round": float(done)})
        extra = {"epsilon": privacy.epsilon(strategy)} if dp else {}  # spent after this round's release
        row = recorder.log_round(server_round, {**task.eval_row(last), **extra})
        records.save_resume_point(run, model, done + server_round, recorder.samples, recorder.steps)
        return MetricRecord({k: float(v) for k, v in row.items() if isinstance(v, int | float)})

    # -- rounds (the strategy counts from 1; clients add round-offset) -----------------------
    config = records.round_config(cfg, run, done)
    initial = privacy.dp_arrays(cfg, task.state_of(model))
    strategy.start(grid=grid, initial_arrays=ArrayRecord(initial),
                   num_rounds=max(0, cfg.fl.rounds - done), timeout=cfg.fl.round_timeout or 6 * 3600, train_config=config,
                   evaluate_config=config, evaluate_fn=evaluate_global)

    # -- final model (evaluate_global loaded it last) and summary, written once ------------
    run.path("last.pt").unlink(missing_ok=True)  # finished: nothing to resume
    dp_record = {"dp": privacy.summary(cfg.fl, strategy), "epsilon": privacy.epsilon(strategy)} if dp else {}
    records.finish(run, cfg, store, model, last, {
        "init_path": init_path, "partition": parts, "seconds": round(time.time() - t0, 2),
        "device": str(device), **dp_record}, {} if dp else recorder.client_states, device)  # DP: no client BN
    log(INFO, "dfflab run folder: %s (test AUROC %.4f)", run.dir, last["test"]["auroc"])
    records.announce_finished(run)
