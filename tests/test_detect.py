"""``dfflab detect``: files and folders in, CSV out, bad files reported and skipped."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

from dfflab.cli import main
from dfflab.config import load_config
from dfflab.detector.inference import detect
from dfflab.models import build_detector, save_detector


@pytest.fixture()
def ckpt(tmp_path, store):
    torch.manual_seed(0)
    cfg = load_config("tiny")
    det = build_detector(cfg.model)
    det.eval()
    return save_detector(
        tmp_path / "detector.pt",
        det,
        cfg.model,
        store.image_size,
        threshold=0.5,
        source_names=store.source_names,
    )


@pytest.fixture()
def folder(tmp_path, synth_root):
    """Two reals, a fake in a subfolder, a truncated JPEG, an empty file, a text file named .png."""
    d = tmp_path / "inbox"
    (d / "sub").mkdir(parents=True)
    reals = sorted((synth_root / "wiki").rglob("*.jpg"))[:2]
    for p in reals:
        shutil.copy(p, d / p.name)
    fake = sorted((synth_root / "text2img").rglob("*.jpg"))[0]
    shutil.copy(fake, d / "sub" / fake.name)
    (d / "truncated.jpg").write_bytes(reals[0].read_bytes()[:300])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("not an image")
    (d / "readme.txt").write_text("ignored: not an image suffix")
    return d, reals, fake


def test_detect_folder_with_corrupt_files(folder, ckpt, tmp_path, capsys):
    d, reals, fake = folder
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "detect",
                str(d),
                str(tmp_path / "missing.jpg"),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    assert (
        len(rows) == 7
    )  # 3 good + 3 bad images + the missing path; readme.txt is not an image
    good = [str(d / reals[0].name), str(d / reals[1].name), str(d / "sub" / fake.name)]
    for p in good:
        r = rows[p]
        assert 0 <= float(r["p_fake"]) <= 1 and r["error"] == ""
        assert r["decision"] == ("fake" if float(r["p_fake"]) >= 0.5 else "real")
    for name, why in (
        ("truncated.jpg", "corrupt"),
        ("empty.jpg", "empty"),
        ("notes.png", "not an image"),
    ):
        r = rows[str(d / name)]
        assert r["decision"] == "error" and r["p_fake"] == "" and why in r["error"]
    assert rows[str(tmp_path / "missing.jpg")]["error"] == "no such file or folder"
    captured = capsys.readouterr()
    assert "3 scored" in captured.out and "4 unreadable" in captured.out
    assert "truncated.jpg" in captured.err


def test_detect_sees_the_pixels_training_saw(folder, ckpt, store, synth_root):
    """A file scored by detect gets the same p(fake) as its row of the prepared store."""
    from dfflab.models import load_detector

    d, reals, _ = folder
    dets, info = detect([str(d / reals[0].name)], ckpt, "cpu", progress=False)
    rel = reals[0].relative_to(synth_root / "wiki").as_posix()
    row = int(np.flatnonzero((store.relpaths == rel) & (store.sources == "wiki"))[0])
    model, _ = load_detector(ckpt)
    x, _, _ = store.batch(np.array([row]))
    with torch.no_grad():
        p = torch.sigmoid(model(x.float() / 255)).item()
    assert dets[0].p_fake == pytest.approx(p, abs=1e-5)
    assert info["threshold"] == 0.5 and info["image_size"] == store.image_size


def test_detect_exit_codes(tmp_path, ckpt):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    assert (
        main(
            [
                "detect",
                str(bad),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 1
    )
    assert main(["detect", str(bad), "--checkpoint", str(tmp_path / "nope.pt")]) == 2


def test_temperature_calibrates_p_but_keeps_decisions(folder, tmp_path):
    from dfflab.detector.inference import calibrated_threshold

    torch.manual_seed(1)
    cfg = load_config("tiny")
    det = build_detector(cfg.model)
    d, _, _ = folder
    raw = save_detector(tmp_path / "raw.pt", det, cfg.model, 32, threshold=0.45)
    hot = save_detector(
        tmp_path / "hot.pt", det, cfg.model, 32, threshold=0.45, temperature=3.0
    )
    a, _ = detect([str(d)], raw, "cpu", progress=False)
    b, info = detect([str(d)], hot, "cpu", progress=False)
    assert info["threshold"] == pytest.approx(calibrated_threshold(0.45, 3.0))
    for x, y in zip(a, b, strict=True):
        assert x.decision == y.decision
        if x.p_fake is not None:  # sigmoid(z / 3) is pulled towards 1/2
            assert abs(y.p_fake - 0.5) <= abs(x.p_fake - 0.5) + 1e-6
    assert calibrated_threshold(0.5, 7.0) == pytest.approx(0.5)
