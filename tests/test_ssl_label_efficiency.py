"""The label-efficiency experiment end to end on the tiny store (real fine-tuning runs)."""

import json

import pytest
import torch

from dfflab.runs import list_runs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_label_efficiency_cli_tabulates_and_plots_ssl_vs_scratch(tmp_path, store, synth_root):
    from dfflab.cli import main
    from dfflab.config import load_config
    from dfflab.ssl.pretrain import pretrain

    common = ["--preset", "tiny", "--set", f"results={tmp_path}", "--set", f"data.root={synth_root}",
              "--set", f"data.store={store.path}", "--set", "train.threads=1", "--set", "train.epochs=1"]
    cfg = load_config("tiny", [f"results={tmp_path}", f"data.store={store.path}", "train.threads=1",
                               "ssl.epochs=1"])
    ssl_run = pretrain(cfg, store=store, progress=False)
    assert main(["ssl", "label-efficiency", "--ssl-runs", str(ssl_run.dir),
                 "--set", "ssl.label-fractions=0.5,1", *common]) == 0

    (sweep,) = list_runs(tmp_path, "label-efficiency")
    cells = json.loads(sweep.path("label_efficiency.json").read_text())
    assert {(c["init"], c["fraction"]) for c in cells} == {(i, f) for i in ("scratch", "simclr")
                                                           for f in (0.5, 1.0)}
    children = {r.name: r for r in list_runs(tmp_path, "centralized")}
    for c in cells:
        (child_name,) = c["runs"]
        child = children[child_name]
        assert child.record["parent"] == sweep.name
        assert child.config["train"]["label_frac"] == c["fraction"]
        expected_init = "scratch" if c["init"] == "scratch" else str(ssl_run.dir)
        assert child.config["train"]["init"] == expected_init
        assert c["test_auroc"] == pytest.approx(child.summary()["test"]["auroc"])
    # fewer labels, fewer training images
    sizes = {c["fraction"]: children[c["runs"][0]].summary()["sizes"]["train"] for c in cells}
    assert sizes[0.5] < sizes[1.0]
    table = sweep.path("label_efficiency.md").read_text()
    assert "| scratch |" in table and "| simclr |" in table and "50% labels" in table
    assert sweep.path("label_efficiency.png").stat().st_size > 1000
    assert sweep.finished
