"""The ClientApp's train step for federated SSL (``fl.task=ssl``): thin, the work is in ``ssl_task``.

A client keeps in ``context.state`` its whole method state after each round (BYOL's target
network never leaves it; FedEMA fuses its own online network with the global one) and its
FedEMA lambda; it replies with the online network only.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from dfflab.federated import privacy, ssl_task, task

OWN_STATE = "ssl-own"  # context.state key: the client's method state after its last round
SCALER = "ssl-fedema"  # context.state key: {"lambda": FedEMA's scaler}


def train(msg: Message, context: Context, cfg, pid: int) -> Message:
    """Pretrain on this client's images from the round's global online network; reply with the new one."""
    config = msg.content["config"]
    server_round = int(config["server-round"]) + int(config.get("round-offset", 0))
    device = task.device_for(cfg, cfg.fl.client_cpus)
    store, rows = task.client_data(cfg, pid, cfg.fl.num_partitions, config.get("partition-file"))
    rows = ssl_task.train_rows(store, rows["train"], cfg)
    method = ssl_task.new_method(cfg, device)
    received = msg.content["arrays"].to_torch_state_dict()
    own = context.state[OWN_STATE].to_torch_state_dict() if OWN_STATE in context.state else None
    scaler = float(context.state[SCALER]["lambda"]) if SCALER in context.state else None
    start, scaler = ssl_task.client_start(method, received, own, cfg, scaler)
    stats = ssl_task.local_pretrain(method, store, rows, cfg, device, server_round=server_round, partition_id=pid)
    context.state[OWN_STATE] = ArrayRecord(task.state_of(method))
    if scaler is not None:
        context.state[SCALER] = ConfigRecord({"lambda": scaler})
    online = ssl_task.online_state(method)
    metrics = MetricRecord({"num-examples": len(rows), "partition-id": pid, **stats, **start,
                            **privacy.client_metrics(cfg, received, online)})
    return Message(RecordDict({"arrays": ArrayRecord(privacy.dp_arrays(cfg, online)), "metrics": metrics}),
                   reply_to=msg)
