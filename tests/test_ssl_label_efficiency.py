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
    from dfflab.ssl.label_efficiency import _ssl_inits
    from dfflab.ssl.pretrain import pretrain

    sets = [f"results={tmp_path}", f"data.root={synth_root}", f"data.store={store.path}",
            "train.threads=1", "train.epochs=1", "ssl.epochs=1", "ssl.label-fractions=0.5,1"]
    cfg = load_config("tiny", sets)
    simclr = pretrain(cfg, store=store, progress=False)
    assert _ssl_inits(cfg, [str(simclr.dir)], None, store, False) == {"simclr": str(simclr.dir)}

    # no --ssl-runs: the simclr run above is found (same data/model/ssl settings), byol is
    # pretrained first as part of the experiment
    assert main(["ssl", "label-efficiency", "--preset", "tiny",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    (sweep,) = list_runs(tmp_path, "label-efficiency")
    inits = sweep.record["inits"]
    assert inits["simclr"] == str(simclr.dir) and inits["scratch"] == "scratch"
    byol = [r for r in list_runs(tmp_path, "ssl") if r.summary().get("method") == "byol"]
    assert len(byol) == 1 and inits["byol"] == str(byol[0].dir) and byol[0].record["parent"] == sweep.name

    cells = json.loads(sweep.path("label_efficiency.json").read_text())
    assert {(c["init"], c["fraction"]) for c in cells} == {(i, f) for i in ("scratch", "simclr", "byol")
                                                           for f in (0.5, 1.0)}
    children = {r.name: r for r in list_runs(tmp_path, "centralized")}
    for c in cells:
        (child_name,) = c["runs"]
        child = children[child_name]
        assert child.record["parent"] == sweep.name
        assert child.config["train"]["label_frac"] == c["fraction"]
        assert child.config["train"]["init"] == inits[c["init"]]
        assert c["test_auroc"] == pytest.approx(child.summary()["test"]["auroc"])
    # fewer labels, fewer training images
    sizes = {c["fraction"]: children[c["runs"][0]].summary()["sizes"]["train"] for c in cells}
    assert sizes[0.5] < sizes[1.0]
    table = sweep.path("label_efficiency.md").read_text()
    assert all(f"| {i} |" in table for i in inits) and "50% labels" in table
    assert sweep.path("label_efficiency.png").stat().st_size > 1000
    assert sweep.finished
    # matched steps: half the labels, twice the epochs, the same optimizer steps
    runs = {c["fraction"]: children[c["runs"][0]] for c in cells if c["init"] == "scratch"}
    assert runs[0.5].config["train"]["epochs"] == 2 * runs[1.0].config["train"]["epochs"]
    steps = {f: r.summary()["steps"] for f, r in runs.items()}
    assert abs(steps[0.5] - steps[1.0]) <= runs[1.0].summary()["steps_per_epoch"]
    # every SSL init is compared with scratch at each fraction, with a paired interval and its verdict
    comps = sweep.summary()["comparisons"]
    assert {(c["init"], c["fraction"]) for c in comps} == {(i, f) for i in ("simclr", "byol") for f in (0.5, 1.0)}
    for c in comps:
        assert c["ci"][0] <= c["ci"][1]
        assert c["verdict"] == ("better" if c["ci"][0] > 0 else "worse" if c["ci"][1] < 0
                                else "no significant difference")
    assert "verdict" in table and all(c["test_auroc_ci"] for c in cells)


@pytest.mark.parametrize("fractions", [["0.1", "x"], ["0"], ["1.5"], []])
def test_bad_label_fractions_fail_naming_the_setting(fractions):
    from dfflab.config import ConfigError
    from dfflab.ssl.label_efficiency import _fractions

    with pytest.raises(ConfigError, match="ssl.label-fractions"):
        _fractions(fractions)
