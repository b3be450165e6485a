"""Uncertainty quantification: calibration, methods, selective prediction, unseen generators, CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from dfflab.metrics import binary_entropy
from dfflab.uq.calibration import (
    brier,
    ece,
    fit_temperature,
    nll,
    reliability_bins,
    scale,
)
from dfflab.uq.methods import METHODS, Models, Scorer, UQOutput
from dfflab.uq.selective import (
    accuracy_at_coverage,
    aurc,
    oracle_aurc,
    risk_coverage,
    threshold_for_coverage,
)
from dfflab.uq.unseen import held_out_sources, unseen_scores


# -- calibration ------------------------------------------------------------------------------
def _toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D features whose true p(fake) is sigmoid(1.5 x): labels drawn from it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    y = torch.bernoulli(torch.sigmoid(1.5 * x[:, 0]), generator=g).long()
    return x, y


def test_temperature_scaling_fixes_an_overconfident_model_and_keeps_its_ranking():
    # a toy model 4x too confident: its logits are 4 times the calibrated ones
    toy = nn.Linear(1, 1)
    with torch.no_grad():
        toy.weight.fill_(6.0)
        toy.bias.zero_()
    (xv, yv), (xt, yt) = _toy_data(4000, 0), _toy_data(4000, 1)
    with torch.no_grad():
        zv, zt = toy(xv)[:, 0], toy(xt)[:, 0]
    t = fit_temperature(zv, yv)  # validation only
    assert t == pytest.approx(4.0, rel=0.15)
    before, after = torch.sigmoid(zt), scale(zt, t)
    assert nll(after, yt) < nll(before, yt) - 0.1
    assert ece(after, yt) < ece(before, yt)
    assert brier(after, yt) < brier(before, yt)
    # the ranking is untouched: sorted by calibrated p, the raw p never decreases (float32
    # saturation may tie some raw ones), so the AUROC is the same up to summation order
    assert (before[torch.argsort(after)].diff() >= 0).all()
    assert float(binary_auroc(after, yt)) == pytest.approx(float(binary_auroc(before, yt)), abs=1e-6)
    # an already calibrated model keeps T near 1
    assert fit_temperature(1.5 * xv[:, 0], yv) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="both reals and fakes"):
        fit_temperature(zv[yv == 1], yv[yv == 1])
    # logits without signal push T to infinity; the clamp keeps p(fake) distinct, ranking intact
    noise = torch.randn(400, generator=torch.Generator().manual_seed(5))
    y_any = torch.arange(400) % 2
    t = fit_temperature(noise, y_any)
    assert t == 100.0
    raw = torch.sigmoid(noise.double())
    assert float(binary_auroc(scale(noise, t), y_any)) == pytest.approx(float(binary_auroc(raw, y_any)), abs=1e-9)


def test_ece_nll_brier_match_hand_computation():
    p = torch.tensor([0.05, 0.15, 0.12, 0.55, 0.62, 0.91, 0.97, 0.99])
    y = torch.tensor([0, 0, 1, 1, 0, 1, 1, 0])
    # 5 bins [0,.2) [.2,.4) [.4,.6) [.6,.8) [.8,1]:
    #   [0,.2):  mean p .32/3, share of fakes 1/3 -> gap .226667 x 3 images
    #   [.4,.6): .55 vs 1 -> .45;  [.6,.8): .62 vs 0 -> .62
    #   [.8,1]:  mean p 2.87/3 vs 2/3 -> .29 x 3 images
    assert ece(p, y, n_bins=5) == pytest.approx((3 * 0.226667 + 0.45 + 0.62 + 3 * 0.29) / 8, abs=1e-5)
    b = reliability_bins(p, y, n_bins=5)
    assert b["count"] == [3, 0, 1, 1, 3, 0]
    assert b["mean_prob"][4] == pytest.approx(2.87 / 3) and b["frac_fake"][4] == pytest.approx(2 / 3)
    q, z = torch.tensor([0.8, 0.3]), torch.tensor([1, 0])
    assert nll(q, z) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert brier(q, z) == pytest.approx((0.04 + 0.09) / 2)
    assert binary_entropy(torch.tensor([0.5, 1.0])).tolist() == pytest.approx([1.0, 0.0], abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reliability_bins_reproduce_torchmetrics_ece_with_saturated_probabilities(seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(200, generator=g)
    p[:20] = 1.0  # float32 sigmoid of a large logit; torchmetrics keeps p == 1 in a bin of its own
    y = torch.bernoulli(p * 0.8, generator=g).long()
    b = reliability_bins(p, y, 10)
    n = sum(b["count"])
    by_hand = sum(c / n * abs(f - m) for c, f, m in zip(b["count"], b["frac_fake"], b["mean_prob"], strict=True))
    assert by_hand == pytest.approx(ece(p, y, 10), abs=1e-6)


# -- selective prediction ----------------------------------------------------------------------
def test_risk_coverage_and_aurc_by_hand():
    u = torch.tensor([0.1, 0.2, 0.3, 0.4])
    correct = torch.tensor([1, 1, 0, 1])
    cov, risk = risk_coverage(u, correct)
    assert cov.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert risk.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 4])
    assert aurc(u, correct) == pytest.approx((1 / 3 + 1 / 4) / 4)
    assert oracle_aurc(correct) == pytest.approx((1 / 4) / 4)  # the one error kept for last
    assert accuracy_at_coverage(u, correct, 0.5) == 1.0
    assert accuracy_at_coverage(u, correct, 0.75) == pytest.approx(2 / 3)
    assert threshold_for_coverage(u, 0.5) == pytest.approx(0.2)
    # ties are averaged over orders: two tied images, one wrong -> risk .5 at both coverages
    assert risk_coverage(torch.zeros(2), torch.tensor([1, 0]))[1].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="uq.coverage"):
        accuracy_at_coverage(u, correct, 1.5)


def test_unseen_separation_flags_the_held_out_generator():
    # sources: 0 wiki (real), 1 seen fakes (confident), 2 held-out fakes (near 0.5)
    probs = torch.tensor([0.05, 0.1, 0.02, 0.97, 0.99, 0.95, 0.55, 0.45, 0.6])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])
    sids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    member = torch.stack([probs, probs.flip(0)])
    out = UQOutput(probs, labels, sids, member)
    names = ["wiki", "seen", "held"]
    assert held_out_sources(["seen"], ["seen", "held"], ["seen", "held"]) == ["held"]
    r = unseen_scores(out, names, "held", ["seen"], threshold=0.5, coverage=0.5, abstain_at=0.5)
    assert r["separation_auroc"]["entropy"] == pytest.approx(1.0)
    assert set(r["separation_auroc"]) == {"entropy", "mutual_info"}
    assert r["held_out"]["accuracy"] == pytest.approx(5 / 6)  # 0.45 called real
    assert r["seen"]["accuracy"] == 1.0
    assert r["held_out"]["val_threshold_coverage"] == pytest.approx(3 / 6)  # only the reals are sure enough


# -- methods on real detectors -----------------------------------------------------------------
def _detector(tmp_path, store, name: str, dropout: float = 0.5, seed: int = 0, epochs: int = 2):
    """A detector trained briefly with the shared core on the fixture store; returns its path."""
    from dfflab.config import ModelConfig
    from dfflab.device import seed_everything
    from dfflab.models import build_detector, save_detector
    from dfflab.train.core import detection_loss, train_one_epoch

    seed_everything(seed)
    mcfg = ModelConfig(backbone="resnet-narrow", width=4, dropout=dropout)
    model = build_detector(mcfg)
    rows = store.select("train")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss = detection_loss(store.labels[rows], "weight", torch.device("cpu"))
    for e in range(epochs):
        train_one_epoch(model, store.batches(rows, 16, shuffle=True, seed=e, drop_last=True), opt, loss,
                        torch.device("cpu"))
    path = tmp_path / f"{name}.pt"
    save_detector(path, model, mcfg, store.image_size, source_names=store.source_names)
    return path


@pytest.fixture(scope="module")
def dets(tmp_path_factory, store) -> dict:
    """Detector files trained once for this module: ``a``, ``b`` (seeds 0, 1) and ``nodrop``."""
    d = tmp_path_factory.mktemp("dets")
    return {"a": _detector(d, store, "a", seed=0), "b": _detector(d, store, "b", seed=1),
            "nodrop": _detector(d, store, "nodrop", dropout=0.0, epochs=1)}


def _scorer(store) -> Scorer:
    rows = {"val": store.select("val"), "test": store.select("test")}
    return Scorer(store, rows, torch.device("cpu"), batch_size=64)


def test_mc_dropout_with_dropout_off_is_the_deterministic_prediction(dets, store):
    from dfflab.uq.config import UQConfig

    ucfg = UQConfig(mc_samples=4)
    scorer = _scorer(store)
    models = Models(dets["nodrop"])
    det = METHODS["plain"].fn(models, scorer, ucfg).outputs["test"]
    mc = METHODS["mc-dropout"].fn(models, scorer, ucfg)
    out = mc.outputs["test"]
    assert out.member_probs.shape == (4, len(det.probs))
    torch.testing.assert_close(out.probs, det.probs, rtol=0, atol=1e-6)
    assert float(out.mutual_info.max()) < 1e-5 and "warning" in mc.info
    # with dropout on, the passes differ and the epistemic part is positive
    models = Models(dets["a"])
    out = METHODS["mc-dropout"].fn(models, _scorer(store), ucfg).outputs["test"]
    assert float(out.member_probs.std(0).max()) > 0 and float(out.mutual_info.mean()) > 0


def test_ensemble_of_identical_models_equals_one_model(tmp_path, dets, store):
    from dfflab.uq.config import UQConfig

    one = dets["a"]
    copies = [one, *(shutil.copy(one, tmp_path / f"copy{i}.pt") for i in range(2))]
    scorer = _scorer(store)
    models = Models(one, members=copies, clients=copies[:2])
    det = METHODS["plain"].fn(models, scorer, UQConfig()).outputs
    for name in ("ensemble", "client-ensemble"):
        ens = METHODS[name].fn(models, scorer, UQConfig()).outputs
        for split in ("val", "test"):
            torch.testing.assert_close(ens[split].probs, det[split].probs, rtol=0, atol=1e-7)
            assert float(ens[split].mutual_info.max()) < 1e-6
    assert METHODS["ensemble"].needs(Models(one)) is not None
    assert "clients" in METHODS["client-ensemble"].needs(Models(one))


# -- the command, end to end --------------------------------------------------------------------
def _run_cfg(tmp_path, synth_root, store, **extra):
    from dfflab.config import load_config

    return load_config("tiny", {"results": str(tmp_path / "results"), "data.root": str(synth_root),
                                "data.store": str(store.path), "data.image-size": store.image_size,
                                "model.width": 4, "train.device": "cpu", **extra})


def _run_folder(tmp_path, synth_root, store, name: str, detector, seed: int, train_sources: list[str]):
    from dfflab.runs import Run

    cfg = _run_cfg(tmp_path, synth_root, store, **{"train.train-sources": train_sources, "train.seed": seed})
    run = Run.create(cfg.results, "centralized", name, cfg.to_dict(), fingerprint=store.fingerprint)
    shutil.copy(detector, run.path("detector.pt"))
    return run


def test_uq_evaluate_cli_on_a_leave_one_out_run(tmp_path, synth_root, store, dets):
    from dfflab.cli import main
    from dfflab.detector.inference import (
        abstain_threshold,
        decision_threshold,
        detect_uncertainty,
        should_abstain,
    )
    from dfflab.models import load_detector

    seen = ["inpainting", "insight"]
    run = _run_folder(tmp_path, synth_root, store, "logo", dets["a"], 0, seen)
    other = _run_folder(tmp_path, synth_root, store, "logo-seed1", dets["b"], 1, seen)
    # stand-ins for a federated run's client models, named as dfflab.federated saves them
    shutil.copy(run.path("detector.pt"), run.path("detector_client0.pt"))
    shutil.copy(other.path("detector.pt"), run.path("detector_client1.pt"))
    rc = main(["uq", "evaluate", str(run.dir), "--preset", "tiny", "--set", "uq.mc-samples=3",
               "--set", "train.device=cpu", "--members", str(other.dir)])
    assert rc == 0
    uq = json.loads(run.path("uq.json").read_text())
    assert set(uq["methods"]) == {"plain", "temperature", "mc-dropout", "ensemble", "client-ensemble"}
    assert uq["skipped"] == {}
    for r in uq["methods"].values():
        assert 0 <= r["test"]["ece"] <= 1 and r["test"]["nll"] > 0 and 0 <= r["test"]["brier"] <= 1
        assert 0 <= r["test"]["selective"]["entropy"]["aurc"] <= 1
    plain, ts = uq["methods"]["plain"]["test"], uq["methods"]["temperature"]["test"]
    # temperature never changes the ranking, the decisions or which images are abstained first
    assert ts["auroc"] == pytest.approx(plain["auroc"], abs=1e-12)
    assert ts["balanced_accuracy"] == plain["balanced_accuracy"]
    assert ts["selective"]["entropy"]["aurc"] == pytest.approx(plain["selective"]["entropy"]["aurc"], abs=1e-12)
    assert "mutual_info" in uq["methods"]["mc-dropout"]["test"]["selective"]
    sep = uq["unseen_details"]["text2img"]["ensemble"]["separation_auroc"]
    assert set(sep) == {"entropy", "mutual_info"} and all(0 <= v <= 1 for v in sep.values())
    assert uq["unseen"]["text2img"]["ensemble/mutual_info"] == sep["mutual_info"]
    assert uq["methods"]["plain"]["aurc"] == plain["selective"]["entropy"]["aurc"]
    for png in ("reliability.png", "risk_coverage.png", "unseen.png"):
        assert run.path(png).stat().st_size > 1000
    # the fitted temperature and abstain thresholds are in detector.pt, where detect reads them
    model, ckpt = load_detector(run.path("detector.pt"))
    t = uq["methods"]["temperature"]["info"]["temperature"]
    assert ckpt["temperature"] == pytest.approx(t) and "mc-dropout" in ckpt["uq"]["abstain"]
    x = torch.from_numpy(np.array(store.images[:8])).permute(0, 3, 1, 2).float() / 255
    p, u = detect_uncertainty(model, ckpt, x)
    with torch.no_grad():
        torch.testing.assert_close(p, torch.sigmoid(model(x) / t))
    thr = abstain_threshold(ckpt, "temperature")
    assert thr == pytest.approx(uq["methods"]["temperature"]["abstain_threshold"]["entropy"])
    assert torch.equal(should_abstain(u, thr), u > thr)
    # calibrated threshold keeps the decisions of the raw threshold
    with torch.no_grad():
        raw = torch.sigmoid(model(x)) > ckpt["threshold"]
    assert torch.equal(p > decision_threshold(ckpt, "temperature"), raw)
    p_mc, mi = detect_uncertainty(model, ckpt, x, "mc-dropout", passes=3, score="mutual-info")
    assert p_mc.shape == mi.shape == (8,) and float(mi.min()) >= 0


def test_uq_evaluate_fails_clearly(tmp_path, synth_root, store, dets, capsys):
    from dfflab.cli import main
    from dfflab.runs import Run

    cfg = _run_cfg(tmp_path, synth_root, store)
    empty = Run.create(cfg.results, "centralized", "unfinished", cfg.to_dict())
    assert main(["uq", "evaluate", str(empty.dir), "--preset", "tiny"]) == 1
    assert "no detector.pt" in capsys.readouterr().err
    assert main(["uq", "evaluate", str(empty.dir), "--preset", "tiny", "--set", "uq.methods=plain,nope"]) == 2
    # a run holding only client models (federated local-only) is evaluated on client 0
    shutil.copy(dets["a"], empty.path("detector_client0.pt"))
    shutil.copy(dets["b"], empty.path("detector_client1.pt"))
    assert main(["uq", "evaluate", str(empty.dir), "--preset", "tiny", "--set", "uq.methods=plain,client-ensemble"]) == 0
    uq = json.loads(empty.path("uq.json").read_text())
    assert uq["detector"].endswith("detector_client0.pt") and len(uq["clients"]) == 2


def test_uq_ensemble_trains_seeded_members_and_evaluates(tmp_path, synth_root, store):
    from dfflab.runs import Run
    from dfflab.uq.ensemble import train_ensemble
    from dfflab.uq.evaluate import evaluate_run

    cfg = _run_cfg(tmp_path, synth_root, store, **{"train.epochs": 1, "uq.mc-samples": 2})
    cfg.train.audit = False
    run = train_ensemble(cfg, 2, store=store, progress=False)
    s = run.summary()
    assert s["m"] == 2 and s["seeds"] == [0, 1] and len(s["members"]) == 2
    members = [Run.open(run.dir.parent / m) for m in s["members"]]
    assert [m.config["train"]["seed"] for m in members] == [0, 1]
    assert all(m.record["parent"] == run.name for m in members)
    uq = evaluate_run(run.dir, cfg, ["plain", "ensemble"], store=store, progress=False)
    assert len(uq["members"]) == 2 and "ensemble" in uq["methods"]
    assert run.path("uq.json").is_file()


def test_detect_adds_uncertainty_and_abstains(tmp_path, synth_root, store, dets):
    from dfflab.cli import main
    from dfflab.config import ModelConfig
    from dfflab.models import load_detector, save_detector

    # the briefly trained detector gives these images nearly one logit; a head rescaled to
    # spread them (mean 0, sd 2) spreads the uncertainties over 0..1 bits so abstaining splits them
    model, info = load_detector(dets["a"])
    with torch.no_grad():
        x, _, _ = store.batch(np.flatnonzero(store.sources == "text2img"))
        z = model.head(model.backbone(x.float() / 255)).squeeze(1) - model.head.bias
        scale = 2.0 / float(z.std())
        model.head.weight.mul_(scale)
        model.head.bias.fill_(-float(z.mean()) * scale)
    ckpt = save_detector(tmp_path / "sharp.pt", model, ModelConfig(**info["model_cfg"]), info["image_size"])
    folder, out = str(synth_root / "text2img"), tmp_path / "d.csv"

    def rows(*extra):
        assert main(["detect", folder, "--checkpoint", str(ckpt), "--device", "cpu", "--out", str(out), *extra]) == 0
        with open(out, newline="") as f:
            return list(csv.DictReader(f))

    plain = rows()
    assert all(r["uncertainty"] == "" and r["decision"] in ("fake", "real") for r in plain)
    scored = rows("--uq", "temperature")
    u = np.array([float(r["uncertainty"]) for r in scored])
    assert ((0 <= u) & (u <= 1)).all() and [r["decision"] for r in scored] == [r["decision"] for r in plain]
    # a cut between two printed uncertainties that lie well apart (the CSV rounds to 1e-6)
    v = np.unique(u)
    k = next(i for i in range(len(v) // 2, len(v) - 1) if v[i + 1] - v[i] > 1e-4)
    cut = float(v[k] + v[k + 1]) / 2
    for r, ui in zip(rows("--abstain", "--abstain-entropy", str(cut)), u, strict=True):
        assert (r["decision"] == "uncertain") == (ui > cut)
    mc = rows("--uq", "mc-dropout")
    assert all(r["uncertainty"] != "" for r in mc)


def test_uq_evaluate_on_a_crossgen_run_evaluates_its_leave_one_out_children(tmp_path, synth_root, store, dets):
    from dfflab.runs import Run
    from dfflab.uq.evaluate import evaluate_run

    child = _run_folder(tmp_path, synth_root, store, "crossgen-logo-insight", dets["a"], 0, ["inpainting", "text2img"])
    cfg = _run_cfg(tmp_path, synth_root, store)
    parent = Run.create(cfg.results, "crossgen", "crossgen", cfg.to_dict())
    parent.log_metrics({"job": "logo-insight", "kind": "logo", "child_run": child.name})
    out = evaluate_run(parent.dir, cfg, ["plain", "temperature"], store=store, progress=False)
    assert set(out["children"]) == {child.name}
    assert set(out["children"][child.name]["unseen"]) == {"insight"}
    assert child.path("uq.json").is_file() and parent.path("uq.json").is_file()
