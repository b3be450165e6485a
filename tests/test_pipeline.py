"""The pipeline on tiny SynthDFF: stage outputs, skipping finished stages, failure reporting.

The federated, SSL and GAN stages have their own end-to-end tests (they are the slow
ones: Flower starts a SuperLink per run); here the pipeline runs the stages that tie the
others together and the report, and checks its sections.
"""

import json

import pytest

from dfflab import pipeline
from dfflab.config import load_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    cfg = load_config("tiny", [f"results={tmp / 'results'}", f"data.root={tmp / 'synthdff-tiny'}",
                               "data.n-real=16", "train.epochs=1", "uq.mc-samples=3"])
    only = ["data", "centralized", "uq", "report"]
    assert pipeline.Pipeline(cfg, [], only, progress=False).run() == 0
    return cfg, tmp / "results", only


def test_stages_leave_their_outputs_and_the_report(finished):
    cfg, results, only = finished
    state = json.loads((results / "pipeline" / "state.json").read_text())
    assert [s for s in state["stages"]] == only
    assert all(v["status"] == "done" and v["peak_rss_mb"] > 0 for v in state["stages"].values())
    scratch = results / "runs" / state["stages"]["centralized"]["runs"]["scratch"].split("/runs/")[1]
    for f in ("detector.pt", "metrics.csv", "summary.json", "robustness.json", "uq.json"):
        assert (scratch / f).is_file(), f
    assert (results / "pipeline" / "logs" / "centralized.log").read_text()
    report = (results / "REPORT.md").read_text()
    for heading in ("## 1. Dataset and splits", "## 2. Setup", "## 3. Centralized vs federated",
                    "## 4. Per-source", "## 5. Robustness and shortcut audit", "## 7. Uncertainty",
                    "## 9. How the models evolved", "## 10. Pipeline timings"):
        assert heading in report
    assert "SynthDFF numbers, not DFF numbers" in report
    assert (results / "plots" / "central_vs_federated.png").is_file()
    assert (results / "plots" / "robustness.png").is_file()


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
