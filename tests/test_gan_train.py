"""GAN training end to end on the tiny preset: the CLI commands, resume, divergence, evolve."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dfflab.cli import main
from dfflab.runs import Run, list_runs


@pytest.fixture(scope="module")
def gan_args(tmp_path_factory, synth_root, store):
    results = tmp_path_factory.mktemp("gan-results")
    # One thread: with the 2 cores shared, OpenMP's spinning threads made two ~50x slower.
    return ["--preset", "tiny", "--set", f"results={results}", "--set", f"data.root={synth_root}",
            "--set", f"data.store={store.path}", "--set", "train.threads=1"]


def _cfg(gan_args, *extra):
    from dfflab.cli import build_parser, config_from_args

    args = build_parser().parse_args(["generative", "train", *gan_args, *[a for e in extra for a in ("--set", e)]])
    return config_from_args(args)


@pytest.fixture(scope="module")
def trained(gan_args) -> Run:
    """A tiny GAN trained through the CLI with the real TF-Inception extractor."""
    assert main(["generative", "train", *gan_args, "--name", "cli", "--note", "smoke"]) == 0
    results = gan_args[gan_args.index("--set") + 1].split("=", 1)[1]
    return next(r for r in list_runs(results, "generative") if r.record["name"] == "cli")


class Cheap(nn.Module):
    """A fast stand-in extractor for tests about the loop, not about Inception."""

    num_features = 48

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)


@pytest.fixture
def cheap_metrics(monkeypatch):
    monkeypatch.setattr("dfflab.generative.train.build_extractors", lambda gc, results, device: {"inception": Cheap()})


def test_train_cli_writes_a_complete_run(trained):
    rec, s = trained.record, trained.summary()
    assert rec["stage"] == "generative" and rec["note"] == "smoke"
    rows = trained.metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == s["g_steps"] > 0
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) and 0 <= r["d_acc"] <= 1 for r in rows)
    assert all("d_train_real" in r and "d_heldout_real" in r for r in rows)  # monitor-every = 1 in tiny
    assert rows[1]["fid"] == pytest.approx(s["fid"]) and rows[1]["n_eval"] == 3
    for e in (1, 2):  # one row per class of grid-n fixed-noise samples (16 px + 2 px padding)
        assert Image.open(trained.path(f"samples_epoch{e}.png")).size == (2 + 4 * 18, 2 + 4 * 18)
    last = trained.load("last.pt")
    assert {"g", "d", "g_ema", "opt_g", "opt_d", "rng", "epoch"} <= set(last) and last["epoch"] == 2
    # the keys, overall (mean over classes) and per class, every number with its n
    for entry in (s, *s["per_class"].values()):
        for k in ("fid", "fid_ci", "kid", "kid_ci", "kid_std", "fid_floor", "kid_floor", "n_eval", "n_real"):
            assert k in entry, k
        assert entry["n_eval"] == 3 and entry["n_real"] == 3 and entry["fid_ci"][0] <= entry["fid_ci"][1]
    assert set(s["per_class"]) == {"wiki", "inpainting", "insight", "text2img"}
    assert s["fid"] == pytest.approx(np.mean([v["fid"] for v in s["per_class"].values()]))
    assert s["fid_floor"] == pytest.approx(np.mean([v["fid_floor"] for v in s["per_class"].values()]))
    assert s["metric"]["extractor"] == "inception" and s["metric"]["reference"]["split"] == "synth"
    assert s["per_class"]["wiki"]["kid_subset_size"] < 3  # KID subsets smaller than n
    reps = json.loads(trained.path("bootstrap.json").read_text())["inception"]["overall"]
    assert len(reps["kid_reps"]) == 20  # tiny: gan.bootstrap = 20


def test_sample_cli(trained, gan_args, tmp_path):
    out = tmp_path / "samples"
    assert main(["generative", "sample", "--class", "inpainting", "--class", "real", "--n", "5",
                 "--out", str(out), *gan_args]) == 0
    files = sorted((out / "inpainting").glob("*.png"))
    assert len(files) == 5 and Image.open(files[0]).size == (16, 16)
    assert len(list((out / "wiki").glob("*.png"))) == 5  # "real" names the real source
    assert (out / "grid_inpainting.png").is_file()
    assert main(["generative", "sample", "--class", "gan", "--n", "1", "--out", str(out), *gan_args]) == 1


def test_generator_checkpoint_holds_the_ema_with_standing_statistics(trained):
    from dfflab.generative.sample import generate, load_generator
    from dfflab.generative.steps import standing_stats

    g, ckpt = load_generator(trained.dir)
    assert ckpt["ema"] is True and ckpt["source_names"][0] == "wiki" and ckpt["kwargs"]["arch"] == trained.config["gan"]["arch"]
    ema = g.__class__(**{k: v for k, v in ckpt["kwargs"].items() if k != "arch"})
    ema.load_state_dict(trained.load("last.pt")["g_ema"])
    y = torch.arange(4)
    standing_stats(ema, trained.config["gan"]["standing_batches"])
    assert torch.equal(generate(g, y, seed=1), generate(ema, y, seed=1))


def test_resume_after_a_crash_matches_an_uninterrupted_run(gan_args, store, cheap_metrics, monkeypatch):
    from dfflab.generative import train as tr

    cfg = _cfg(gan_args, "gan.monitor-every=1")
    straight = tr.train_gan(cfg, name="straight", store=store, progress=False)
    after_epoch1 = _epoch1(cfg, store)
    real_score = tr.score_generator

    def crash(*a, **k):
        raise RuntimeError("simulated crash during the final evaluation")

    monkeypatch.setattr(tr, "score_generator", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tr.train_gan(cfg, name="crashy", store=store, progress=False)
    crashed = next(r for r in list_runs(cfg.results, "generative") if r.record["name"] == "crashy")
    assert crashed.load("last.pt")["epoch"] == 2 and len(crashed.metrics()) == 2
    crashed.save("last.pt", after_epoch1)  # as if it had died during epoch 2
    monkeypatch.setattr(tr, "score_generator", real_score)
    resumed = tr.train_gan(cfg, name="crashy", store=store, progress=False)
    assert resumed.dir == crashed.dir and [r["epoch"] for r in resumed.metrics()] == [1, 2]
    a, b = straight.load("generator.pt")["generator"], resumed.load("generator.pt")["generator"]
    assert all(torch.allclose(a[k], b[k]) for k in a)


def _epoch1(cfg, store) -> dict:
    """The checkpoint a run of ``cfg`` writes after its first epoch."""
    from dfflab.generative import train as tr

    one = copy.deepcopy(cfg)
    one.gan.epochs = 1
    return tr.train_gan(one, name="one-epoch", store=store, progress=False).load("last.pt")


def test_continuing_a_run_equals_one_longer_run(gan_args, store, cheap_metrics):
    from dfflab.generative import train as tr

    short = _cfg(gan_args, "gan.epochs=1")
    long = _cfg(gan_args, "gan.epochs=2")
    parent = tr.train_gan(short, name="short", store=store, progress=False)
    cont = tr.train_gan(long, name="continued", store=store, progress=False, init_from=parent)
    straight = tr.train_gan(long, name="long", store=store, progress=False)
    assert cont.record["continues"] == parent.name and [r["epoch"] for r in cont.metrics()] == [1, 2]
    assert cont.summary()["g_steps"] == straight.summary()["g_steps"]
    a, b = cont.load("generator.pt")["generator"], straight.load("generator.pt")["generator"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="same training settings and at most as many gan.epochs"):
        tr.train_gan(_cfg(gan_args, "gan.epochs=2", "gan.lr-g=0.01"), name="bad", store=store, progress=False,
                     init_from=parent)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(gan_args, store, cheap_metrics, monkeypatch):
    from dfflab.generative import train as tr

    cfg = _cfg(gan_args, "gan.monitor-every=1")
    steps_per_epoch = len(store.select("train")) // cfg.gan.batch_size
    calls = {"n": 0}
    real_d_step = tr.d_step

    def exploding(*a, **k):
        calls["n"] += 1
        out = real_d_step(*a, **k)
        return out | {"d_loss": torch.tensor(float("nan"))} if calls["n"] > steps_per_epoch + 1 else out

    monkeypatch.setattr(tr, "d_step", exploding)
    with pytest.raises(tr.GANDivergence, match=r"d_loss=nan in epoch 2.*last good checkpoint \(epoch 1\)"):
        tr.train_gan(cfg, name="boom", store=store, progress=False)
    run = next(r for r in list_runs(cfg.results, "generative") if r.record["name"] == "boom")
    assert run.record["status"] == "diverged" and run.record["diverged_at_epoch"] == 2
    assert run.load("last.pt")["epoch"] == 1 and not run.finished
    assert tr.find_resumable(cfg.results, "boom", cfg.to_dict()) is None  # never resumes into NaN
    with pytest.raises(tr.GANDivergence, match="gan.max-loss=0.001"):
        tr.check_finite({"d_loss": 0.5}, 1e-3, "here")


def test_evaluate_cli_fooling_rate_and_augmented_logo(trained, gan_args, tiny_cfg, tmp_path):
    from dfflab.generative.detector_eval import p_fake
    from dfflab.generative.sample import generate, load_generator
    from dfflab.models import build_detector, load_detector, save_detector

    torch.manual_seed(0)
    det = save_detector(tmp_path / "detector.pt", build_detector(tiny_cfg.model).eval(), tiny_cfg.model, 32,
                        threshold=0.5, source_names=["wiki", "inpainting", "insight", "text2img"])
    assert main(["generative", "evaluate", "--run", str(trained.dir), "--detector", str(det), "--n", "6",
                 "--augment", "--augment-n", "3", "--matched", *gan_args]) == 0
    results = gan_args[gan_args.index("--set") + 1].split("=", 1)[1]
    ev = [r for r in list_runs(results, "generative") if r.record["name"] == "detector-eval"][-1]
    f = ev.summary()["fooling"]
    assert ev.record["parent"] == trained.name and f["gan_image_size"] == 16
    # recompute one class by hand: generated insight images the detector calls real
    model, _ = load_detector(det)
    g, _ = load_generator(trained.dir)
    k = 2
    p = p_fake(model, generate(g, torch.full((6,), k), seed=4242 + k), 32, torch.device("cpu"))
    assert f["per_class"]["insight"]["fooling_rate"] == pytest.approx(float((p < 0.5).float().mean()))
    assert f["per_class"]["overall"]["n_generated"] == 24
    lo, hi = f["per_class"]["insight"]["fooling_rate_ci"]
    assert 0 <= lo <= f["per_class"]["insight"]["fooling_rate"] <= hi <= 1
    logo = ev.summary()["augmented_logo"]
    assert set(logo["held_out"]) == {"inpainting", "insight", "text2img"} and logo["control_per_class"] == 3
    for h, m in logo["held_out"].items():
        base, aug, ctl = (Run.open(ev.dir.parent / r) for r in m["runs"])
        assert base.record["parent"] == ev.name and "gan-" not in "".join(base.config["train"]["train_sources"])
        assert f"gan-{h}" not in aug.config["train"]["train_sources"] and "gan-wiki" in aug.config["train"]["train_sources"]
        assert ctl.config["train"]["train_sources"] == base.config["train"]["train_sources"]  # extras under own names
        assert m["auroc_base"] == pytest.approx(base.summary()["test_per_source"][h]["auroc"], abs=1e-6)
        assert m["delta"] == pytest.approx(m["auroc_gan"] - m["auroc_base"])
        assert m["gan_vs_control"] == pytest.approx(m["auroc_gan"] - m["auroc_control"])
        assert m["gan_vs_control_ci"][0] <= m["gan_vs_control_ci"][1]
    assert [r["held_out"] for r in ev.metrics()] == ["inpainting", "insight", "text2img"]
    assert not ev.path("gan-store").exists() and not ev.path("control-store").exists()  # removed after training
    fm = ev.summary()["fooling_matched"]  # a detector trained on images resampled through 16 px
    matched = Run.open(ev.dir.parent / fm["detector_run"])
    assert matched.record["parent"] == ev.name and fm["detector"] == str(matched.path("detector.pt"))
    assert fm["detector_test_auroc"] == matched.summary()["test"]["auroc"]
    assert set(fm["per_class"]) == {"wiki", "inpainting", "insight", "text2img", "overall"}
    assert not ev.path("resampled-store").exists()


def test_augmented_store_adds_generated_fakes_to_train(trained, store, tmp_path):
    from dfflab.generative.augment import logo_jobs
    from dfflab.generative.sample import load_generator
    from dfflab.generative.stores import write_augmented_store

    g, _ = load_generator(trained.dir)
    aug = write_augmented_store(store, g, 3, tmp_path / "aug")
    new = np.flatnonzero(np.char.startswith(aug.sources.astype(str), "gan-"))
    assert len(aug) == len(store) + 12 and len(new) == 12
    assert set(aug.labels[new]) == {1} and set(aug.split[new]) == {"train"}
    assert aug.images.shape[1:] == store.images.shape[1:]  # upsampled to the store's size
    assert aug.source_names[:4] == store.source_names  # old source ids unchanged
    assert np.array_equal(aug.images[: len(store)], store.images)
    jobs = logo_jobs(["inpainting", "insight", "text2img"])
    assert ("insight", "gan", ["inpainting", "text2img", "gan-wiki", "gan-inpainting", "gan-text2img"]) in jobs
    assert ("insight", "base", ["inpainting", "text2img"]) in jobs
    assert ("insight", "control", ["inpainting", "text2img"]) in jobs


def test_control_store_adds_as_many_resampled_train_images_with_their_labels(store, tmp_path):
    from dfflab.generative.stores import resize_uint8, write_control_store

    ctl = write_control_store(store, 16, 3, tmp_path / "ctl")
    new = np.arange(len(store), len(ctl))
    assert len(new) == 12 and set(ctl.split[new]) == {"train"}
    assert ctl.source_names == store.source_names  # no new sources: the copies keep their own
    for c in store.source_names:
        rows = new[ctl.sources[new] == c]
        assert len(rows) == 3 and set(ctl.labels[rows]) == {int(c != "wiki")}
    first = np.flatnonzero((store.split == "train") & (store.sources == "wiki"))
    originals = torch.from_numpy(np.array(store.images[first])).permute(0, 3, 1, 2)
    resampled = resize_uint8(resize_uint8(originals, 16), store.image_size).permute(0, 2, 3, 1).numpy()
    copy0 = ctl.images[new[ctl.sources[new] == "wiki"][0]]
    assert any(np.array_equal(copy0, r) for r in resampled)  # a train real sent through 16 px and back


def test_paired_auroc_intervals():
    from dfflab.evidence import Scored
    from dfflab.generative.augment import paired_auroc

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 10)
    rows = np.arange(80)
    good = labels + 0.1 * np.arange(80) / 80
    noise = np.random.default_rng(0).random(80)
    out = paired_auroc({v: Scored(rows, labels, p) for v, p in (("base", noise), ("gan", good), ("control", noise))},
                       reps=200)
    assert out["gan"]["auroc"] == 1.0 and out["gan"]["auroc_ci"] == [1.0, 1.0]
    assert out["gan-base"]["verdict"] == "better" and out["gan-control"]["delta_ci"][0] > 0
    assert out["control-base"]["delta"] == 0 and out["control-base"]["verdict"] == "no significant difference"


def test_resampled_store_sends_every_image_through_the_gan_size(store, tmp_path):
    from dfflab.generative.stores import resize_uint8, write_resampled_store

    rs = write_resampled_store(store, 16, tmp_path / "rs")
    assert len(rs) == len(store) and rs.image_size == store.image_size
    assert np.array_equal(rs.labels, store.labels) and np.array_equal(rs.split, store.split)
    x = torch.from_numpy(np.array(store.images[:5])).permute(0, 3, 1, 2)
    want = resize_uint8(resize_uint8(x, 16), store.image_size).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(rs.images[:5], want) and not np.array_equal(rs.images[:5], store.images[:5])


def test_evolve_chain_one_change_per_step_accepts_only_beyond_the_interval(gan_args, cheap_metrics, capsys):
    from dfflab.config import config_from_dict
    from dfflab.generative.evolve import EVOLUTION, step_configs

    assert len(EVOLUTION) >= 4 and EVOLUTION[-1].continues
    cfg = _cfg(gan_args)
    steps = step_configs(cfg)
    for (_, prev), (step, c) in zip(steps, steps[1:], strict=False):  # after the start: one setting per step
        diff = {k for k, v in c.flat().items() if prev.flat()[k] != v}
        assert len(diff) == 1, (step.name, diff)
    assert main(["generative", "evolve", *gan_args, "--set", "gan.monitor-every=1"]) == 0
    results = gan_args[gan_args.index("--set") + 1].split("=", 1)[1]
    runs = {r.record["name"]: r for r in list_runs(results, "generative")}
    chain = runs["evolve"].summary()
    recs = chain["chain"]
    assert [r["step"] for r in recs] == [s.name for s in EVOLUTION]
    assert recs[0]["parent"] is None and recs[0]["accepted"]
    accepted = recs[0]["run"]
    for r in recs[1:]:
        assert r["parent"] == accepted  # a rejected step is kept, and the next starts from the last accepted
        assert r["reason"] and r["note"] and "kid_delta_ci" in r
        assert r["accepted"] == (r["kid_delta_ci"][1] < 0)
        run = runs[f"evolve-{r['step']}"]
        parent_cfg = config_from_dict(runs[next(k for k, v in runs.items() if v.name == accepted)].config)
        changed = {k for k, v in config_from_dict(run.config).flat().items() if parent_cfg.flat()[k] != v}
        assert len(changed) == 1 and run.record["evolution"]["accepted"] == r["accepted"]
        if r["accepted"]:
            accepted = r["run"]
    assert chain["final_run"] == accepted
    by_step = {r["step"]: r for r in recs}
    steps_of = {r["run"]: r["g_steps"] for r in recs}
    longer, ema = by_step["longer"], by_step["ema"]
    assert runs["evolve-longer"].record["continues"] == longer["parent"]
    assert longer["g_steps"] == 4 * steps_of[longer["parent"]]  # four times the parent's G steps
    its_parent = Run.open(runs["evolve"].dir.parent / ema["parent"])
    assert runs["evolve-ema"].record["continues"] == its_parent.name and ema["g_steps"] == steps_of[ema["parent"]]
    same = runs["evolve-ema"].load("last.pt")["g"], its_parent.load("last.pt")["g"]
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])  # the parent's training, sampled from its EMA
    assert chain["final"]["run"] == accepted and chain["final"]["n_eval"] == 3 and "fid_floor" in chain["final"]
    assert "| baseline |" in chain["table"] and "| baseline |" in capsys.readouterr().out
