"""The prepared store built from SynthDFF, and the data CLI end to end."""

import subprocess
import sys

import numpy as np

from dfflab.cli import main
from dfflab.data.reader import list_entries
from dfflab.data.splits import read_splits
from dfflab.data.store import Store


def test_store_from_synth(store, synth_root):
    entries = list_entries(synth_root)
    assert len(store) == len(entries) == 4 * 24
    assert store.source_names == ["wiki", "inpainting", "insight", "text2img"]
    assert store.images.shape == (96, 32, 32, 3) and store.images.dtype == np.uint8
    # every real photo and its three fakes share one split: no relpath crosses splits
    by_rel = {}
    for rel, sp in zip(store.relpaths, store.split, strict=True):
        by_rel.setdefault(rel, set()).add(sp)
    assert all(len(v) == 1 for v in by_rel.values()) and len(by_rel) == 24
    assert set(store.split) == {"train", "val", "test"}
    assert read_splits(synth_root / "splits.csv") == {r: next(iter(s)) for r, s in by_rel.items()}
    # reals keep varied native sizes, fakes are squares: the shortcut exists in the index...
    w = np.array([int(r["width"]) for r in store.rows])
    h = np.array([int(r["height"]) for r in store.rows])
    assert len(set(zip(w[store.labels == 0], h[store.labels == 0], strict=True))) > 1
    assert (w[store.labels == 1] == h[store.labels == 1]).all()
    # ...but every stored image has the same shape
    x, y, s = store.batch(store.select("train", ["insight"]))
    assert x.shape[1:] == (3, 32, 32) and set(s.tolist()) <= {0, 2}
    assert set(y.tolist()) == {0, 1}


def test_batches_cover_rows_once(store):
    rows = store.select("train")
    got = []
    for _x, y, _ in store.batches(rows, 7, shuffle=True, seed=1):
        got.append(y)
    assert sum(len(g) for g in got) == len(rows)
    assert int(np.concatenate([g.numpy() for g in got]).sum()) == int(store.labels[rows].sum())
    xa, _, _ = store.batch(rows[[3, 0, 5]])
    assert np.array_equal(xa[1].permute(1, 2, 0).numpy(), store.images[rows[0]])


def test_data_cli_end_to_end(tmp_path, capsys):
    root, st = tmp_path / "synthdff", tmp_path / "st"
    assert main(["data", "synth", "--preset", "tiny", "--out", str(root), "--n-real", "8", "--zip"]) == 0
    assert sorted(p.name for p in root.glob("*.zip")) == ["inpainting.zip", "insight.zip", "text2img.zip", "wiki.zip"]
    assert main(["data", "prepare", "--preset", "tiny", "--data", str(root), "--out", str(st)]) == 0
    assert main(["data", "info", "--preset", "tiny", "--store", str(st)]) == 0
    out = capsys.readouterr().out
    assert "wiki" in out and "text2img" in out and "32px" in out
    assert Store(st).fingerprint
    assert main(["data", "info", "--data", str(tmp_path / "nothing")]) == 1
    assert "dataset root not found" in capsys.readouterr().err


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "dfflab", "--help"], capture_output=True, text=True, check=True)
    assert "data" in out.stdout and "config" in out.stdout


def test_ensure_store_regenerates_stale_synthdff(tmp_path):
    from dfflab.config import load_config
    from dfflab.data import ensure_store

    over = [f"data.root={tmp_path / 'synthdff'}", f"results={tmp_path}", "data.n-real=6", "data.fake-size=32",
            "data.real-min=32", "data.real-max=48"]
    a = ensure_store(load_config("tiny", over), progress=False)
    again = ensure_store(load_config("tiny", over), progress=False)
    assert again.fingerprint == a.fingerprint  # same settings: kept
    b = ensure_store(load_config("tiny", over + ["data.difficulty=1.5"]), progress=False)
    assert b.fingerprint != a.fingerprint and len(b) == len(a) == 24


def test_ensure_store_keeps_a_synthdff_the_user_wrote(synth_root, tmp_path):
    """A SynthDFF from `dfflab data synth` is data: other data.* settings never rewrite it."""
    from dfflab.config import load_config
    from dfflab.data import ensure_store
    from dfflab.data.reader import list_entries

    before = (synth_root / "SYNTHDFF.json").read_text()
    cfg = load_config("tiny", [f"data.root={synth_root}", f"data.store={tmp_path / 'st'}", "data.n-real=6"])
    s = ensure_store(cfg, progress=False)
    assert (synth_root / "SYNTHDFF.json").read_text() == before
    assert len(s) == len(list_entries(synth_root, ("wiki", "inpainting", "insight", "text2img")))
