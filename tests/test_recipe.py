"""The detector recipe is shared: a one-client federation trains exactly like the centralized run.

The Flower client (dfflab/federated/client_app.py) is driven in-process, round by round,
with the server's FedAvg aggregation of its single reply in between.
"""

import numpy as np
import torch
from conftest import client_ctx, client_msg, tiny
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from dfflab.detector.recipe import epoch_seed, initial_model, make_recipe, steps_per_epoch
from dfflab.detector.rows import select_rows
from dfflab.detector.trainer import train_detector
from dfflab.federated import client_app, task
from dfflab.federated.partition import client_rows
from dfflab.runs import load_checkpoint

ROUNDS = 3


def _federate(cfg, store) -> dict[str, torch.Tensor]:
    """ROUNDS rounds of 1 local epoch on one IID client; returns the final global weights."""
    device = torch.device("cpu")
    model, _ = initial_model(cfg, device)
    ctx = client_ctx(0, n=1)
    for r in range(1, ROUNDS + 1):
        out = client_app.train(client_msg(cfg, model, r), ctx)
        global_arrays = aggregate_arrayrecords([out.content], "num-examples")  # what FedAvg does
        task.load_state(model, global_arrays.to_torch_state_dict())
    return task.state_of(model)


def test_one_iid_client_federation_ends_with_the_centralized_weights(store, tmp_path):
    common = ("train.threads=1", "fl.client-cpus=1", "train.patience=100", "train.audit=false",
              f"train.epochs={ROUNDS}", f"fl.rounds={ROUNDS}", "fl.local-epochs=1", "fl.num-partitions=1",
              "fl.partitioning=iid", "fl.strategy=fedavg", "fl.local-batch-size=0")
    cfg = tiny(store, tmp_path, *common, "fl.keep-optimizer=true")
    # the same rows: the client's training rows are the centralized training rows
    assert np.array_equal(client_rows(store, cfg, 0, 1)["train"], select_rows(store, cfg.train)["train"])
    run = train_detector(cfg, name="central", store=store, progress=False)
    central = load_checkpoint(run.path("last.pt"))["model"]  # the model after the last epoch
    fed = _federate(cfg, store)
    assert set(fed) == set(central)
    for k, v in central.items():
        assert torch.equal(fed[k].to(v.dtype), v), k
    # the one documented difference: without fl.keep-optimizer each round starts AdamW afresh
    fresh = _federate(tiny(store, tmp_path, *common, "fl.keep-optimizer=false"), store)
    assert any(not torch.equal(fresh[k].to(v.dtype), v) for k, v in central.items() if v.is_floating_point())


def test_a_round_continues_the_schedule_and_seeds_of_the_whole_run(store, tmp_path):
    cfg = tiny(store, tmp_path, "train.epochs=4", "train.warmup-epochs=1")
    rows = select_rows(store, cfg.train)["train"]
    steps, _ = steps_per_epoch(len(rows), cfg.train.batch_size)
    model, _ = initial_model(cfg, torch.device("cpu"))
    whole = make_recipe(cfg, store, rows, torch.device("cpu"), model, total_epochs=4)
    lrs = []
    for _ in range(4 * steps):
        lrs.append(whole.opt.param_groups[0]["lr"])
        whole.opt.step()
        whole.sched.step()
    third = make_recipe(cfg, store, rows, torch.device("cpu"), model, total_epochs=4, start_epoch=2)
    assert third.opt.param_groups[0]["lr"] == lrs[2 * steps]  # epoch 3 starts where the whole run's epoch 3 does
    assert [list(b[1]) for b in third.batches(2)] == [list(b[1]) for b in whole.batches(2)]
    assert epoch_seed(0, 2, client=1) != epoch_seed(0, 2) and epoch_seed(0, 2, client=0) == 2
