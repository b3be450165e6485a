import json
import os

import pytest
import torch

from dfflab.runs import Run, atomic_write_text, find_run, list_runs, load_checkpoint, save_checkpoint


def test_run_folder_records_everything(tmp_path):
    run = Run.create(tmp_path, "centralized", "scratch", {"train": {"epochs": 2}},
                     parent="20260101-000000-centralized-base", note="adds X because Y", fingerprint="abc")
    rec = json.loads((run.dir / "config.json").read_text())
    assert run.dir.parent == tmp_path / "runs" and run.dir.name.endswith("-centralized-scratch")
    assert rec["parent"].endswith("centralized-base") and rec["note"] == "adds X because Y"
    assert rec["dataset_fingerprint"] == "abc" and rec["config"] == {"train": {"epochs": 2}}
    assert rec["git_commit"] and "torch" in rec["packages"]
    run.log_metrics({"epoch": 1, "loss": 0.5})
    run.log_metrics({"epoch": 2, "loss": 0.25, "val_auroc": 0.9})  # a new column appears later
    rows = run.metrics()
    assert rows[0] == {"epoch": 1, "loss": 0.5, "val_auroc": None}
    assert rows[1]["val_auroc"] == 0.9
    run.truncate_metrics(1)
    assert len(run.metrics()) == 1
    assert not run.finished
    run.save("last.pt", {"w": torch.ones(2)})
    assert find_run(tmp_path, "centralized", name="scratch", state="resumable").dir == run.dir
    run.write_summary({"test_auroc": 0.9})
    assert run.finished and find_run(tmp_path, "centralized", name="scratch", state="resumable") is None
    assert [r.dir for r in list_runs(tmp_path, "centralized")] == [run.dir]
    assert list_runs(tmp_path, "ssl") == []


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    a = Run.create(tmp_path, "ssl", "simclr", {})
    b = Run.create(tmp_path, "ssl", "simclr", {})
    assert a.dir != b.dir


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    p = tmp_path / "summary.json"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["summary.json"]  # no temp file left


def test_checkpoints_load_weights_only(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"state": {"w": torch.arange(3)}, "epoch": 4})
    assert load_checkpoint(p)["epoch"] == 4

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(RuntimeError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_find_run_reuses_runs_recorded_before_a_setting_existed(tmp_path):
    from dfflab.config import load_config

    cfg = load_config("tiny", [f"results={tmp_path}"])
    old = cfg.to_dict()
    del old["model"]["dropout"]  # as if recorded before model.dropout was added (tiny keeps its default)
    run = Run.create(tmp_path, "centralized", "scratch", old)
    assert find_run(tmp_path, "centralized", name="scratch", cfg=cfg) is None  # not finished yet
    run.write_summary({"ok": 1})
    assert find_run(tmp_path, "centralized", name="scratch", cfg=cfg).dir == run.dir
    other = load_config("tiny", [f"results={tmp_path}", "model.dropout=0.5"])
    assert find_run(tmp_path, "centralized", name="scratch", cfg=other) is None


def test_find_run_any_name_requires_the_same_config_and_data(tmp_path):
    from dfflab.config import load_config

    cfg = load_config("tiny", [f"results={tmp_path}"])
    run = Run.create(tmp_path, "centralized", "scratch", cfg.to_dict(), fingerprint="abc")
    run.write_summary({"ok": 1})
    assert find_run(tmp_path, "centralized", name="le-x", cfg=cfg) is None  # by name: another name
    assert find_run(tmp_path, "centralized", cfg=cfg, fingerprint="abc").dir == run.dir
    assert find_run(tmp_path, "centralized", cfg=cfg, fingerprint="other-data") is None
    other = load_config("tiny", [f"results={tmp_path}", "train.label-frac=0.5"])
    assert find_run(tmp_path, "centralized", cfg=other, fingerprint="abc") is None
