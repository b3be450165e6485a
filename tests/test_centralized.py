"""The centralized detector: training run, resume, row selection, crossgen, robustness, audit, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfflab.centralized.crossgen import job_config, protocol, run_crossgen
from dfflab.centralized.distortions import DISTORTIONS, conditions, evaluate_robustness
from dfflab.config import ConfigError, load_config
from dfflab.detector import recipe as train_mod
from dfflab.detector.rows import select_rows
from dfflab.detector.scoring import score_checkpoint
from dfflab.detector.trainer import train_detector
from dfflab.models import load_detector
from dfflab.runs import Run

FAKES = ["inpainting", "insight", "text2img"]


def tiny(tmp_path, store, *overrides):
    """The tiny preset on the session store, results in tmp_path, 1 thread (tests share cores)."""
    return load_config(
        "tiny",
        [
            f"results={tmp_path}",
            f"data.store={store.path}",
            "train.threads=1",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("trained"), store)
    return train_detector(cfg, store=store, progress=False), cfg


def test_run_folder_metrics_summary_and_checkpoint(trained, store):
    run, cfg = trained
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    n_train = len(select_rows(store, cfg.train)["train"])
    assert rows[0]["samples"] < rows[1]["samples"] <= 2 * n_train
    for col in (
        "lr",
        "train_loss",
        "val_loss",
        "val_auroc",
        "val_accuracy",
        "val_balanced_accuracy",
        "test_accuracy",
        "test_auroc",
        "seconds",
        *(f"val_auroc_{s}" for s in FAKES),
    ):
        assert col in rows[0], col
    s = run.summary()
    for key in (
        "test",
        "test_per_source",
        "val",
        "threshold",
        "best_epoch",
        "epochs_run",
        "samples",
        "seconds",
        "train_sources",
        "test_sources",
        "init",
        "audit",
    ):
        assert key in s, key
    assert set(s["test_per_source"]) == set(FAKES) and s["epochs_run"] == 2
    assert 0 <= s["test"]["auroc"] <= 1 and s["test"]["n"] == len(
        store.select("test", FAKES)
    )
    best = max(rows, key=lambda r: (round(r["val_auroc"], 6), -r["val_loss"]))
    assert s["best_epoch"] == best["epoch"] and s["threshold"] == pytest.approx(
        best["val_threshold"], abs=1e-5
    )
    for name in ("detector.pt", "last.pt", "roc.png", "pr.png", "confusion.png"):
        assert run.path(name).is_file(), name
    # detector.pt carries the val threshold, and re-scoring it reproduces the summary
    _, ckpt = load_detector(run.path("detector.pt"))
    assert ckpt["threshold"] == pytest.approx(s["threshold"])
    scored = score_checkpoint(run.path("detector.pt"), store, store.select("test", FAKES))
    overall, pred = scored.overall, scored.pred
    assert overall["auroc"] == pytest.approx(s["test"]["auroc"], abs=1e-6)
    assert overall["accuracy"] == pytest.approx(s["test"]["accuracy"], abs=1e-6)
    assert pred.logits.shape == (s["test"]["n"],)


def test_crash_then_resume_continues_the_same_run(store, tmp_path, monkeypatch):
    cfg = tiny(tmp_path, store)
    real_epoch = train_mod.train_one_epoch
    calls = []

    def crash_on_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_epoch(*args, **kw)

    monkeypatch.setattr(train_mod, "train_one_epoch", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated"):
        train_detector(cfg, name="crashy", store=store, progress=False)
    monkeypatch.setattr(train_mod, "train_one_epoch", real_epoch)
    [crashed] = [Run(p) for p in (tmp_path / "runs").iterdir()]
    assert not crashed.finished and len(crashed.metrics()) == 1
    resumed = train_detector(cfg, name="crashy", store=store, progress=False)
    assert resumed.dir == crashed.dir and resumed.finished
    straight = train_detector(cfg, name="straight", store=store, progress=False)
    a, b = resumed.metrics(), straight.metrics()
    assert [r["epoch"] for r in a] == [1, 2]
    # per-epoch seeds make the resumed run replay the uninterrupted one
    for ra, rb in zip(a, b, strict=True):
        for k in ("samples", "train_loss", "val_auroc", "test_auroc"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), k
    # a different config under the same name starts afresh
    other = train_detector(
        tiny(tmp_path, store, "train.lr=0.003"),
        name="crashy",
        store=store,
        progress=False,
    )
    assert other.dir != resumed.dir


def test_rows_follow_sources_and_label_fraction(store, tmp_path):
    cfg = tiny(tmp_path, store, "train.train-sources=insight", "train.label-frac=0.5")
    rows = select_rows(store, cfg.train)
    assert set(store.sources[rows["train"]]) == {"wiki", "insight"}
    assert set(store.sources[rows["val"]]) == {"wiki", "insight"}
    assert set(store.sources[rows["test"]]) == {"wiki", *FAKES}
    full = store.select("train", ["insight"])
    for s in ("wiki", "insight"):
        n = (store.sources[full] == s).sum()
        assert (store.sources[rows["train"]] == s).sum() == max(1, round(n / 2))
    assert np.array_equal(
        rows["train"], select_rows(store, cfg.train)["train"]
    )  # seeded
    groups = {sp: set(store.relpaths[r]) for sp, r in rows.items()}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    with pytest.raises(ConfigError, match="train.train-sources"):
        select_rows(store, tiny(tmp_path, store, "train.train-sources=stylegan").train)


def test_crossgen_protocol_builds_the_right_sets(store, tmp_path):
    jobs = protocol(FAKES)
    assert [j.name for j in jobs] == [f"xgen-{s}" for s in FAKES] + [
        f"logo-{s}" for s in FAKES
    ]
    cfg = tiny(tmp_path, store)
    for job in jobs:
        child = job_config(cfg, job)
        rows = select_rows(store, child.train)
        trained_on = set(store.sources[rows["train"]]) - {"wiki"}
        if job.kind == "single":
            assert trained_on == {job.source}
        else:
            assert trained_on == set(FAKES) - {job.source}
            # the held-out generator is absent from training and from model selection
            assert job.source not in set(store.sources[rows["val"]])
        assert set(store.sources[rows["test"]]) == {"wiki", *FAKES}
        assert (store.labels[rows["train"]] == 0).sum() == (
            store.labels[store.select("train")] == 0
        ).sum()
    assert cfg.train.train_sources == []  # job_config copies; [] = every fake source


def test_crossgen_end_to_end(store, tmp_path):
    two = [
        "inpainting",
        "text2img",
    ]  # 2 single + 2 leave-one-out jobs keep the test short
    cfg = tiny(tmp_path, store, "train.epochs=1", f"train.test-sources={','.join(two)}")
    run = run_crossgen(cfg, store=store, progress=False)
    s = run.summary()
    assert set(s["matrix"]) == set(two) and all(
        set(row) == set(two) for row in s["matrix"].values()
    )
    assert set(s["logo"]) == set(two)
    for h, m in s["logo"].items():
        child = Run(run.dir.parent / s["runs"][f"logo-{h}"])
        assert child.summary()["train_sources"] == [x for x in two if x != h]
        assert child.record["parent"] == run.name
        assert m["auroc_held_out"] == pytest.approx(
            child.summary()["test_per_source"][h]["auroc"]
        )
        assert m["gap"] == pytest.approx(m["auroc_in_dist"] - m["auroc_held_out"])
    assert run.path("crossgen.png").is_file() and len(run.metrics()) == 4


def test_distortions_change_pixels_as_stated():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g).contiguous(
        memory_format=torch.channels_last
    )
    for d, s in conditions():
        y = d.fn(x, s)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1, d.name
        assert not torch.allclose(y, x, atol=1e-3), f"{d.name} {s} did nothing"
    assert torch.allclose(DISTORTIONS["contrast"].fn(x, 1.0), x, atol=1e-6)
    assert torch.allclose(DISTORTIONS["pixelate"].fn(x, 1), x)
    grey = DISTORTIONS["saturation"].fn(x, 0.0)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5)
    p = DISTORTIONS["pixelate"].fn(x, 4)
    assert torch.equal(p[:, :, 0:4, 0:4], p[:, :, 0:1, 0:1].expand(-1, -1, 4, 4))

    # blur and JPEG remove high frequencies: neighbouring pixels get closer
    def tv(z):
        return (z[..., 1:] - z[..., :-1]).abs().mean()

    assert tv(DISTORTIONS["blur"].fn(x, 1.0)) < tv(x) / 2
    assert tv(DISTORTIONS["jpeg"].fn(x, 50)) < tv(x)
    with pytest.raises(ValueError, match="unknown distortion"):
        conditions(["fog"])


def test_robustness_on_a_checkpoint(trained, store):
    run, cfg = trained
    res = evaluate_robustness(
        run.path("detector.pt"), store, cfg, names=["jpeg", "blur"], progress=False
    )
    assert (
        res["n_test"] == len(store.select("test", FAKES))
        and res["test_sources"] == FAKES
    )
    assert [d["label"] for d in res["distortions"]] == [
        "jpeg quality=75",
        "jpeg quality=50",
        "blur sigma_px=0.5",
        "blur sigma_px=1.0",
    ]
    assert res["clean"]["auroc"] == pytest.approx(
        run.summary()["test"]["auroc"], abs=1e-6
    )
    for d in res["distortions"]:
        assert 0 <= d["auroc"] <= 1 and d["description"]
        assert d["auroc_drop"] == pytest.approx(res["clean"]["auroc"] - d["auroc"])


def test_cli_train_robustness_audit(store, synth_root, tmp_path, capsys):
    from dfflab.cli import main

    common = [
        "--preset",
        "tiny",
        "--set",
        f"results={tmp_path}",
        "--set",
        f"data.root={synth_root}",
        "--set",
        f"data.store={store.path}",
        "--set",
        "train.threads=1",
        "--set",
        "train.epochs=1",
    ]
    assert (
        main(
            [
                "centralized",
                "train",
                *common,
                "--train-sources",
                "insight,text2img",
                "--name",
                "cli",
                "--note",
                "two sources",
            ]
        )
        == 0
    )
    [run] = [Run(p) for p in (tmp_path / "runs").iterdir()]
    assert (
        run.summary()["train_sources"] == ["insight", "text2img"]
        and run.record["note"] == "two sources"
    )
    assert "test (" in capsys.readouterr().out
    assert (
        main(
            [
                "centralized",
                "robustness",
                "--run",
                str(run.dir),
                "--distortions",
                "contrast",
                "--set",
                "train.threads=1",
            ]
        )
        == 0
    )
    assert (run.dir / "robustness.json").is_file() and (
        run.dir / "robustness.png"
    ).is_file()
    assert main(["centralized", "audit", *common]) == 0
    assert "metadata-only test AUROC" in capsys.readouterr().out
    assert main(["centralized", "train", *common, "--train-sources", "gan"]) == 2
