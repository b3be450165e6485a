"""Federated stage without the simulation engine: strategies, client, run config, baselines.

The real Flower simulation (``flwr run .``) is in ``test_federated_sim.py``.
"""

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FakeGrid, arrays_of, client_ctx, client_msg, instruction, reply, tiny
from flwr.app import (
    ConfigRecord,
    Error,
    Message,
    MessageType,
    RecordDict,
)

from dfflab.cli import main
from dfflab.config import ConfigError, load_config
from dfflab.detector.recipe import initial_model
from dfflab.federated import client_app, task
from dfflab.federated.launcher import check_source_n, flwr_command
from dfflab.federated.local_only import run_local_only
from dfflab.federated.runconfig import (
    EXTRA,
    declarable_keys,
    declared_keys,
    from_run_config,
    to_run_config,
    write_app_config,
)
from dfflab.federated.strategies import STRATEGIES, make_strategy
from dfflab.report.compare import compare, resolve_runs, table
from dfflab.runs import Run

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    def __init__(self):
        self.seen = []

    def mark(self, server_round, event):
        pass

    def record_replies(self, server_round, phase, replies, sent=(), rejected=()):
        self.seen.append((server_round, phase, [m.has_error() for m in replies]))


# -- strategies ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_samples_all_clients_and_aggregates(name, server_identity):
    cfg = load_config("tiny", [f"fl.strategy={name}", "fl.trim-beta=0.0"])
    rec = Recorder()
    strategy = make_strategy(cfg, 3, {"bn.running_var"}, rec)
    start = arrays_of({"w": np.zeros(4), "bn.running_var": np.ones(2)})
    msgs = list(strategy.configure_train(1, start, ConfigRecord(), FakeGrid(3)))
    assert len(msgs) == 3
    replies = [reply({"w": np.full(4, v), "bn.running_var": np.full(2, v)}, 10, i, **{"partition-id": i})
               for i, v in enumerate((1.0, 2.0, 3.0))]
    replies.append(Message(Error(code=0, reason="client 3 raised"), reply_to=instruction(RecordDict(), 4)))
    arrays, metrics = strategy.aggregate_train(1, replies)
    w = arrays["w"].numpy()
    assert w.shape == (4,) and np.all(w > 0) and np.all(w <= 3.0)  # moved towards the clients
    assert "partition-id" not in metrics  # identifies a client, never averaged
    assert rec.seen == [(1, "train", [False, False, False, True])]
    if name == "fedprox":
        assert msgs[0].content["config"]["proximal-mu"] == cfg.fl.proximal_mu


def test_fedadam_steps_weights_but_averages_batchnorm_statistics(server_identity):
    cfg = load_config("tiny", ["fl.strategy=fedadam", "fl.server-lr=0.5"])
    strategy = make_strategy(cfg, 2, {"bn.weight", "bn.running_var"})
    start = arrays_of({"w": np.zeros(3), "bn.running_var": np.full(3, 0.01)})
    list(strategy.configure_train(1, start, ConfigRecord(), FakeGrid(2)))
    replies = [reply({"w": np.full(3, 0.001), "bn.running_var": np.full(3, 0.002)}, 5, 1),
               reply({"w": np.full(3, 0.003), "bn.running_var": np.full(3, 0.004)}, 15, 2)]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["bn.running_var"].numpy(), 0.0035, rtol=1e-5)  # weighted mean
    assert arrays["w"].numpy()[0] > 0.01  # Adam's normalised step, far beyond the mean 0.0025


def test_proximal_term_is_half_mu_squared_distance():
    model = torch.nn.Linear(3, 1)
    term = task.proximal_term(model, mu=0.5)
    assert term(model).item() == 0.0
    with torch.no_grad():
        model.weight += 1.0
    assert term(model).item() == pytest.approx(0.5 * 0.5 * 3.0)


# -- the ClientApp in-process ---------------------------------------------------------------
def test_client_trains_its_partition_and_reports_validation(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.strategy=fedprox")
    model, _ = initial_model(cfg, torch.device("cpu"))
    ctx = client_ctx(1)
    out = client_app.train(client_msg(cfg, model, 1, **{"proximal-mu": 0.1}), ctx)
    m = out.content["metrics"]
    _, rows = task.client_data(cfg, 1, 3)
    assert m["num-examples"] == len(rows["train"]) and m["partition-id"] == 1
    assert m["images"] > 0 and np.isfinite(m["train_loss"])
    new = out.content["arrays"].to_torch_state_dict()
    assert not torch.equal(new["head.weight"], model.state_dict()["head.weight"])  # it trained
    ev = client_app.evaluate(client_msg(cfg, model, 1, kind=MessageType.EVALUATE), ctx).content["metrics"]
    assert ev["num-examples"] == len(rows["val"]) and 0.0 <= ev["val_accuracy"] <= 1.0


def test_fedbn_client_keeps_its_batchnorm_layers(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.strategy=fedbn")
    model, _ = initial_model(cfg, torch.device("cpu"))
    bn = task.bn_keys(model)
    assert bn and all(".bn" in k or "downsample.1" in k or "stem.1" in k for k in bn)
    ctx = client_ctx(0)
    client_app.train(client_msg(cfg, model, 1), ctx)
    local = ctx.state[client_app.BN_STATE].to_torch_state_dict()
    assert set(local) == bn
    _, _, _, _, _, loaded = client_app._setup(client_msg(cfg, model, 2), ctx)  # round 2: global + own BN
    got, sent = loaded.state_dict(), model.state_dict()
    for k in got:
        expected = local[k] if k in bn else sent[k]
        assert torch.equal(got[k].cpu(), expected.to(got[k].dtype)), k


def test_injected_failure_raises_in_its_round_only(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.fail-client=2", "fl.fail-round=2")
    model, _ = initial_model(cfg, torch.device("cpu"))
    client_app.train(client_msg(cfg, model, 1), client_ctx(2))
    with pytest.raises(RuntimeError, match="failure injected"):
        client_app.train(client_msg(cfg, model, 2), client_ctx(2))


# -- run config ---------------------------------------------------------------------------------
def test_app_config_command_rewrites_a_stale_table(tmp_path):
    text = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('train.audit = ""\n', "").replace('fl.rounds = ""', 'fl.old = ""'))
    assert not write_app_config(tmp_path, check=True)
    assert "fl.old" in declared_keys(tmp_path) and "train.audit" not in declared_keys(tmp_path)  # check changed nothing
    assert not write_app_config(tmp_path)
    assert write_app_config(tmp_path, check=True)
    assert declared_keys(tmp_path) == declared_keys(ROOT) == set(EXTRA) | set(declarable_keys())
    assert (tmp_path / "pyproject.toml").read_text() == text  # everything above the table is kept


def test_pyproject_declares_the_run_config():
    declared = declared_keys(ROOT)
    assert set(EXTRA) <= declared
    assert declared - set(EXTRA) <= set(declarable_keys()), "pyproject declares an unknown setting"
    missing = set(declarable_keys()) - declared
    assert not missing, f"pyproject lacks {sorted(missing)}: run `dfflab federated app-config`"
    assert {"train.audit", "data.root", "model.backbone", "fl.rounds"} <= set(declarable_keys())
    assert write_app_config(ROOT, check=True), "pyproject's [tool.flwr.app.config] is not the generated one"
    for preset in ("quick", "tiny", "full"):  # a preset TOML can be passed as --run-config
        with open(ROOT / "dfflab" / "presets" / f"{preset}.toml", "rb") as f:
            values = tomllib.load(f)
        keys = {f"{s}.{k}" for s, t in values.items() if s in ("data", "model", "train", "fl") for k in t}
        assert keys <= declared, f"{preset}.toml sets keys pyproject doesn't declare: {keys - declared}"
    with open(ROOT / "pyproject.toml", "rb") as f:
        comp = tomllib.load(f)["tool"]["flwr"]["app"]["components"]
    assert comp == {"serverapp": "dfflab.federated.server_app:app",
                    "clientapp": "dfflab.federated.client_app:app"}


def test_flwr_command_sizes_the_federation(store):
    cfg = load_config("tiny", ["fl.num-partitions=6"])
    cmd = flwr_command(ROOT, Path("/r/flwr-run-config.toml"), cfg)
    assert cmd[1:4] == ["run", str(ROOT), "--stream"] and "/r/flwr-run-config.toml" in cmd
    fed = cmd[cmd.index("--federation-config") + 1].split()
    assert "num-supernodes=6" in fed and "client-resources-num-cpus=1" in fed
    assert f"init-args-num-cpus={max(os.cpu_count() or 1, 6)}" in fed  # all clients at once
    cfg.fl.client_cpus, cfg.fl.parallel_clients = 2, 1
    fed = flwr_command(ROOT, Path("r.toml"), cfg)[-1].split()
    assert "init-args-num-cpus=2" in fed  # one client at a time on 2 cores
    check_source_n(cfg, store)  # 6 = 2 x 3 generators
    cfg.fl.num_partitions = 4
    with pytest.raises(ConfigError, match="multiple of the 3 fake sources"):
        check_source_n(cfg, store)


def test_run_config_round_trip_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat = {k: "" for k in declared_keys(ROOT)} | {"preset": "tiny", "fl.rounds": 7, "train.train-sources": "insight"}
    cfg, meta = from_run_config(flat)
    assert cfg.fl.rounds == 7 and cfg.train.train_sources == ["insight"] and meta["preset"] == "tiny"
    assert cfg.model.width == load_config("tiny").model.width  # "" keeps the preset's value
    assert Path(cfg.results) == tmp_path / "results" and Path(cfg.data.root).is_absolute()
    nested = to_run_config(cfg, declared_keys(ROOT), **{"run-dir": "/x"})
    again, meta = from_run_config(dict(_flat(nested)))
    for section in ("results", "data", "model", "train", "fl"):  # what a federated run reads
        assert getattr(again, section) == getattr(cfg, section), section
    assert meta["run-dir"] == "/x"


def _flat(d, prefix=""):
    for k, v in d.items():
        yield from (_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)])


# -- local-only baseline, compare, CLI ---------------------------------------------------------
def test_local_only_and_compare(store, tmp_path):
    cfg = tiny(store, tmp_path)
    run = run_local_only(cfg, progress=False)
    rows = run.metrics()
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[-1]["samples"] > rows[1]["samples"] > 0
    assert {f"test_auroc_client{p}" for p in range(3)} <= set(rows[-1])
    for p in range(3):
        assert run.path(f"detector_client{p}.pt").is_file()
    s = run.summary()
    assert set(s["clients"]) == {"0", "1", "2"} and 0 <= s["test"]["auroc"] <= 1

    # a run folder in the centralized baseline's format (epoch rows, sizes in the summary)
    central = Run.create(tmp_path, "centralized", "scratch", cfg.to_dict())
    for e in (1, 2):
        central.log_metrics({"epoch": e, "samples": 60 * e, "test_accuracy": 0.5 + e / 10, "test_auroc": 0.6})
    central.write_summary({"test": {"accuracy": 0.7, "balanced_accuracy": 0.7, "auroc": 0.6},
                           "test_per_source": s["test_per_source"], "sizes": {"train": 60}, "seconds": 3.0})
    out = compare(resolve_runs([str(run.dir), central.name], tmp_path), tmp_path / "cmp")
    for name in ("compare.png", "compare_per_source.png", "compare.md", "compare.csv"):
        assert (out / name).stat().st_size > 0
    t = {r["run"]: r for r in table([run, central])}
    assert t["centralized/scratch"]["epochs_equivalent"] == 2.0
    assert t[f"federated/{run.record['name']}"]["test_auroc"] == s["test"]["auroc"]


def test_cli_partition_plot_and_compare_errors(store, tmp_path, capsys):
    args = ["--preset", "tiny", "--set", f"data.store={store.path}", "--set", f"results={tmp_path}"]
    assert main(["federated", "partition-plot", *args, "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").is_file() and "wiki" in capsys.readouterr().out
    assert main(["compare", *args, "no-such-run"]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_local_batch_size_gives_a_client_its_own_steps(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.local-batch-size=4", "fl.partitioning=iid", "fl.keep-optimizer=true")
    model, _ = initial_model(cfg, torch.device("cpu"))
    ctx = client_ctx(0)
    m = client_app.train(client_msg(cfg, model, 1), ctx).content["metrics"]
    n = len(task.client_data(cfg, 0, 3)[1]["train"])
    assert m["steps"] == n // 4 and m["images"] == 4 * (n // 4)
    kept = ctx.state[client_app.OPT_STATE].to_torch_state_dict()  # AdamW's moments, carried to round 2
    assert kept and all(torch.isfinite(v).all() for v in kept.values())
