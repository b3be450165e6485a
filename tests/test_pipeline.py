"""The pipeline on tiny SynthDFF: every stage's outputs, the report, skipping finished
stages, failure reporting.

One epoch/round per stage keeps it to seconds per stage; the federated stage is the slow
one (nine Flower runs, each starting its own SuperLink).
"""

import json

import pytest

from dfflab import pipeline
from dfflab.config import load_config
from dfflab.runs import Run

pytestmark = pytest.mark.slow  # minutes: left out of `pytest -m "not slow"`


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = load_config("tiny", [f"results={tmp / 'results'}", f"data.root={tmp / 'synthdff-tiny'}",
                               "data.n-real=16", "train.epochs=1", "ssl.epochs=1", "fl.rounds=1",
                               "gan.epochs=1", "uq.mc-samples=3", "ssl.label-fractions=0.5,1",
                               "ssl.batch-size=8", "pipeline.dp-noises=0.5", "pipeline.fl-ssl=byol"])
    only = list(pipeline.STAGE_FUNCS)
    assert pipeline.Pipeline(cfg, [], only, progress=False).run() == 0
    return cfg, tmp / "results", only


def _runs(state: dict, results, stage: str) -> dict:
    """{key: run folder} that ``stage`` recorded in state.json."""
    return {k: results / "runs" / v.split("/runs/")[1] for k, v in state["stages"][stage]["runs"].items()}


def test_every_stage_leaves_its_outputs_and_the_report(finished):
    cfg, results, only = finished
    state = json.loads((results / "pipeline" / "state.json").read_text())
    assert [s for s in state["stages"]] == only
    assert all(v["status"] == "done" and v["peak_rss_mb"] > 0 for v in state["stages"].values())
    for stage in only:
        assert (results / "pipeline" / "logs" / f"{stage}.log").is_file(), stage
    ssl = _runs(state, results, "ssl")
    assert set(ssl) == {"simclr", "byol"} and all((d / "backbone.pt").is_file() for d in ssl.values())
    central = _runs(state, results, "centralized")
    assert set(central) == {"scratch", "simclr-init", "byol-init"}
    for f in ("detector.pt", "metrics.csv", "summary.json", "robustness.json", "uq.json"):
        assert (central["scratch"] / f).is_file(), f
    assert json.loads((central["simclr-init"] / "config.json").read_text())["config"]["train"]["init"] == str(ssl["simclr"])
    (crossgen,) = _runs(state, results, "crossgen").values()
    assert set(json.loads((crossgen / "summary.json").read_text())["logo"]) == {"inpainting", "insight", "text2img"}
    (le,) = _runs(state, results, "label-efficiency").values()
    assert (le / "label_efficiency.md").is_file() and (le / "label_efficiency.png").is_file()
    cells = {r["cell"]: r["run"] for r in Run.open(le).metrics()}
    # the 100% cells are the centralized stage's detectors (same config and data), not retrained
    assert {cells[f"{k}-f1-s0"] for k in ("scratch", "simclr", "byol")} == {d.name for d in central.values()}
    assert cells["scratch-f0.5-s0"] not in {d.name for d in central.values()}
    fed = _runs(state, results, "federated")
    assert set(fed) == {"fedavg-source", "fedprox-source", "fedbn-source", "fedavg-iid", "local-only", "ssl-byol",
                        "fedavg-source-fedbyol-init", "fedavg-source-byol-init", "dp-fedavg-source-z0.5"}
    assert all(json.loads((d / "summary.json").read_text()) for d in fed.values())
    # the fully federated path: federated SSL, then federated fine-tuning from its backbone
    init = json.loads((fed["fedavg-source-fedbyol-init"] / "config.json").read_text())["config"]["train"]["init"]
    assert init == str(fed["ssl-byol"]) and (fed["ssl-byol"] / "backbone.pt").is_file()
    dp = json.loads((fed["dp-fedavg-source-z0.5"] / "summary.json").read_text())
    assert dp["dp"]["noise_multiplier"] == 0.5 and dp["epsilon"] > 0
    gen = _runs(state, results, "generative")
    chain = json.loads((gen["evolution"] / "summary.json").read_text())["chain"]
    assert [r["step"] for r in chain] == ["baseline", "diffaug", "lr-g", "longer", "ema"]
    ev = json.loads((gen["detector-eval"] / "summary.json").read_text())
    assert 0 <= ev["fooling"]["per_class"]["overall"]["fooling_rate"] <= 1
    matched = results / "runs" / ev["fooling_matched"]["detector_run"]  # trained for the fooling rate
    assert json.loads((matched / "config.json").read_text())["parent"] == gen["detector-eval"].name
    report = (results / "REPORT.md").read_text()
    for heading in ("## 1. Models and training strategy", "## 2. Experimental setup", "### 2.1 Data and splits",
                    "## 3. Results", "### 3.2 Centralized vs federated", "### 3.4 Per-source",
                    "### 3.5 Robustness and shortcut audit", "### 3.6 Self-supervised", "### 3.7 Uncertainty",
                    "### 3.8 Conditional GAN", "#### Against the detector", "### 3.9 How the models evolved",
                    "## 4. Discussion and conclusions", "## 5. Pipeline timings"):
        assert heading in report, heading
    assert "SynthDFF numbers, not DFF numbers" in report
    assert "Against a detector trained on images resampled through" in report
    knn = json.loads((ssl["simclr"] / "summary.json").read_text())["knn"]["knn_real_fake_acc_test"]
    assert "| simclr | shift | 1 | " in report and f"| {knn:.3f} |" in report  # the SSL table is filled
    for png in ("central_vs_federated.png", "robustness.png", "label_efficiency.png", "evolution.png",
                "gan_samples.png"):
        assert (results / "plots" / png).is_file(), png


def test_report_rebuilds_from_the_run_folders_and_its_discussion_cites_them(finished):
    import re

    from conftest import cited, discussion_sentences, run_folder_numbers

    from dfflab.cli import main

    cfg, results, only = finished
    (results / "REPORT.md").unlink()
    assert main(["report", "--results", str(results)]) == 0
    report = (results / "REPORT.md").read_text()
    nums = run_folder_numbers(results)
    sentences = discussion_sentences(report)
    assert len(sentences) >= 10
    for s in sentences:
        tokens = re.findall(r"[-+]?\d+\.\d+", s)
        assert tokens and all(cited(t, nums) for t in tokens), s


def test_finished_stages_are_skipped_and_failures_reported(finished, monkeypatch, capsys):
    cfg, results, only = finished

    def boom(p):
        raise RuntimeError("stage exploded")

    monkeypatch.setitem(pipeline.STAGE_FUNCS, "report", boom)
    assert pipeline.Pipeline(cfg, [], only, progress=False).run() == 0  # everything done: nothing runs
    assert "done earlier" in capsys.readouterr().out
    assert pipeline.Pipeline(cfg, ["report"], only, progress=False).run() == 1
    err = capsys.readouterr().err
    log = results / "pipeline" / "logs" / "report.log"
    assert "stage 'report' failed" in err and str(log) in err
    assert "stage exploded" in log.read_text()
    state = json.loads((results / "pipeline" / "state.json").read_text())
    assert state["stages"]["report"]["status"] == "failed" and state["stages"]["data"]["status"] == "done"
    with pytest.raises(SystemExit, match="unknown stage"):
        pipeline.Pipeline(cfg, ["nope"], only)
