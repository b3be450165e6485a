"""DP-FedAvg (``fl.dp-*``): epsilon against dp-accounting's own computation, clipping of every
client update (client-side mod and server-side wrapper), the noise and its post-processing."""

import numpy as np
import pytest
import torch
from conftest import FakeGrid, arrays_of, client_ctx, client_msg, reply, tiny
from dp_accounting import dp_event, rdp
from flwr.app import ConfigRecord
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from dfflab.config import ConfigError, load_config
from dfflab.detector.recipe import initial_model
from dfflab.federated import client_app, privacy
from dfflab.federated.strategies import make_strategy


def _dp(*extra):
    return load_config("tiny", ["fl.dp-clip=1.0", *extra])


def _norm(a: dict, b: dict) -> float:
    return float(np.sqrt(sum(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2) for k in a)))


def _round(strategy, server_round: int, start: dict, updates: list[dict]):
    """configure + aggregate one round of 3 clients whose weights are ``start + update``."""
    list(strategy.configure_train(server_round, arrays_of(start), ConfigRecord(), FakeGrid(len(updates))))
    replies = [reply({k: start[k] + u[k] for k in start}, 10 * (i + 1), i + 1, **{"partition-id": i, "dp-weight": 1})
               for i, u in enumerate(updates)]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return {k: arrays[k].numpy() for k in arrays.keys()}, replies


def _reference_epsilon(z: float, rounds: int, delta: float) -> float:
    """dp-accounting's own RDP accountant: ``rounds`` Gaussian mechanisms of noise multiplier z."""
    acc = rdp.RdpAccountant()
    acc.compose(dp_event.GaussianDpEvent(z), rounds)
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("z,delta,clipping", [(0.5, 1e-5, "client"), (1.0, 1e-3, "server"), (4.0, 1e-6, "client")])
def test_epsilon_after_every_round_is_dp_accountings_own(server_identity, z, delta, clipping):
    cfg = _dp(f"fl.dp-noise={z}", f"fl.dp-delta={delta}", f"fl.dp-clipping={clipping}")
    strategy = make_strategy(cfg, 3, set())
    start = {"w": np.zeros(5, np.float32)}
    assert privacy.epsilon(strategy) == 0.0
    for r in range(1, 5):
        # no zero update: Flower's clipping divides by the update's norm
        _round(strategy, r, start, [{"w": np.full(5, 0.1 * (i + 1), np.float32)} for i in range(3)])
        assert privacy.epsilon(strategy) == pytest.approx(_reference_epsilon(z, r, delta), rel=1e-9)
    s = privacy.summary(cfg.fl, strategy)
    assert s["rounds_released"] == 4 and s["delta"] == delta and s["noise_multiplier"] == z and s["clip"] == 1.0
    # a resumed run counts the rounds released before its crash
    again = make_strategy(cfg, 3, set(), done_rounds=4)
    assert privacy.epsilon(again) == pytest.approx(_reference_epsilon(z, 4, delta), rel=1e-9)


def test_without_noise_clipping_only_spends_infinite_epsilon(server_identity):
    strategy = make_strategy(_dp("fl.dp-noise=0"), 3, set())
    _round(strategy, 1, {"w": np.zeros(3, np.float32)}, [{"w": np.ones(3, np.float32)}] * 3)
    assert privacy.epsilon(strategy) == float("inf")
    assert np.isnan(privacy.epsilon(make_strategy(load_config("tiny"), 3, set())))  # not a DP run


def test_server_side_clipping_bounds_every_update_and_the_mean(server_identity):
    cfg = _dp("fl.dp-clipping=server", "fl.dp-noise=0", "fl.dp-clip=0.5")  # no noise: the clipped mean itself
    strategy = make_strategy(cfg, 3, set())
    start = {"a": np.zeros(4, np.float32), "b": np.ones(2, np.float32)}
    updates = [{"a": np.full(4, 3.0, np.float32), "b": np.full(2, -2.0, np.float32)},
               {"a": np.full(4, 0.01, np.float32), "b": np.zeros(2, np.float32)},
               {"a": np.arange(4, dtype=np.float32), "b": np.full(2, 5.0, np.float32)}]
    mean, replies = _round(strategy, 1, start, updates)
    for i, msg in enumerate(replies):
        got = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        n = _norm(got, start)
        assert n <= 0.5 + 1e-6
        if _norm({k: start[k] + updates[i][k] for k in start}, start) > 0.5:
            assert n == pytest.approx(0.5, rel=1e-5)  # scaled onto the ball, not beyond
        else:
            np.testing.assert_allclose(got["a"], start["a"] + updates[i]["a"])  # small updates untouched
    assert _norm(mean, start) <= 0.5 + 1e-6
    # the mean is unweighted (DP-FedAvg), though the clients report different num-examples
    expect = {k: np.mean([r.content["arrays"][k].numpy() for r in replies], axis=0) for k in start}
    for k in start:
        np.testing.assert_allclose(mean[k], expect[k], rtol=1e-5)


def test_noise_has_the_calibrated_spread(server_identity):
    z, clip, n = 2.0, 1.5, 3
    strategy = make_strategy(_dp(f"fl.dp-noise={z}", f"fl.dp-clip={clip}"), n, set())
    start = {"w": np.zeros(20000, np.float32)}
    mean, _ = _round(strategy, 1, start, [{"w": np.full(20000, 1e-6, np.float32)}] * n)
    assert np.std(mean["w"]) == pytest.approx(z * clip / n, rel=0.03)  # Gaussian of std z C / N


def test_dp_runs_release_float_weights_and_no_batchnorm_statistics():
    cfg = _dp()
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sent = privacy.dp_arrays(cfg, {**state, "scalar": torch.tensor(3.0)})
    assert set(sent) == {"0.weight", "0.bias", "1.weight", "1.bias", "scalar"}  # BN affine yes, buffers no
    assert sent["scalar"].shape == (1,)  # 0-d travels as 1-d (Flower's clipping skips 0-d arrays)
    assert all(v.is_floating_point() and v.dim() >= 1 for v in sent.values())
    model[1].running_var.fill_(7)
    from dfflab.federated.task import load_state

    load_state(model, {k: v for k, v in sent.items() if k != "scalar"})  # the statistics stay the model's own
    assert torch.all(model[1].running_var == 7)
    assert privacy.dp_arrays(load_config("tiny"), state) is state  # no DP: untouched


def test_dp_client_keeps_its_batchnorm_statistics(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.dp-clip=5", "train.threads=1")
    model, _ = initial_model(cfg, torch.device("cpu"))
    msg = client_msg(cfg, model, 1)
    msg.content["arrays"] = arrays_of({k: v.numpy() for k, v in privacy.dp_arrays(cfg, model.state_dict()).items()})
    ctx = client_ctx(1)
    out = client_app.app(msg, ctx)
    assert not any(k.endswith("running_var") for k in out.content["arrays"].keys())
    own = ctx.state[client_app.BN_STATE].to_torch_state_dict()
    assert own and all(k.endswith(privacy.BN_BUFFERS) for k in own)
    assert any(not torch.all(v == 1) for k, v in own.items() if k.endswith("running_var"))  # estimated on its data
    _, _, _, _, _, loaded = client_app._setup(msg, ctx)  # next round: global weights, its own statistics
    for k, v in own.items():
        assert torch.equal(loaded.state_dict()[k].cpu(), v.to(loaded.state_dict()[k].dtype)), k


def test_server_reestimates_batchnorm_on_its_validation_rows(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.dp-clip=5")
    model, _ = initial_model(cfg, torch.device("cpu"))
    n = privacy.server_batchnorm(model, store, cfg, torch.device("cpu"))
    from dfflab.federated.task import global_rows

    assert n == len(global_rows(store, cfg)["val"])
    assert any(not torch.all(m.running_var == 1) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_client_side_clipping_mod_bounds_the_update_it_sends(store, tmp_path):
    cfg = tiny(store, tmp_path, "fl.dp-clip=0.05", "train.threads=1")
    model, _ = initial_model(cfg, torch.device("cpu"))
    sent = privacy.dp_arrays(cfg, {k: v.detach().clone() for k, v in model.state_dict().items()})
    msg = client_msg(cfg, model, 1, **{KEY_CLIPPING_NORM: 0.05})
    msg.content["arrays"] = arrays_of({k: v.numpy() for k, v in sent.items()})
    out = client_app.app(msg, client_ctx(0))  # the ClientApp with its mods, as Flower calls it
    assert not out.has_error(), out.error if out.has_error() else ""
    m = out.content["metrics"]
    back = {k: v.numpy() for k, v in out.content["arrays"].items()}
    assert m["update_norm"] > 0.05  # it trained further than the bound ...
    assert _norm(back, {k: v.numpy() for k, v in sent.items()}) == pytest.approx(0.05, rel=1e-4)  # ... and was clipped
    assert m["dp-weight"] == 1
    # without the server's clipping norm in the config the mod passes the reply through unclipped
    plain = client_app.app(client_msg(cfg, model, 1), client_ctx(0))
    unclipped = {k: v.numpy() for k, v in plain.content["arrays"].items()}
    assert _norm(unclipped, {k: v.numpy() for k, v in sent.items()}) > 0.05


@pytest.mark.parametrize("extra,match", [(["fl.strategy=fedmedian"], "fl.strategy"),
                                         (["fl.min-nodes=2"], "fl.min-nodes"),
                                         (["fl.dp-delta=1.5"], "fl.dp-delta"),
                                         (["fl.dp-clipping=both"], "fl.dp-clipping"),
                                         (["fl.task=ssl"], "fl.task")])
def test_bad_dp_settings_are_named(extra, match):
    from dfflab.federated.config import check_names

    with pytest.raises(ConfigError, match=match):
        check_names(_dp(*extra).fl)


@pytest.mark.slow
def test_dp_simulation_records_epsilon_every_round(tmp_path):
    """A real Flower run (3 clients, 2 rounds, client-side clipping): epsilon per round in metrics.csv
    and summary.json, each the accountant package's own value; every client's update norm recorded."""
    from dfflab.data.synth import SynthSpec, write_synth
    from dfflab.federated.launcher import run_federated
    from dfflab.files import read_csv

    root = tmp_path / "synthdff"
    write_synth(root, SynthSpec(n_real=24, seed=0, difficulty=1.5, fake_size=48, real_min=40, real_max=90),
                load_config("tiny"), progress=False)
    cfg = load_config("tiny", [f"data.root={root}", f"results={tmp_path / 'results'}", "data.n-real=24",
                               "data.difficulty=1.5", "data.fake-size=48", "data.real-min=40", "data.real-max=90",
                               "fl.num-partitions=3", "fl.rounds=2", "fl.dp-clip=0.5", "fl.dp-noise=0.8",
                               "fl.dp-delta=1e-4", "train.threads=1"])
    run = run_federated(cfg, name="dp-test", progress=False)
    rows = run.metrics()
    assert [r["epsilon"] for r in rows] == pytest.approx([0.0, *(_reference_epsilon(0.8, r, 1e-4) for r in (1, 2))])
    s = run.summary()
    assert s["epsilon"] == pytest.approx(_reference_epsilon(0.8, 2, 1e-4))
    assert s["dp"]["noise_multiplier"] == 0.8 and s["dp"]["clip"] == 0.5 and s["dp"]["delta"] == 1e-4
    assert "auroc_ci" in s["test"] and run.path("test_scores.npz").is_file()
    trained = [r for r in read_csv(run.path("clients.csv")) if r["phase"] == "train"]
    assert len(trained) == 6 and all(float(r["update_norm"]) > 0 for r in trained)


def test_privacy_tables_pair_runs_by_seed_and_plot_auroc_against_epsilon(tmp_path):
    from dfflab.evidence import intervals
    from dfflab.report import privacy as pt
    from dfflab.runs import Run

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(100), np.ones(100)].astype(int)

    def fake_run(name, seed, signal, dp=None):
        cfg = load_config("tiny", [f"results={tmp_path}", f"train.seed={seed}"])
        run = Run.create(tmp_path, "federated", name, cfg.to_dict(), fingerprint="fp")
        probs = 1 / (1 + np.exp(-(signal * (labels - 0.5) + rng.normal(size=200))))
        np.savez(run.path("test_scores.npz"), rows=np.arange(200), labels=labels, probs=probs, threshold=0.5)
        from dfflab.metrics import binary_metrics

        auroc = binary_metrics(torch.tensor(probs), torch.tensor(labels))["auroc"]
        extra = {"dp": {"noise_multiplier": dp[0], "clip": 2.0, "delta": 1e-5}, "epsilon": dp[1]} if dp else {}
        run.write_summary({"test": {"auroc": auroc, **intervals(probs, labels)}, **extra})
        return run

    for seed in (0, 1):
        fake_run("fedavg-source", seed, 3.0)
        fake_run("fedavg-source-fedbyol-init", seed, 3.0)
        fake_run("fedavg-source-byol-init", seed, 0.5)
    for z, eps, signal in ((0.01, 5e4, 2.0), (0.1, 650.0, 1.0), (1.0, 19.0, 0.0)):
        fake_run(f"dp-fedavg-source-z{z}", 0, signal, (z, eps))
    inits, dp_runs, base = pt.find_privacy_runs(tmp_path)
    assert list(inits) == ["scratch", "centralized byol", "federated byol"] and len(base) == 2
    rows = pt.init_comparison(inits, 200)
    assert rows[1]["vs scratch"]["verdict"] == "worse" and rows[1]["vs scratch"]["n_seeds"] == 2
    assert rows[2]["seeds"] == [0, 1] and "better" in pt.init_table(rows)
    curve = pt.privacy_utility(dp_runs, base, 200)
    assert [r["epsilon"] for r in curve] == [19.0, 650.0, 5e4, float("inf")]
    assert curve[0]["vs non-private"]["verdict"] == "worse" and curve[0]["vs non-private"]["n_seeds"] == 1
    assert "19" in pt.privacy_table(curve)
    assert pt.plot_privacy_utility(curve, tmp_path / "pu.png").is_file()
