"""Evolution chains: a step is accepted only when significantly better; rejected steps stay."""

import numpy as np
from conftest import tiny

from dfflab.detector.scoring import Scores
from dfflab.evolution import chain_runs, judge, step_record
from dfflab.federated.search import CHAIN, run_search
from dfflab.runs import Run
from dfflab.train.core import Predictions


def _scored_run(tmp_path, name, quality: float, seed: int, extra=None, cfg=None, parent=None,
                fingerprint="fp") -> Run:
    """A finished run whose test scores separate reals from fakes by ``quality`` (same 400 test rows)."""
    import torch

    rng = np.random.default_rng(seed)
    y = (np.arange(400) % 4 != 0).astype(int)
    p = np.clip(rng.normal(0.45 + quality * y, 0.15), 1e-4, 1 - 1e-4)
    run = Run.create(tmp_path, "federated", name, cfg.to_dict() if cfg else {}, extra=extra,
                     fingerprint=fingerprint, parent=parent)
    logits = torch.logit(torch.tensor(p))
    Scores({}, {}, Predictions(logits, torch.tensor(y), torch.zeros(400, dtype=torch.long)), 0.5,
           rows=np.arange(400)).save(run.path("test_scores.npz"))
    run.log_metrics({"round": 1, "test_auroc": 0.6, "train_loss": 0.5, "steps": 10})
    run.log_metrics({"round": 2, "test_auroc": 0.7, "train_loss": 0.6, "steps": 20})
    run.write_summary({"test": {"auroc": float(quality)}, "steps": 20})
    return run


def test_judge_accepts_only_a_significantly_better_step(tmp_path):
    base = _scored_run(tmp_path, "a", 0.1, 0, step_record("c", 0, "base", "why", None))
    better = _scored_run(tmp_path, "b", 0.3, 1, step_record("c", 1, "more", "because", base.name))
    same = _scored_run(tmp_path, "c", 0.3, 2, step_record("c", 2, "noise", "because", better.name))
    assert judge(base, None)["accepted"]
    evo = judge(better, base)
    assert evo["accepted"] and evo["comparison"]["verdict"] == "better" and evo["comparison"]["vs"] == base.name
    evo = judge(same, better)
    assert not evo["accepted"] and evo["comparison"]["verdict"] == "no significant difference"
    assert Run.open(same.dir).record["evolution"]["accepted"] is False  # recorded, stays in the chain
    assert [r.name for r in chain_runs(tmp_path, "c")] == [base.name, better.name, same.name]


def test_search_keeps_the_accepted_changes_and_starts_each_step_from_the_last_accepted(store, tmp_path):
    cfg = tiny(store, tmp_path)
    quality = {"fl-iid-base": 0.1, "fl-iid-keep-optimizer": 0.1, "fl-iid-local-batch": 0.3,
               "fl-iid-client-trajectory": 0.3, "fl-iid-server-momentum": 0.3, "fl-iid-server-step": 0.3,
               "fl-iid-fewer-rounds": 0.3}
    calls = []

    def runner(step_cfg, *, name, parent, note, progress, extra):
        calls.append((name, parent, step_cfg.fl.keep_optimizer, step_cfg.fl.local_batch_size, step_cfg.fl.strategy))
        assert extra["evolution"]["reason"] and extra["evolution"]["reason"] in note
        return _scored_run(tmp_path, name, quality[name], len(calls), extra, step_cfg, parent, store.fingerprint)

    out = run_search(cfg, store=store, runner=runner, progress=False)
    names = [c[0] for c in calls]
    assert names == list(quality)
    # step 2 (keep-optimizer) is no better: rejected, so step 3 starts from the base, without it
    assert calls[2][2] is False and calls[2][3] == cfg.train.batch_size // cfg.fl.num_partitions
    assert calls[3][2] is True and calls[3][3] == calls[2][3]  # both changes together, as one step
    assert calls[4][2] is False and calls[4][4] == "fedavgm"  # that step was rejected: not carried on
    assert out["recipe"] == {"fl.strategy": "fedavg", "fl.keep-optimizer": False,
                             "fl.local-batch-size": cfg.train.batch_size // cfg.fl.num_partitions}
    steps = chain_runs(tmp_path, CHAIN)
    assert [s.record["evolution"]["accepted"] for s in steps] == [True, False, True, False, False, False, False]
    assert steps[3].config["fl"]["keep_optimizer"] and steps[3].config["fl"]["local_batch_size"] > 0
    assert steps[5].config["fl"]["server_momentum"] == 0.0 and steps[5].config["fl"]["server_step"] > 1
    assert steps[6].config["fl"]["rounds"] * steps[6].config["fl"]["local_epochs"] == cfg.fl.rounds * cfg.fl.local_epochs
    assert steps[2].record["parent"] == steps[0].name  # from the last accepted step
    # a second search reuses every finished step
    calls.clear()
    assert run_search(cfg, store=store, runner=runner, progress=False)["recipe"] == out["recipe"]
    assert calls == []


def test_first_step_has_no_comparison(tmp_path):
    run = _scored_run(tmp_path, "only", 0.1, 0, step_record("x", 0, "base", "why", None))
    assert judge(run, None) == {**step_record("x", 0, "base", "why", None)["evolution"], "accepted": True,
                                "comparison": None}
