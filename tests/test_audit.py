"""The shortcut audit: metadata-only classifier, pixel check, greyscale, and the JPEG control."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
from PIL import Image

from dfflab.data.audit import FEATURES, metadata_audit, pixel_check, run_audit, single_feature_auroc
from dfflab.data.prepare import prepare
from dfflab.data.store import Store

FAKES = ["inpainting", "insight", "text2img"]


def test_audit_metadata_and_pixels(store):
    rows_tr, rows_te = store.select("train", FAKES), store.select("test", FAKES)
    m = metadata_audit(store, rows_tr, rows_te)
    # SynthDFF's fakes are all fake_size squares, like DFF's 512x512: metadata gives them away
    assert m["auroc"] > 0.9 and m["warning"]
    assert set(m["single_feature_auroc"]) == set(FEATURES) and "greyscale" in FEATURES
    # raw values far outside [0, 1] (pixels, bytes) must keep their order
    x = np.array([[100, 0, 0, 0, 60, 0], [300, 0, 0, 0, 95, 0], [200, 0, 0, 0, 70, 1], [400, 0, 0, 0, 90, 1]],
                 np.float32)
    one = single_feature_auroc(x, np.array([0, 0, 1, 1]))
    assert one["width"] == pytest.approx(0.75) and one["jpeg_quality"] == pytest.approx(0.5)
    assert one["greyscale"] == pytest.approx(1.0)
    assert single_feature_auroc(x, np.array([1, 1, 0, 0]))["width"] == pytest.approx(0.75)
    pix = pixel_check(store)
    assert pix["checked"] == 4 * len(store.source_names) and pix["identical"] == pix["checked"]
    tampered = copy.copy(store)
    tampered.images = np.array(store.images)
    tampered.images[store.sources == "insight"] ^= 1  # a store built differently for one source
    bad = pixel_check(tampered)
    assert bad["identical"] == pix["checked"] - 4 and all("insight" in x for x in bad["mismatches"])


def _jpeg(rgb: np.ndarray, quality: int, grey: bool = False) -> bytes:
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    (img.convert("L") if grey else img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def grey_reals(tmp_path_factory):
    """A generic folder: 30 reals at quality 60, a third of them greyscale; fakes at quality 95."""
    root = tmp_path_factory.mktemp("grey") / "mine"
    rng = np.random.default_rng(0)
    for i in range(30):
        base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8).repeat(12, 0).repeat(12, 1)
        for sub, q, grey in (("real", 60, i % 3 == 0), ("fake/gan", 95, False)):
            p = root / sub / f"{i:02d}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_jpeg(base, q, grey))
    return root


def test_greyscale_reals_are_flagged(grey_reals, tmp_path):
    store = Store(prepare(grey_reals, tmp_path / "s", 24, workers=1, progress=False))
    tr, te = store.select("train"), np.arange(len(store))
    res = run_audit(store, tr, te, detector_auroc=0.9)
    assert res["greyscale_pixels"]["real"] == pytest.approx(1 / 3) and res["greyscale_pixels"]["fake"] == 0
    assert "greyscale images in pixels" in res["message"] and "Detector: test AUROC 0.900" in res["message"]
    assert "JPEG control off" in res["message"] and res["jpeg_quality"] == 0
    m = res["metadata"]
    assert m["single_feature_auroc"]["greyscale"] > 0.6 and m["single_feature_auroc"]["jpeg_quality"] == 1.0


def test_jpeg_control_re_encodes_before_resize(grey_reals, tmp_path):
    off = Store(prepare(grey_reals, tmp_path / "off", 24, workers=1, progress=False))
    on = Store(prepare(grey_reals, tmp_path / "on", 24, workers=1, progress=False, jpeg_quality=50))
    assert on.meta["jpeg_quality"] == 50 and not np.array_equal(on.images[:], off.images[:])
    # the file metadata is the file's own; the pixels went through quality 50 before resizing
    assert [r["jpeg_quality"] for r in on.rows] == [r["jpeg_quality"] for r in off.rows]
    res = run_audit(on, on.select("train"), on.select("test"))
    assert res["pixels"]["identical"] == res["pixels"]["checked"] > 0  # the check re-encodes too
    assert "JPEG control on" in res["message"] and "quality 50" in res["message"]
    again = prepare(grey_reals, tmp_path / "on", 24, workers=1, progress=False, jpeg_quality=60)
    assert Store(again).meta["jpeg_quality"] == 60  # another quality rebuilds the store
