"""A real Flower simulation through ``flwr run .``: 3 clients, 2 rounds, one injected failure.

One run (about a minute on 2 busy cores) serves every test here. Its data are a
little larger than the shared tiny store (120 reals at 48 px, blatant artifacts) and
its clients take many small steps, because a model trained for a handful of steps
is still ruled by its initial BatchNorm statistics and shows no learning at all.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from dfflab.config import load_config
from dfflab.detector.recipe import initial_model
from dfflab.federated import task
from dfflab.federated.launcher import run_federated
from dfflab.federated.processes import alive, cmdline, processes_with_env
from dfflab.models import load_detector
from dfflab.train.core import detection_loss, predict

pytestmark = pytest.mark.slow  # minutes: left out of `pytest -m "not slow"`

RUN_FILES = ("config.json", "metrics.csv", "clients.csv", "detector.pt", "summary.json", "partition.png",
             "flower.log", "flwr-run-config.toml", "detector_client0.pt", "detector_client2.pt")


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    from dfflab.data.synth import SynthSpec, write_synth

    tmp = tmp_path_factory.mktemp("fed")
    root = tmp / "synthdff"
    # the config describes the data exactly (seed 0 is what ensure_store synthesizes with), so
    # nothing may take this SynthDFF for a stale one and rewrite it with the tiny preset's
    # settings (which once made this run train on other data and fail the objective test)
    write_synth(root, SynthSpec(n_real=120, seed=0, difficulty=2.0, fake_size=48, real_min=40, real_max=90),
                load_config("tiny"), progress=False)
    cfg = load_config("tiny", [
        f"data.root={root}", f"results={tmp / 'results'}", "data.n-real=120", "data.difficulty=2.0",
        "data.fake-size=48", "data.real-min=40", "data.real-max=90", "data.image-size=48", "train.batch-size=8",
        "train.seed=1", "fl.rounds=2", "fl.local-epochs=4", "fl.num-partitions=3",
        "fl.partitioning=source", "fl.strategy=fedavg", "fl.fail-client=2", "fl.fail-round=2",
        "fl.local-batch-size=0", "fl.keep-optimizer=false"])  # the recipe this test was written for
    run = run_federated(cfg, name="sim-test", progress=False)
    return cfg, run


def test_simulation_run_folder_is_complete(fed):
    cfg, run = fed
    for name in RUN_FILES:
        assert run.path(name).is_file(), name
    rows = run.metrics()
    assert [r["round"] for r in rows] == [0, 1, 2]
    for col in ("samples", "train_phase_s", "client_compute_s", "server_eval_s", "test_accuracy", "test_auroc", "test_balanced_accuracy", "client_val_auroc",
                "clients", "failures", "seconds", *(f"test_auroc_{s}" for s in cfg.train.train_sources)):
        assert col in rows[-1], col
    assert rows[2]["samples"] > rows[1]["samples"] > 0
    s = run.summary()
    assert s["rounds_run"] == 2 and s["num_partitions"] == 3 and s["strategy"] == "fedavg"
    assert set(s["test_per_source"]) == {"inpainting", "insight", "text2img"}  # train.train-sources = [] = all
    model, ckpt = load_detector(run.path("detector.pt"))
    assert ckpt["threshold"] == pytest.approx(s["threshold"])


def test_simulation_global_model_improves(fed):
    cfg, run = fed
    rows = run.metrics()
    assert rows[2]["test_auroc"] > rows[0]["test_auroc"] + 0.05
    # the federated objective: the clients' class-weighted loss over all their training rows
    store = task.open_store(run_config(run))
    from dfflab.federated.partition import all_client_rows, make_partitioner

    rows_all = np.concatenate([r["train"] for r in all_client_rows(make_partitioner(store, cfg)).values()])
    loss = detection_loss(store.labels[rows_all], "weight", torch.device("cpu"))

    def objective(model):
        pred = predict(model, store.batches(rows_all, 256), torch.device("cpu"))
        return float(loss(pred.logits, pred.labels.float()))

    initial, _ = initial_model(run_config(run), torch.device("cpu"))
    final, _ = load_detector(run.path("detector.pt"))
    assert objective(final) < objective(initial)


def test_failed_client_is_logged_and_the_round_goes_on(fed):
    _, run = fed
    rows = {r["round"]: r for r in run.metrics()}
    assert str(rows[1]["clients"]) == "0;1;2" and rows[1]["failures"] == 0
    assert str(rows[2]["clients"]) == "0;1" and rows[2]["failures"] == 1
    clients = (run.path("clients.csv")).read_text()
    assert "failure injected by fl.fail-client in round 2" in clients
    assert run.summary()["failures"] == 1


def test_flwr_run_stops_the_superlink_it_started(fed):
    _, run = fed
    flower = run.record["flower"]
    assert flower["returncode"] == 0 and "--federation-config" in flower["command"]
    assert any("flower-superlink" in p["cmd"] for p in flower["stopped"]), flower["stopped"]
    assert flower["still_running"] == []
    for p in flower["stopped"]:
        assert not alive(p["pid"]) or p["cmd"] != cmdline(p["pid"])  # gone (or the pid was reused)
    assert processes_with_env("FLWR_HOME", flower["flwr_home"]) == []
    assert not Path(flower["flwr_home"]).exists()


def test_a_second_run_of_the_same_settings_ends_with_the_same_global_model(fed):
    # clients finish in any order; the server aggregates in partition order, so the run is reproducible
    cfg, run = fed
    again = run_federated(cfg, name="sim-test-again", progress=False, resume=False)
    first = load_detector(run.path("detector.pt"))[0].state_dict()
    second = load_detector(again.path("detector.pt"))[0].state_dict()
    assert set(first) == set(second)
    for k, v in first.items():
        assert torch.equal(v, second[k]), k
    assert again.summary()["test"]["auroc"] == run.summary()["test"]["auroc"]


def run_config(run):
    from dfflab.config import config_from_dict

    return config_from_dict(run.config)




def test_a_batch_runs_each_run_as_if_alone(fed):
    # two runs of the same settings in one Flower run: clients keep AdamW state and FedBN layers
    # within a run, and must drop them when the next run begins, so both end with the same model
    from dfflab.config import derive
    from dfflab.federated.launcher import Job, run_batch

    cfg, _ = fed
    cfg = derive(cfg, {"fl.keep-optimizer": True, "fl.strategy": "fedbn", "fl.fail-client": -1})
    runs = run_batch([Job(cfg, "batch-a"), Job(cfg, "batch-b")], progress=False, resume=False)
    a, b = (load_detector(r.path("detector.pt"))[0].state_dict() for r in runs)
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    flower = [r.record["flower"] for r in runs]
    assert flower[0]["batch"] == flower[1]["batch"] == ["batch-a", "batch-b"]
    assert flower[0]["command"] == flower[1]["command"] and flower[0]["returncode"] == 0
    assert "dfflab batch: run 2 of 2" in runs[1].path("flower.log").read_text().splitlines()[0]
    for r in runs:
        assert r.path("partition.npz").is_file() and [x["round"] for x in r.metrics()] == [0, 1, 2]


def test_a_failing_run_does_not_take_the_rest_of_its_batch_down(fed, tmp_path):
    from dfflab.config import derive
    from dfflab.federated.launcher import Job, run_batch

    cfg, _ = fed
    cfg = derive(cfg, {"fl.fail-client": -1, "fl.rounds": 1})
    broken = derive(cfg, {"train.init": str(tmp_path / "no-such-backbone.pt")})  # the ServerApp fails to start it
    with pytest.raises(RuntimeError, match="batch-broken") as err:
        run_batch([Job(broken, "batch-broken"), Job(cfg, "batch-fine")], progress=False, resume=False)
    assert "no-such-backbone" in str(err.value)  # the failed run's own log tail is in the message
    from dfflab.runs import find_run

    fine = find_run(cfg.results, "federated", name="batch-fine", cfg=cfg)
    assert fine is not None and fine.summary()["rounds_run"] == 1
