"""Federated SSL (``fl.task=ssl``): FedEMA's merge, the client in-process, and a real 3-client
Flower run whose backbone loads into the detector and into federated fine-tuning."""

import json

import numpy as np
import pytest
import torch
from conftest import client_ctx, instruction, tiny
from flwr.app import ArrayRecord, ConfigRecord, MessageType, RecordDict

from dfflab.config import ConfigError, derive
from dfflab.federated import client_app, ssl_client, ssl_task
from dfflab.federated.ssl_server import ssl_config
from dfflab.models import build_detector, init_backbone


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(store, tmp_path, *extra):
    return ssl_config(tiny(store, tmp_path, "ssl.batch-size=8", "train.threads=1", *extra), rounds=2)


def ssl_msg(cfg, online: dict, server_round: int):
    content = RecordDict({"arrays": ArrayRecord(online),
                          "config": ConfigRecord({"dfflab-config": json.dumps(cfg.to_dict()),
                                                  "server-round": server_round})})
    return instruction(content, kind=MessageType.TRAIN)


def test_ssl_config_gives_each_client_the_centralized_epochs(store, tmp_path):
    cfg = ssl_config(tiny(store, tmp_path, "ssl.epochs=6", "fl.local-epochs=2"), method="byol")
    assert (cfg.fl.task, cfg.ssl.method, cfg.fl.rounds) == ("ssl", "byol", 3)
    assert ssl_config(cfg, rounds=5).fl.rounds == 5


def test_online_state_leaves_the_byol_target_out(store, tmp_path):
    cfg = _cfg(store, tmp_path, "ssl.method=byol")
    method = ssl_task.new_method(cfg, torch.device("cpu"))
    online = ssl_task.online_state(method)
    assert online and not any("momentum" in k for k in online)
    assert {k.split(".")[0] for k in online} == {"backbone", "projection_head", "prediction_head"}
    simclr = ssl_task.online_state(ssl_task.new_method(derive(cfg, {"ssl.method": "simclr"}), torch.device("cpu")))
    assert {k.split(".")[0] for k in simclr} == {"backbone", "projection_head"}


def test_fedema_keeps_tau_of_its_own_weights_first_then_by_divergence(store, tmp_path):
    cfg = _cfg(store, tmp_path, "ssl.method=byol", "fl.ema-tau=0.7")
    dev = torch.device("cpu")
    method = ssl_task.new_method(cfg, dev)
    own = {k: v.clone() for k, v in ssl_task.state_of(method).items()}
    glob = {k: v + 0.01 if v.is_floating_point() and not ssl_task.is_target(k) else v.clone()
            for k, v in ssl_task.online_state(method).items()}
    for k in own:
        if ssl_task.is_target(k) and own[k].is_floating_point():
            own[k] = own[k] - 1.0  # a recognisable own target
    info, scaler = ssl_task.client_start(method, glob, own, cfg, None)
    assert info["mu"] == pytest.approx(0.7)  # the autoscaler: lambda = tau / first divergence
    assert scaler == pytest.approx(0.7 / info["divergence"])
    w = "backbone.stem.0.weight" if "backbone.stem.0.weight" in own else next(k for k, _ in method.named_parameters())
    got = method.state_dict()[w]
    torch.testing.assert_close(got, 0.7 * own[w] + 0.3 * glob[w])
    tgt = next(k for k in own if ssl_task.is_target(k) and own[k].is_floating_point())
    torch.testing.assert_close(method.state_dict()[tgt], own[tgt])  # the target never comes from the server
    # twice the divergence with the same lambda: mu doubles (capped at 1)
    glob2 = {k: own[k] + 2 * (glob[k] - own[k]) if glob[k].is_floating_point() else glob[k] for k in glob}
    info2, _ = ssl_task.client_start(method, glob2, own, cfg, scaler)
    assert info2["mu"] == pytest.approx(1.0)
    # fedbyol: the global online network, the own target
    info3, _ = ssl_task.client_start(method, glob, own, derive(cfg, {"fl.ssl-update": "fedbyol"}), scaler)
    assert info3["mu"] == 0.0 and torch.equal(method.state_dict()[w], glob[w].to(got.dtype))


def test_ssl_client_pretrains_and_keeps_its_target(store, tmp_path):
    cfg = _cfg(store, tmp_path, "ssl.method=byol")
    method = ssl_task.new_method(cfg, torch.device("cpu"))
    sent = ssl_task.online_state(method)
    ctx = client_ctx(1)
    out = client_app.app(ssl_msg(cfg, sent, 1), ctx)  # through the ClientApp, mods included
    assert not out.has_error(), out.error if out.has_error() else ""
    m = out.content["metrics"]
    assert m["partition-id"] == 1 and m["steps"] > 0 and np.isfinite(m["train_loss"]) and m["mu"] == 0.0
    back = out.content["arrays"].to_torch_state_dict()
    assert list(back) == list(sent)  # the online network only, in the order sent
    assert any(not torch.equal(back[k], sent[k]) for k in back if back[k].is_floating_point())  # it trained
    own = ctx.state[ssl_client.OWN_STATE].to_torch_state_dict()
    assert any(ssl_task.is_target(k) for k in own)
    # round 2 from a changed global model: FedEMA measures the divergence and keeps tau of its own
    glob = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in back.items()}
    m2 = client_app.app(ssl_msg(cfg, glob, 2), ctx).content["metrics"]
    assert m2["divergence"] > 0 and m2["mu"] == pytest.approx(cfg.fl.ema_tau)
    assert ctx.state[ssl_client.SCALER]["lambda"] == pytest.approx(cfg.fl.ema_tau / m2["divergence"])


def test_ssl_client_needs_a_batch_of_images(store, tmp_path):
    cfg = _cfg(store, tmp_path, "ssl.batch-size=4096")
    sent = ssl_task.online_state(ssl_task.new_method(cfg, torch.device("cpu")))
    with pytest.raises(ConfigError, match="ssl.batch-size=4096"):
        ssl_client.train(ssl_msg(cfg, sent, 1), client_ctx(0), cfg, 0)


def test_probe_names_match_centralized_pretraining(store, tmp_path):
    cfg = _cfg(store, tmp_path)
    method = ssl_task.new_method(cfg, torch.device("cpu"))
    rows = ssl_task.probe_rows(store, cfg)
    row = ssl_task.probe(method.backbone, store, rows, cfg, torch.device("cpu"), linear=True)
    for key in ("knn_real_fake_acc", "knn_real_fake_bacc", "knn_real_fake_auroc", "knn_source_acc",
                "linear_real_fake_bacc", "linear_source_acc"):
        assert 0 <= row[key] <= 1, key
    final = ssl_task.probe(method.backbone, store, rows, cfg, torch.device("cpu"), splits=("val", "test"), linear=True)
    assert {"knn_real_fake_acc_test", "linear_real_fake_acc_test", "linear_source_acc_val"} <= set(final)


# -- a real Flower run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fed_ssl(tmp_path_factory):
    from dfflab.config import load_config
    from dfflab.data.synth import SynthSpec, write_synth
    from dfflab.federated.launcher import run_federated

    tmp = tmp_path_factory.mktemp("fedssl")
    root = tmp / "synthdff"
    write_synth(root, SynthSpec(n_real=24, seed=0, difficulty=1.5, fake_size=48, real_min=40, real_max=90),
                load_config("tiny"), progress=False)
    cfg = load_config("tiny", [f"data.root={root}", f"results={tmp / 'results'}", "data.n-real=24",
                               "data.difficulty=1.5", "data.fake-size=48", "data.real-min=40", "data.real-max=90",
                               "fl.num-partitions=3", "ssl.batch-size=8", "ssl.method=byol", "train.threads=1"])
    return cfg, run_federated(ssl_config(cfg, rounds=2), name="fed-ssl-test", progress=False)


@pytest.mark.slow
def test_federated_ssl_backbone_loads_into_the_detector(fed_ssl):
    cfg, run = fed_ssl
    assert run.record["stage"] == "federated-ssl"
    rows = run.metrics()
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[2]["clients"] == "0;1;2" and np.isfinite(rows[2]["train_loss"])
    assert rows[0]["linear_real_fake_bacc"] is not None and rows[2]["linear_real_fake_bacc"] is not None
    s = run.summary()
    assert s["federated"] and s["method"] == "byol" and s["ssl_update"] == "fedema" and s["rounds_run"] == 2
    assert 0 <= s["knn"]["knn_real_fake_acc_test"] <= 1 and 0 <= s["linear"]["linear_source_acc_test"] <= 1
    det = build_detector(cfg.model)
    assert init_backbone(det, str(run.dir), cfg.model) == str(run.path("backbone.pt"))
    saved = run.load("backbone.pt")
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, saved["backbone"][k])
    fresh = build_detector(cfg.model).backbone.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in saved["backbone"].items() if v.dtype.is_floating_point)
    # federated fine-tuning starts from it: the ServerApp's initial model carries these weights
    from dfflab.detector.recipe import initial_model

    model, path = initial_model(derive(cfg, {"train.init": str(run.dir)}), torch.device("cpu"))
    assert path == str(run.path("backbone.pt"))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v.cpu(), saved["backbone"][k].to(v.dtype)), k
