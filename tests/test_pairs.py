"""Partner recovery on a DFF layout, checked on SynthDFF where the true partners are known."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from dfflab.data.links import read_partners
from dfflab.data.pairs import Pairs, read_pairs, recover_pairs, score_pairs
from dfflab.data.prepare import prepare
from dfflab.data.reader import DataError
from dfflab.data.splits import read_splits
from dfflab.data.store import Store
from dfflab.data.synth import SynthSpec, synthesize

SOURCES = ("wiki", "inpainting", "insight", "text2img")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs") / "synthdff"
    spec = SynthSpec(n_real=48, seed=1, difficulty=1.0, fake_size=48, real_min=40, real_max=96)
    return synthesize(root, spec, progress=False, workers=1)


def as_dff(synth, dest, reencode: int = 0):
    """SynthDFF's four folders alone: a plain DFF layout (no partners.csv, no splits.csv)."""
    for s in SOURCES:
        shutil.copytree(synth / s, dest / s)
    if reencode:  # a re-saved copy of the dataset: every fake through another JPEG quality
        for p in (dest / "insight").rglob("*.jpg"):
            buf = io.BytesIO()
            Image.open(p).save(buf, "JPEG", quality=reencode)
            p.write_bytes(buf.getvalue())
    return dest


@pytest.mark.parametrize("reencode, jpeg_quality", [(0, 0), (50, 0), (0, 40)])
def test_prepare_recovers_partners_on_a_dff_layout(synth, tmp_path, reencode, jpeg_quality):
    root = as_dff(synth, tmp_path / "dff", reencode)
    store = Store(prepare(root, tmp_path / "store", 32, workers=1, progress=False, jpeg_quality=jpeg_quality))
    truth = dict(read_partners(synth / "partners.csv"))
    links = read_pairs(store.path / "pairs.csv")
    assert (store.path / "pairs.png").is_file() and store.meta["pairs"]["fakes"] == 48
    right = sum(truth[a] == b for a, b in links)
    assert right / len(links) >= 0.98 and len(links) >= 0.9 * 48  # precision at the confident threshold, recall
    splits = read_splits(store.path / "splits.csv")
    assert all(splits[a] == splits[b] for a, b in links)  # recovered partners share a split
    assert set(store.groups) != set(store.relpaths)  # groups join partner paths


def test_no_confident_match_without_the_partner():
    """A fake whose partner photo is missing matches nothing confidently."""
    rng = np.random.default_rng(0)
    reals = rng.uniform(0, 255, (30, 768)).astype(np.float32)
    fakes = reals[:10] + rng.normal(0, 2, (10, 768)).astype(np.float32)
    p = recover_pairs(np.array([f"f{i}" for i in range(10)]), [fakes], np.array([f"r{i}" for i in range(30)]),
                      [reals])
    assert p.confident.all() and list(p.partner) == [f"r{i}" for i in range(10)]
    gone = recover_pairs(np.array([f"f{i}" for i in range(10)]), [fakes], np.array([f"r{i}" for i in range(10, 30)]),
                         [reals[10:]])
    assert not gone.confident.any()
    s = score_pairs(p, {f"f{i}": f"r{i}" for i in range(10)})
    assert s["precision"] == s["recall"] == s["top1"] == 1.0
    assert isinstance(p, Pairs) and len(p.links()) == 10


def test_a_fake_is_never_its_own_partner():
    reals = np.eye(5, 768, dtype=np.float32) * 255
    p = recover_pairs(np.array(["a", "b"]), [reals[:2]], np.array(["a", "b", "c", "d", "e"]), [reals])
    assert "a" not in p.partner[:1] and "b" not in p.partner[1:]


def test_misaligned_dff_layout_fails_naming_the_problem(synth, tmp_path):
    root = as_dff(synth, tmp_path / "ext")
    for p in (root / "wiki").rglob("*.jpg"):
        p.rename(p.with_suffix(".png"))
    with pytest.raises(DataError, match="extensions differ"):
        prepare(root, tmp_path / "s1", 32, workers=1, progress=False)
    root = as_dff(synth, tmp_path / "nest")
    shutil.move(root / "insight", tmp_path / "tmp-insight")
    (root / "insight").mkdir()
    shutil.move(tmp_path / "tmp-insight", root / "insight" / "insight")
    with pytest.raises(DataError, match=r"only 96 of 144 fake files .* extra folder level"):
        prepare(root, tmp_path / "s2", 32, workers=1, progress=False)
    assert not (tmp_path / "s2" / "images.npy").exists()  # failed before decoding anything
