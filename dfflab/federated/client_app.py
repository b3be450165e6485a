"""Flower ClientApp: local training and local validation of one partition.

Each message carries the global weights (``arrays``) and the resolved dfflab config
(``config["dfflab-config"]``); the client's partition is ``partition-id`` of
``num-partitions`` from its node config. What a client keeps in ``context.state``
between rounds: FedBN clients their BatchNorm layers (they load only the other weights
from the server); with ``fl.keep-optimizer`` every client its AdamW state.
Test hooks: ``fl.fail-client`` raises or hangs (``fl.fail-mode``); the clients of
``fl.malicious`` attack (:mod:`dfflab.federated.attacks`). With ``fl.task=ssl`` a client
pretrains instead (:mod:`dfflab.federated.ssl_client`); in a DP run (``fl.dp-clip``) Flower's
``fixedclipping_mod`` clips the update it sends (:func:`dfflab.federated.privacy.clipping_mod`)
and the client keeps its BatchNorm statistics, which it never sends.
"""

from __future__ import annotations

import json
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dfflab.config import config_from_dict
from dfflab.detector.recipe import new_model
from dfflab.federated import attacks, privacy, task
from dfflab.federated.config import dp_enabled
from dfflab.federated.strategies import KEEPS_LOCAL_BN

app = ClientApp()
BN_STATE = "local-bn"  # context.state key of a FedBN client's own BatchNorm layers (DP: its BN buffers)
OPT_STATE = "optimizer"  # context.state key of a client's AdamW state (fl.keep-optimizer)
RUN_STATE = "dfflab-run"  # context.state key: the run the rest of the state belongs to


def _setup(msg: Message, context: Context):
    """(cfg, partition id, device, store, rows, model with the global weights loaded)."""
    cfg, pid = _identity(msg, context)
    device = task.device_for(cfg, cfg.fl.client_cpus)
    store, rows = task.client_data(cfg, pid, cfg.fl.num_partitions, msg.content["config"].get("partition-file"))
    model = new_model(cfg, device)
    local = None
    if (cfg.fl.strategy in KEEPS_LOCAL_BN or dp_enabled(cfg.fl)) and BN_STATE in context.state:
        local = context.state[BN_STATE].to_torch_state_dict()
    task.load_state(model, msg.content["arrays"].to_torch_state_dict(), keep_local=local)
    return cfg, pid, device, store, rows, model


def _identity(msg: Message, context: Context):
    """(the run's config, this client's partition id); the federation's size must be the config's.

    A node's ``context.state`` lives as long as the Flower run, which may hold several dfflab
    runs (a batch): what the client kept for an earlier run is dropped when a new one begins.
    """
    run_key = str(msg.content["config"].get("run-key", ""))
    mark = context.state.get(RUN_STATE)
    if mark is None or mark["run"] != run_key:
        for key in list(context.state.keys()):
            del context.state[key]
        context.state[RUN_STATE] = ConfigRecord({"run": run_key})
    cfg = config_from_dict(json.loads(msg.content["config"]["dfflab-config"]))
    pid = int(context.node_config["partition-id"])
    n = int(context.node_config["num-partitions"])
    if n != cfg.fl.num_partitions:
        raise ValueError(f"client {pid}: the federation has {n} clients but the server "
                         f"partitioned for fl.num-partitions={cfg.fl.num_partitions}")
    return cfg, pid


@app.train(mods=[privacy.clipping_mod])
def train(msg: Message, context: Context) -> Message:
    cfg, pid = _identity(msg, context)
    if cfg.fl.task == "ssl":  # imported only here: the detector's clients need no lightly
        from dfflab.federated import ssl_client

        return ssl_client.train(msg, context, cfg, pid)
    cfg, pid, device, store, rows, model = _setup(msg, context)
    config = msg.content["config"]
    server_round = int(config["server-round"]) + int(config.get("round-offset", 0))  # resumed runs
    _inject_failure(cfg, pid, server_round)
    start = {k: v.clone() for k, v in task.state_of(model).items()}  # state_of may alias the weights
    kept = context.state[OPT_STATE].to_torch_state_dict() if cfg.fl.keep_optimizer and OPT_STATE in context.state \
        else None
    stats, opt_state = task.local_train(model, store, rows["train"], cfg, device, server_round=server_round,
                                        partition_id=pid, proximal_mu=float(config.get("proximal-mu", 0.0)),
                                        flip_labels=attacks.attacks_labels(cfg, pid), optimizer_state=kept)
    if cfg.fl.keep_optimizer:
        context.state[OPT_STATE] = ArrayRecord(opt_state)
    state = task.state_of(model)
    if cfg.fl.strategy in KEEPS_LOCAL_BN:
        context.state[BN_STATE] = ArrayRecord({k: state[k] for k in task.bn_keys(model)})
    elif dp_enabled(cfg.fl):  # a DP run releases no BatchNorm statistics: the client keeps its own
        context.state[BN_STATE] = ArrayRecord(privacy.local_buffers(state))
    if pid in attacks.malicious_ids(cfg):
        state = attacks.poison(state, start, cfg.fl.attack, cfg.fl.attack_scale)
    metrics = MetricRecord({"num-examples": len(rows["train"]), "partition-id": pid, **stats,
                            **privacy.client_metrics(cfg, start, state)})
    return Message(RecordDict({"arrays": ArrayRecord(privacy.dp_arrays(cfg, state)), "metrics": metrics}),
                   reply_to=msg)


def _inject_failure(cfg, pid: int, server_round: int) -> None:
    """``fl.fail-client``: raise, or hang past the server's round timeout."""
    if cfg.fl.fail_client != pid or cfg.fl.fail_round not in (0, server_round):
        return
    if cfg.fl.fail_mode == "hang":
        time.sleep(cfg.fl.hang_seconds)
        return
    raise RuntimeError(f"client {pid}: failure injected by fl.fail-client in round {server_round}")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, pid = _identity(msg, context)
    if cfg.fl.task == "ssl":
        raise ValueError(f"client {pid}: federated SSL has no client evaluation (the server sets "
                         "fl.fraction-evaluate=0 and monitors the global backbone itself)")
    cfg, pid, device, store, rows, model = _setup(msg, context)
    if len(rows["val"]) == 0:
        raise ValueError(f"client {pid} has no validation rows")
    m = task.local_val(model, store, rows["val"], device, amp=cfg.train.amp)
    metrics = MetricRecord({"num-examples": len(rows["val"]), "partition-id": pid, "val_loss": m["loss"],
                            "val_auroc": m["auroc"], "val_accuracy": m["accuracy"],
                            "val_balanced_accuracy": m["balanced_accuracy"], **privacy.client_metrics(cfg)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
