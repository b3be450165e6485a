"""The report as a write-up, built from a synthetic set of run folders written with the real
writers (Run.create, Scores.save, write_summary): every section exists, every table number
carries its interval, comparison words follow the paired intervals, and every discussion
sentence cites a number present in the run folders."""

import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import cited, discussion_sentences, run_folder_numbers

from dfflab.config import derive, load_config
from dfflab.detector.scoring import Scores, load_scored
from dfflab.evidence import paired_difference
from dfflab.evolution import judge, step_record
from dfflab.files import write_json
from dfflab.metrics import binary_metrics, per_source_metrics
from dfflab.report.build import build_report
from dfflab.report.context import PAIRED_SEED, resamples
from dfflab.runs import Run
from dfflab.train.core import Predictions

NAMES = ["wiki", "inpainting", "insight", "text2img"]
N = 400
BOOT = 200


def _scores(quality: float, noise: int) -> Scores:
    """400 test rows (1 real : 3 fakes, one generator per fake) whose p(fake) separates by ``quality``."""
    rng = np.random.default_rng(noise)
    ids = np.arange(N) % 4  # 0 = real, 1..3 = the generators
    y = (ids != 0).astype(int)
    p = torch.tensor(np.clip(rng.normal(0.45 + quality * y, 0.15), 1e-4, 1 - 1e-4)).float()
    labels, src = torch.tensor(y), torch.tensor(ids)
    return Scores(binary_metrics(p, labels, 0.5), per_source_metrics(p, labels, src, NAMES, 0.5),
                  Predictions(torch.logit(p.double()), labels, src), 0.5, rows=np.arange(N),
                  source_names=NAMES).add_intervals(BOOT)


def _detector(results, cfg, stage, name, quality, noise, *, summary=None, extra=None, parent=None,
              rows=None) -> Run:
    run = Run.create(results, stage, name, cfg.to_dict(), fingerprint="fp-synth", extra=extra, parent=parent,
                     note=f"{name}: synthetic")
    s = _scores(quality, noise)
    s.save(run.path("test_scores.npz"))
    for row in rows or [{"epoch": e, "samples": 300 * e, "steps": 10 * e, "test_auroc": 0.5 + 0.05 * e}
                        for e in range(1, 7)]:
        run.log_metrics(row)
    run.write_summary({"test": s.overall, "test_per_source": s.per_source, "threshold": 0.5, "best_epoch": 5,
                       "epochs_run": 6, "stopped": "max epochs", "steps": 60, "steps_per_epoch": 10, "samples": 1800,
                       "seconds": 12.5, "init": cfg.train.init, "model": asdict(cfg.model),
                       "sizes": {"train": 300, "val": 100, "test": N}, **(summary or {})})
    return run


def _fed_rows():
    return [{"round": r, "samples": 300 * r, "steps": 4 * r, "epochs_per_client": r, "test_auroc": 0.5 + 0.03 * r}
            for r in range(0, 7)]


def _fed_summary(cfg, strategy, partitioning, s2=None):
    out = {"strategy": strategy, "partitioning": partitioning, "num_partitions": 3, "rounds": 6, "rounds_run": 6,
           "local_epochs": 1, "partition": [{"partition": p, "images": 100} for p in range(3)]}
    out.pop("steps", None)
    if s2 is not None:
        out["test_bn_reestimated"] = {"test": s2.overall, "images": 100, "threshold": 0.5}
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    res = tmp_path_factory.mktemp("report") / "results"
    cfg = load_config("tiny", [f"results={res}", f"data.root={res.parent / 'synthdff-tiny'}",
                               f"train.bootstrap={BOOT}"])
    ssl = Run.create(res, "ssl", "simclr", derive(cfg, {"ssl.method": "simclr"}).to_dict(), fingerprint="fp-synth")
    ssl.log_metrics({"epoch": 0, "knn_real_fake_acc": 0.55})
    ssl.write_summary({"method": "simclr", "views": "shift", "reals_only": False, "epochs": 2, "images": 300,
                       "seconds": 3.2, "knn": {"knn_real_fake_acc_test": 0.61}, "random_init": {"knn_real_fake_acc": 0.55},
                       "linear": {"linear_real_fake_acc_test": 0.63}})
    base = _detector(res, cfg, "centralized", "scratch", 0.25, 0)
    _detector(res, derive(cfg, {"train.seed": 1}), "centralized", "scratch", 0.25, 1)  # a seed replicate
    better = _detector(res, derive(cfg, {"train.init": str(ssl.dir)}), "centralized", "simclr-init", 0.6, 2,
                       parent=base.name)
    _detector(res, cfg, "centralized", "same-scores", 0.25, 0, parent=base.name)  # identical scores: no difference
    write_json(base.path("robustness.json"), {
        "n_test": N, "clean": {"auroc": base.summary()["test"]["auroc"]},
        "distortions": [{"name": "jpeg", "param": "quality", "strength": 50, "label": "jpeg quality=50",
                         "auroc": 0.612, "auroc_drop": base.summary()["test"]["auroc"] - 0.612}]})
    write_json(base.path("uq.json"), {"sizes": {"test": N}, "methods": {
        "plain": {"ece": 0.121, "nll": 0.55, "brier": 0.2, "aurc": 0.1, "auroc": 0.8},
        "temperature": {"ece": 0.043, "nll": 0.5, "brier": 0.19, "aurc": 0.1, "auroc": 0.8}}})
    fed = derive(cfg, {"fl.strategy": "fedavg", "fl.partitioning": "source"})
    _detector(res, fed, "federated", "fedavg-source", 0.0, 3, rows=_fed_rows(),  # chance: worse than centralized
              summary=_fed_summary(fed, "fedavg", "source", _scores(0.05, 4)))
    fbn = derive(cfg, {"fl.strategy": "fedbn", "fl.partitioning": "source"})
    c0, c1 = _scores(0.2, 5), _scores(0.1, 6)
    per_client = {"clients": {"0": {"test": c0.overall, "own_source": {"source": "inpainting",
                                                                       **c0.per_source["inpainting"]}},
                              "1": {"test": c1.overall}},
                  "mean": {"auroc": (c0.overall["auroc"] + c1.overall["auroc"]) / 2},
                  "worst": {"client": 1, "auroc": c1.overall["auroc"]}}
    _detector(res, fbn, "federated", "fedbn-source", 0.1, 7, rows=_fed_rows(),
              summary={**_fed_summary(fbn, "fedbn", "source"), "per_client": per_client})
    iid = derive(cfg, {"fl.partitioning": "iid"})
    step0 = _detector(res, iid, "federated", "fl-iid-base", 0.1, 8, rows=_fed_rows(),
                      summary=_fed_summary(iid, "fedavg", "iid"),
                      extra=step_record("fl-recipe", 0, "FedAvg on IID clients", "the counterpart", None))
    step1 = _detector(res, iid, "federated", "fl-iid-local-batch", 0.4, 9, rows=_fed_rows(),
                      summary=_fed_summary(iid, "fedavg", "iid"),
                      extra=step_record("fl-recipe", 1, "local batch = 16", "short of steps", step0.name))
    judge(step0, None)
    judge(step1, step0, n_resamples=BOOT)
    comp = paired_difference(load_scored(better.path("test_scores.npz")), load_scored(base.path("test_scores.npz")),
                             "auroc", BOOT)
    le = Run.create(res, "label-efficiency", "label-efficiency", cfg.to_dict(), fingerprint="fp-synth")
    le.write_summary({"cells": [{"init": i, "fraction": 1.0, "n_seeds": 1, "test_auroc": r.summary()["test"]["auroc"],
                                 "test_auroc_std": 0.0, "test_auroc_ci": r.summary()["test"]["auroc_ci"],
                                 "steps": 60, "runs": [r.name]} for i, r in (("scratch", base), ("simclr", better))],
                      "comparisons": [{"fraction": 1.0, "init": "simclr", "vs": "scratch", **comp}]})
    old = Run.create(res, "generative", "evolve-baseline", derive(cfg, {"gan.cond-bn": False}).to_dict(),
                     fingerprint="fp-synth", note="plain conditional GAN")
    old.write_summary({"fid_inception_overall": 181.25, "kid_inception_overall": 0.1523, "generated_per_class": 3,
                       "scores": {"inception": {"real": {}, "overall": {}}}, "fid_inception_real": 190.5,
                       "kid_inception_real": 0.16, "train_seconds": 4.0})
    new = Run.create(res, "generative", "evolve-diffaug-ema", cfg.to_dict(), fingerprint="fp-synth", parent=old.name,
                     extra={"evolution": {"chain": "gan-recipe", "step": 1, "change": "DiffAugment + EMA",
                                          "reason": "D overfits", "parent": old.name, "accepted": True,
                                          "comparison": {"metric": "fid", "diff": -31.5, "ci": [-40.25, -22.75],
                                                         "verdict": "better", "vs": old.name}}})
    new.write_summary({"fid": 149.75, "fid_ci": [140.5, 160.25], "kid": 0.1125, "kid_ci": [0.1, 0.125],
                       "fid_floor": 60.5, "n_eval": 3, "g_steps": 40,
                       "per_class": {"real": {"fid": 120.5, "fid_ci": [110.5, 130.5], "fid_floor": 55.5},
                                     "insight": {"fid": 170.5, "fid_ci": [160.5, 180.5]}}})
    path = build_report(res)
    return res, path.read_text(), cfg


SECTIONS = ["## 1. Models and training strategy", "### 1.1 Detector", "### 1.2 Self-supervised pretraining",
            "### 1.3 Federated setup", "### 1.4 Conditional GAN", "## 2. Experimental setup",
            "### 2.1 Data and splits", "### 2.2 Metrics", "### 2.3 Seeds, intervals and budget", "## 3. Results",
            "### 3.1 Centralized detectors", "### 3.2 Centralized vs federated", "### 3.3 Federated recipe search",
            "### 3.4 Per-source", "### 3.5 Robustness", "### 3.6 Self-supervised", "### 3.7 Uncertainty",
            "### 3.8 Conditional GAN", "### 3.9 How the models evolved", "## 4. Discussion and conclusions",
            "#### 4.1 What the measurements show", "#### 4.2 What the budget cannot support",
            "#### 4.3 Where the detector fails", "#### 4.4 What the GAN does and does not achieve",
            "#### 4.5 Limitations", "#### 4.6 Conclusions"]


def test_every_section_exists_in_order_and_describes_the_models_from_the_runs(results):
    res, text, cfg = results
    at = [text.find(s) for s in SECTIONS]
    assert all(i >= 0 for i in at), [s for s, i in zip(SECTIONS, at, strict=True) if i < 0]
    assert at == sorted(at)
    from dfflab.models import build_detector

    params = sum(p.numel() for p in build_detector(cfg.model).parameters())
    assert f"{params:,} parameters" in text  # counted on the model object the run's settings build
    assert "stages.3" in text and "AdamW" in text and "chosen on validation only" in text
    assert "simclr with `shift` views" in text  # simclr-init's backbone traced back to its SSL run
    assert "keeps its own" in text and "BatchNorm layers" in text  # FedBN: what stays on the client
    assert "(SynthDFF" in text and "SynthDFF numbers, not DFF numbers" in text


def _verdict(lo: float, hi: float) -> str:
    return "better" if lo > 0 else "worse" if hi < 0 else "no significant difference"


def test_comparison_words_follow_the_paired_intervals(results):
    res, text, _ = results
    first = {}
    for d in sorted((res / "runs").iterdir()):  # oldest first: a name's first run is its seed 0
        first.setdefault(Run.open(d).record["name"], Run.open(d))

    def comp(a, b):
        ra, rb = first[a], first[b]
        return paired_difference(load_scored(ra.path("test_scores.npz")), load_scored(rb.path("test_scores.npz")),
                                 "auroc", BOOT, PAIRED_SEED)

    seen = set()
    for name in ("simclr-init", "same-scores", "fedavg-source", "fedbn-source"):
        c = comp(name, "scratch")
        word = _verdict(*c["ci"])
        seen.add(word)
        assert c["verdict"] == word
        cell = f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]: {word}"
        assert cell in text, (name, cell)  # the table of 3.1 / 3.2
        sentence = [s for s in discussion_sentences(text) if f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}" in s
                    and "reaches test AUROC" in s]
        assert len(sentence) == 1 and f": {word}." in sentence[0], (name, sentence)
    assert seen == {"better", "worse", "no significant difference"}
    conclusions = text.split("#### 4.6 Conclusions", 1)[1]
    assert "`simclr-init` is better than `scratch`" in conclusions
    assert "`fedavg-source` is worse than `scratch`" in conclusions
    assert "`same-scores` is" not in conclusions  # no significant difference: no conclusion drawn


def test_every_number_in_the_tables_carries_its_interval(results):
    res, text, _ = results
    base = [Run.open(d) for d in sorted((res / "runs").iterdir()) if d.name.endswith("centralized-scratch")][0]
    t = base.summary()["test"]
    for key in ("auroc", "ap", "balanced_accuracy", "eer"):
        assert f"{t[key]:.3f} [{t[key + '_ci'][0]:.3f}, {t[key + '_ci'][1]:.3f}]" in text, key
    row = next(ln for ln in text.splitlines() if ln.startswith("| scratch | 0."))
    assert "2 seeds" in row  # the seed replicate is gathered (find_seeds), not dropped
    assert f"[{base.name}](runs/{base.name})" in row  # linked to its run folder
    assert "149.8 [140.5, 160.2]" in text and "181.2" in text  # GAN: new keys with intervals, and old flat keys
    fl = text.split("### 3.3 Federated recipe search", 1)[1].split("### 3.4", 1)[0]
    assert "Chain `fl-recipe`: 2 step(s)" in fl and "| 1 | " in fl


def test_every_discussion_sentence_cites_a_number_from_the_run_folders(results):
    res, text, _ = results
    nums = run_folder_numbers(res)
    sentences = discussion_sentences(text)
    assert len(sentences) >= 12
    for s in sentences:
        tokens = re.findall(r"[-+]?\d+\.\d+", s)
        assert tokens, f"no number in: {s}"
        missing = [t for t in tokens if not cited(t, nums)]
        assert not missing, f"{missing} not in the run folders: {s}"


def test_a_rebuild_from_the_folders_alone_gives_the_same_report(results, tmp_path):
    import shutil

    from dfflab.cli import main

    res, text, _ = results
    copy = tmp_path / "copy"
    shutil.copytree(res / "runs", copy / "runs")  # run folders only: no plots, no store, no pipeline state
    assert main(["report", "--results", str(copy)]) == 0
    again = (copy / "REPORT.md").read_text()
    strip = lambda t: re.sub(r"Built .*? from", "", t).replace(str(copy), str(res))  # noqa: E731
    assert strip(again) == strip(text)
    assert (copy / "plots" / "central_vs_federated.png").is_file()


def test_an_empty_or_partial_results_folder_still_builds(tmp_path):
    assert "No centralized detector run yet." in build_report(tmp_path).read_text()
    cfg = load_config("tiny", [f"results={tmp_path}"])
    run = Run.create(tmp_path, "generative", "evolve-x", cfg.to_dict())
    run.write_summary({"note": "a GAN run without any FID key"})
    run2 = Run.create(tmp_path, "centralized", "scratch", cfg.to_dict())
    run2.write_summary({"test": {"auroc": 0.7}})  # an old run: no intervals, no test_scores.npz, no sizes
    text = build_report(tmp_path).read_text()
    assert "0.700" in text and "## 4. Discussion and conclusions" in text
    assert resamples([]) == 1000
