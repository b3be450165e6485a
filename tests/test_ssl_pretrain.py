"""SSL pretraining end to end on the tiny store: run folder, resume, checkpoint, CLI."""

import pytest
import torch

from dfflab.config import load_config
from dfflab.models import build_detector, init_backbone
from dfflab.runs import Run, list_runs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path, store, *extra):
    return load_config("tiny", [f"results={tmp_path}", f"data.store={store.path}",
                                "ssl.epochs=2", "train.threads=1", *extra])


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_pretrain_writes_a_run_whose_backbone_loads_into_the_detector(tmp_path, store, method):
    from dfflab.ssl.pretrain import pretrain

    cfg = _cfg(tmp_path, store, f"ssl.method={method}")
    run = pretrain(cfg, store=store, progress=False)
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # epoch 0 = random-init baseline
    assert rows[0]["ssl_loss"] is None and all(r["ssl_loss"] is not None for r in rows[1:])
    # the linear probe runs on the random init (epoch 0) and after the last epoch
    assert [r["linear_real_fake_bacc"] is not None for r in rows] == [True, False, True]
    for r in rows:
        assert 0 <= r["knn_real_fake_acc"] <= 1 and 0 <= r["knn_source_acc"] <= 1
    s = run.summary()
    assert s["method"] == method and s["views"] == "shift" and s["epochs"] == 2
    assert 0 <= s["random_init"]["linear_source_acc"] <= 1
    for key in ("linear_real_fake_acc_val", "linear_source_acc_test", "linear_real_fake_bacc_val"):
        assert 0 <= s["linear"][key] <= 1
    assert run.record["stage"] == "ssl" and run.record["name"] == method

    det = build_detector(cfg.model)
    assert init_backbone(det, str(run.dir), cfg.model) == str(run.path("backbone.pt"))
    saved = run.load("backbone.pt")
    assert saved["method"] == method and saved["image_size"] == store.image_size
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, saved["backbone"][k])
    # the pretrained weights differ from a fresh init: something was learnt and saved
    fresh = build_detector(cfg.model).backbone.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in det.backbone.state_dict().items()
               if v.dtype.is_floating_point)


def test_pretrain_resumes_after_a_crash(tmp_path, store, monkeypatch):
    import dfflab.ssl.pretrain as pt

    cfg = _cfg(tmp_path, store, "ssl.epochs=3", "ssl.reals-only=true")
    real_epoch, calls = pt.ssl_epoch, []

    def crashing(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash in epoch 2")
        return real_epoch(*a, **kw)

    monkeypatch.setattr(pt, "ssl_epoch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pt.pretrain(cfg, store=store, progress=False)
    (crashed,) = list_runs(tmp_path, "ssl")
    assert crashed.name.endswith("ssl-simclr-reals") and not crashed.finished
    assert crashed.load("last.pt")["epoch"] == 1

    run = pt.pretrain(cfg, store=store, progress=False)
    assert run.dir == crashed.dir and run.finished
    assert [r["epoch"] for r in run.metrics()] == [0, 1, 2, 3]
    assert len(calls) == 4  # epochs 1, 2 (crashed), then 2 and 3 after resuming
    # a different config starts a new run instead of resuming the finished one
    run2 = pt.pretrain(_cfg(tmp_path, store, "ssl.epochs=1", "ssl.reals-only=true"), store=store,
                       progress=False)
    assert run2.dir != run.dir


def test_cli_pretrain_and_compare_views(tmp_path, store, synth_root, capsys):
    from dfflab.cli import main

    common = ["--preset", "tiny", "--set", f"results={tmp_path}", "--set", f"data.root={synth_root}",
              "--set", f"data.store={store.path}", "--set", "ssl.epochs=1", "--set", "train.threads=1"]
    assert main(["ssl", "pretrain", "--method", "byol", "--views", "crop", *common]) == 0
    (run,) = list_runs(tmp_path, "ssl")
    assert run.summary()["views"] == "crop" and (run.dir / "backbone.pt").is_file()
    assert "kNN real/fake" in capsys.readouterr().out

    assert main(["ssl", "compare-views", "--views", "shift,imagenet", "--methods", "simclr", *common]) == 0
    (sweep,) = list_runs(tmp_path, "ssl-views")
    text = (sweep.dir / "views_experiment.md").read_text()
    assert "| simclr | shift |" in text and "| simclr | imagenet |" in text
    assert "Result: simclr: best views" in sweep.record["note"]
    children = [r for r in list_runs(tmp_path, "ssl") if r.record["parent"] == sweep.name]
    assert sorted(r.summary()["views"] for r in children) == ["imagenet", "shift"]
    # a wider experiment reuses the finished cells and trains only the new one
    assert main(["ssl", "compare-views", "--views", "shift,patch", "--methods", "simclr", *common]) == 0
    sweep2 = list_runs(tmp_path, "ssl-views")[-1]
    rows = {r["views"]: r["run"] for r in sweep2.metrics()}
    assert rows["shift"] == next(r.name for r in children if r.summary()["views"] == "shift")
    assert Run.open(tmp_path / "runs" / rows["patch"]).record["parent"] == sweep2.name
    assert main(["ssl", "pretrain", "--views", "nope", *common]) == 2  # config error, named
