"""GAN training end to end on the tiny preset: the CLI commands, resume, divergence, evolve."""

from __future__ import annotations

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
    monkeypatch.setattr("dfflab.generative.train.build_extractors", lambda gc, results: {"inception": Cheap()})


def test_train_cli_writes_a_complete_run(trained):
    rec, s = trained.record, trained.summary()
    assert rec["stage"] == "generative" and rec["note"] == "smoke"
    rows = trained.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    assert rows[0]["fid_n_per_class"] == 2 and rows[1]["fid_n_per_class"] == 3  # check, then final
    assert rows[1]["fid"] == pytest.approx(s["fid_inception_overall"])
    for e in (1, 2):  # one row per class of grid-n fixed-noise samples (16 px + 2 px padding)
        assert Image.open(trained.path(f"samples_epoch{e}.png")).size == (2 + 4 * 18, 2 + 4 * 18)
    last = trained.load("last.pt")
    assert {"g", "d", "g_ema", "opt_g", "opt_d", "rng", "epoch"} <= set(last) and last["epoch"] == 2
    per = s["scores"]["inception"]
    assert set(per) == {"wiki", "inpainting", "insight", "text2img", "overall"}
    assert per["wiki"]["n_fake"] == 3 and per["wiki"]["n_real"] == 3 and per["overall"]["n_fake"] == 12
    assert all(np.isfinite(v["fid"]) and v["fid"] > 0 for v in per.values())
    assert s["generated_per_class"] == 3 and s["reference_split"] == "test"


def test_sample_cli(trained, gan_args, tmp_path):
    out = tmp_path / "samples"
    assert main(["generative", "sample", "--class", "inpainting", "--class", "real", "--n", "5",
                 "--out", str(out), *gan_args]) == 0
    files = sorted((out / "inpainting").glob("*.png"))
    assert len(files) == 5 and Image.open(files[0]).size == (16, 16)
    assert len(list((out / "wiki").glob("*.png"))) == 5  # "real" names the real source
    assert (out / "grid_inpainting.png").is_file()
    assert main(["generative", "sample", "--class", "gan", "--n", "1", "--out", str(out), *gan_args]) == 1


def test_generator_checkpoint_reproduces_the_ema_samples(trained):
    from dfflab.generative.sample import generate, load_generator

    g, ckpt = load_generator(trained.dir)
    assert ckpt["ema"] is True and ckpt["source_names"][0] == "wiki"
    ema = g.__class__(**ckpt["kwargs"])
    ema.load_state_dict(trained.load("last.pt")["g_ema"])
    y = torch.arange(4)
    assert torch.equal(generate(g, y, seed=1), generate(ema, y, seed=1))


def test_resume_after_a_crash_matches_an_uninterrupted_run(gan_args, store, cheap_metrics, monkeypatch):
    from dfflab.generative import train as tr

    cfg = _cfg(gan_args, "gan.fid-every=0")
    straight = tr.train_gan(cfg, name="straight", store=store, progress=False)
    real_score = tr.score_generator

    def crash(*a, **k):
        raise RuntimeError("simulated crash during the final evaluation")

    monkeypatch.setattr(tr, "score_generator", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tr.train_gan(cfg, name="crashy", store=store, progress=False)
    crashed = next(r for r in list_runs(cfg.results, "generative") if r.record["name"] == "crashy")
    assert crashed.load("last.pt")["epoch"] == 1 and len(crashed.metrics()) == 1
    monkeypatch.setattr(tr, "score_generator", real_score)
    resumed = tr.train_gan(cfg, name="crashy", store=store, progress=False)
    assert resumed.dir == crashed.dir and [r["epoch"] for r in resumed.metrics()] == [1, 2]
    a, b = straight.load("generator.pt")["generator"], resumed.load("generator.pt")["generator"]
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(gan_args, store, cheap_metrics, monkeypatch):
    from dfflab.generative import train as tr

    cfg = _cfg(gan_args, "gan.fid-every=0")
    steps_per_epoch = len(store.select("train")) // cfg.gan.batch_size
    calls = {"n": 0}
    real_d_step = tr.d_step

    def exploding(*a, **k):
        calls["n"] += 1
        out = real_d_step(*a, **k)
        return out | {"d_loss": float("nan")} if calls["n"] > steps_per_epoch + 1 else out

    monkeypatch.setattr(tr, "d_step", exploding)
    with pytest.raises(tr.GANDivergence, match=r"d_loss=nan.*last good checkpoint \(epoch 1\)"):
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
    logo = ev.summary()["augmented_logo"]
    assert set(logo["held_out"]) == {"inpainting", "insight", "text2img"}
    for h, m in logo["held_out"].items():
        base, aug = (Run.open(ev.dir.parent / r) for r in m["runs"])
        assert base.record["parent"] == ev.name and "gan-" not in "".join(base.config["train"]["train_sources"])
        assert f"gan-{h}" not in aug.config["train"]["train_sources"] and "gan-wiki" in aug.config["train"]["train_sources"]
        assert m["auroc_base"] == base.summary()["test_per_source"][h]["auroc"]
        assert m["delta"] == pytest.approx(m["auroc_gan"] - m["auroc_base"])
    assert [r["held_out"] for r in ev.metrics()] == ["inpainting", "insight", "text2img"]
    assert not ev.path("augmented-store").exists()  # removed once the folds are trained
    fm = ev.summary()["fooling_matched"]  # a detector trained on images resampled through 16 px
    matched = Run.open(ev.dir.parent / fm["detector_run"])
    assert matched.record["parent"] == ev.name and fm["detector"] == str(matched.path("detector.pt"))
    assert fm["detector_test_auroc"] == matched.summary()["test"]["auroc"]
    assert set(fm["per_class"]) == {"wiki", "inpainting", "insight", "text2img", "overall"}
    assert not ev.path("resampled-store").exists()


def test_augmented_store_adds_generated_fakes_to_train(trained, store, tmp_path):
    from dfflab.generative.detector_eval import logo_jobs, write_augmented_store
    from dfflab.generative.sample import load_generator

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


def test_resampled_store_sends_every_image_through_the_gan_size(store, tmp_path):
    from dfflab.generative.detector_eval import resize_uint8, write_resampled_store

    rs = write_resampled_store(store, 16, tmp_path / "rs")
    assert len(rs) == len(store) and rs.image_size == store.image_size
    assert np.array_equal(rs.labels, store.labels) and np.array_equal(rs.split, store.split)
    x = torch.from_numpy(np.array(store.images[:5])).permute(0, 3, 1, 2)
    want = resize_uint8(resize_uint8(x, 16), store.image_size).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(rs.images[:5], want) and not np.array_equal(rs.images[:5], store.images[:5])


def test_evolve_chain_records_parent_and_note(gan_args, cheap_metrics, capsys):
    from dfflab.generative.evolve import EVOLUTION, step_configs

    assert len(EVOLUTION) >= 3
    steps = step_configs(_cfg(gan_args))
    base, snp, aug = (c for _, c, _ in steps[:3])
    assert not (base.gan.spectral_norm or base.gan.projection or base.gan.cond_bn or base.gan.ema)
    assert base.gan.loss == "bce" and base.gan.diffaug == "none"
    assert snp.gan.spectral_norm and snp.gan.projection and snp.gan.loss == "hinge" and snp.gan.ema == 0
    assert snp.gan.lr_d > snp.gan.lr_g and base.gan.lr_d == base.gan.lr_g  # TTUR comes with SN
    assert aug.gan.spectral_norm and aug.gan.diffaug != "none" and aug.gan.ema > 0  # cumulative
    assert main(["generative", "evolve", "--steps", "2", *gan_args, "--set", "gan.fid-every=0"]) == 0
    results = gan_args[gan_args.index("--set") + 1].split("=", 1)[1]
    runs = {r.record["name"]: r for r in list_runs(results, "generative")}
    b, s = runs["evolve-baseline"], runs["evolve-sn-projection"]
    assert b.record["parent"] is None and s.record["parent"] == b.name
    assert "spectral norm" in s.record["note"] and s.finished
    chain = runs["evolve"].summary()
    assert [r["step"] for r in chain["chain"]] == ["baseline", "sn-projection"]
    assert "| baseline |" in chain["table"] and "| baseline |" in capsys.readouterr().out
