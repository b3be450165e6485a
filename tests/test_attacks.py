"""Malicious clients: non-finite updates rejected, attacks change updates, robust aggregation helps.

No simulation engine: the strategies are flwr's, driven by hand with reply messages
(helpers in ``conftest.py``); the robustness table itself is ``dfflab federated robustness``.
"""

import numpy as np
import pytest
import torch
from conftest import FakeGrid, arrays_of, client_ctx, client_msg, instruction, reply, tiny
from flwr.app import ConfigRecord, Error, Message, RecordDict

from dfflab.config import ConfigError, load_config
from dfflab.detector.recipe import initial_model
from dfflab.federated import attacks, client_app, task
from dfflab.federated.partition import client_rows
from dfflab.federated.strategies import STRATEGIES, make_strategy


class Recorder:
    def __init__(self):
        self.calls = []

    def mark(self, server_round, event):
        pass

    def record_replies(self, server_round, phase, replies, sent=None, rejected=()):
        self.calls.append((phase, len(replies), set(rejected), dict(sent or {})))


def sent_ids(messages) -> None:
    """Give the instructions the ids the grid gives them when it sends them."""
    for m in messages:
        m.metadata.__dict__["_message_id"] = m.object_id


def _cfg(name: str, *extra: str):
    return load_config("tiny", [f"fl.strategy={name}", "fl.trim-beta=0.0", "fl.num-partitions=4", *extra])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_non_finite_updates_are_rejected_before_aggregation(name, server_identity):  # noqa: F811
    rec = Recorder()
    strategy = make_strategy(_cfg(name), 4, set(), rec)
    start = arrays_of({"w": np.zeros(3)})
    msgs = list(strategy.configure_train(1, start, ConfigRecord(), FakeGrid(4)))
    assert len(msgs) == 4
    sent_ids(msgs)
    replies = [reply({"w": np.full(3, 1.0)}, 10, 1, **{"partition-id": 0}),
               reply({"w": np.full(3, 2.0)}, 10, 2, **{"partition-id": 1}),
               reply({"w": np.array([np.nan, 0.0, 0.0])}, 10, 3, **{"partition-id": 2}),
               reply({"w": np.full(3, np.inf)}, 10, 4, **{"partition-id": 3})]
    arrays, _ = strategy.aggregate_train(1, replies)
    w = arrays["w"].numpy()
    # finite, and moved towards the two honest clients only (FedAdam: a step of fl.server-lr)
    assert np.isfinite(w).all() and np.all((w > 0.0) & (w <= 2.0))
    phase, n, rejected, sent = rec.calls[-1]
    assert phase == "train" and n == 4 and sorted(sent.values()) == sorted(m.metadata.dst_node_id for m in msgs)
    assert rejected == {id(replies[2]), id(replies[3])}


def test_poison_nan_inf_and_scale():
    g = {"w": torch.zeros(4), "n": torch.tensor(3)}
    w = {"w": torch.tensor([1.0, -1.0, 0.5, 0.0]), "n": torch.tensor(5)}
    scaled = attacks.poison(w, g, "scale", -10.0)
    assert torch.equal(scaled["w"], torch.tensor([-10.0, 10.0, -5.0, 0.0])) and scaled["n"] == 5
    assert torch.isnan(attacks.poison(w, g, "nan", 1.0)["w"]).all()
    assert torch.isinf(attacks.poison(w, g, "inf", 1.0)["w"]).all()
    assert attacks.poison(w, g, "label-flip", 1.0) is w
    assert not attacks.is_finite([scaled["w"].numpy(), np.array([np.nan])])
    assert attacks.is_finite([scaled["w"].numpy(), np.arange(3)])


def test_malicious_settings_are_checked():
    cfg = load_config("tiny", ["fl.malicious=0,2", "fl.attack=scale"])
    assert attacks.malicious_ids(cfg) == {0, 2}
    assert not attacks.attacks_labels(cfg, 0)
    assert attacks.attacks_labels(load_config("tiny", ["fl.malicious=1"]), 1)
    with pytest.raises(ConfigError, match="fl.attack"):
        make_strategy(load_config("tiny", ["fl.attack=poison"]), 3, set())
    with pytest.raises(ConfigError, match="fl.malicious"):
        make_strategy(load_config("tiny", ["fl.malicious=7"]), 3, set())


def test_label_flip_changes_the_update(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.partitioning=iid", "fl.local-epochs=3", "train.batch-size=8")
    device = torch.device("cpu")
    rows = client_rows(store, cfg, 0, cfg.fl.num_partitions)["train"]
    updates = {}
    for flip in (False, True):
        model, _ = initial_model(cfg, device)
        names = [n for n, _ in model.named_parameters()]
        start = {k: v.clone() for k, v in task.state_of(model).items()}
        task.local_train(model, store, rows, cfg, device, server_round=1, partition_id=0, flip_labels=flip)
        end = task.state_of(model)
        updates[flip] = torch.cat([(end[k] - start[k]).flatten() for k in names])
    # same seed, same start, only the labels differ: the flipped update points against the honest one
    cos = torch.nn.functional.cosine_similarity(updates[False], updates[True], dim=0)
    assert updates[True].norm() > 0 and cos < 0, float(cos)


def _toy_round(strategy, w: np.ndarray, clients, malicious: set[int], scale: float, server_round: int):
    """One round of least squares: each client takes 5 gradient steps from ``w``."""
    replies = []
    for i, (x, y) in enumerate(clients):
        local = w.copy()
        for _ in range(5):
            local -= 0.1 * x.T @ (x @ local - y) / len(y)
        if i in malicious:
            local = attacks.poison({"w": torch.tensor(local)}, {"w": torch.tensor(w)}, "scale", scale)["w"].numpy()
        replies.append(reply({"w": local}, len(y), i + 1, **{"partition-id": i}))
    list(strategy.configure_train(server_round, arrays_of({"w": w}), ConfigRecord(), FakeGrid(len(clients))))
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return arrays["w"].numpy().astype(np.float64)


@pytest.mark.parametrize("robust", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_aggregator_beats_fedavg_under_a_scale_attack(robust, server_identity):  # noqa: F811
    rng = np.random.default_rng(0)
    truth = rng.normal(size=5)
    clients = []
    for _ in range(4):  # 1 of 4 malicious, as in the robustness table
        x = rng.normal(size=(40, 5))
        clients.append((x, x @ truth + 0.1 * rng.normal(size=40)))
    errors = {}
    for name in ("fedavg", robust):
        strategy = make_strategy(_cfg(name, "fl.trim-beta=0.25", "fl.krum-malicious=1"), 4, set())
        w = np.zeros(5)
        for r in range(1, 11):
            w = _toy_round(strategy, w, clients, {0}, -10.0, r)
        errors[name] = float(np.linalg.norm(w - truth))
    assert errors[robust] < 0.5 * errors["fedavg"], errors
    assert errors[robust] < 0.5 * np.linalg.norm(truth)  # and it actually learned


def test_reply_error_and_missing_nodes_are_not_rejected(server_identity):  # noqa: F811
    rec = Recorder()
    strategy = make_strategy(_cfg("fedavg", "fl.min-nodes=2"), 4, set(), rec)
    sent_ids(strategy.configure_train(1, arrays_of({"w": np.zeros(2)}), ConfigRecord(), FakeGrid(4)))
    err = Message(Error(code=0, reason="boom"), reply_to=instruction(RecordDict(), 2))
    arrays, _ = strategy.aggregate_train(1, [reply({"w": np.ones(2)}, 5, 1, **{"partition-id": 0}), err])
    assert np.allclose(arrays["w"].numpy(), 1.0)
    assert rec.calls[-1][2] == set() and len(rec.calls[-1][3]) == 4  # 4 sent, 2 answered


def test_malicious_client_sends_the_scaled_or_non_finite_update(store, tmp_path):
    sent = {}
    for attack in ("none", "scale", "nan"):
        extra = [] if attack == "none" else ["fl.malicious=1", f"fl.attack={attack}", "fl.attack-scale=-4"]
        cfg = tiny(store, tmp_path, *extra)
        model, _ = initial_model(cfg, torch.device("cpu"))
        start = {k: v.clone() for k, v in model.state_dict().items()}
        out = client_app.train(client_msg(cfg, model, 1), client_ctx(1))
        sent[attack] = out.content["arrays"].to_torch_state_dict()
    key = "head.weight"
    honest = sent["none"][key] - start[key]
    assert honest.norm() > 0
    assert torch.allclose(sent["scale"][key] - start[key], -4 * honest, atol=1e-5)  # same seed: same training
    assert torch.isnan(sent["nan"][key]).all()


def test_failure_injection_raises_or_hangs():
    import time

    cfg = load_config("tiny", ["fl.fail-client=1", "fl.fail-round=2", "fl.fail-mode=hang", "fl.hang-seconds=0.3"])
    t0 = time.time()
    client_app._inject_failure(cfg, 1, 2)  # a client that times out: sleeps, then goes on
    assert time.time() - t0 >= 0.3
    client_app._inject_failure(cfg, 1, 1)  # other rounds and clients: nothing
    client_app._inject_failure(cfg, 0, 2)
    with pytest.raises(RuntimeError, match="failure injected"):
        client_app._inject_failure(load_config("tiny", ["fl.fail-client=1"]), 1, 5)


def test_robustness_cells_and_table():
    from dfflab.federated.byzantine import _ids, markdown, setting_cfg

    cfg = load_config("tiny")
    c = setting_cfg(cfg, "fedtrimmedavg", 6, 2, "scale")
    assert c.fl.malicious == ["0", "1"] and c.fl.attack == "scale" and c.fl.num_partitions == 6
    assert int(c.fl.trim_beta * 6) == 2 and c.fl.krum_malicious == 2 and c.fl.partitioning == "iid"
    assert setting_cfg(cfg, "fedavg", 4, 1, None).fl.malicious == []
    rows = [{"strategy": "fedavg", "n": 4, "attack": a, "test_auroc": v} for a, v in (("clean", 0.9), ("scale", 0.5))]
    md = markdown(rows, attacks=("scale",), settings=((4, 1),))
    assert md.splitlines()[0] == "| strategy | clean N=4 | scale 1/4 |" and "| fedavg | 0.900 | 0.500 |" in md
    assert _ids(0) == ["0"] and _ids("0;2") == ["0", "2"] and _ids("") == []
