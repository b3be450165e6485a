"""The DFF reader: layouts, pairing, and every kind of bad input."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from dfflab.data import reader
from dfflab.data.prepare import prepare
from dfflab.data.reader import BadImage, DataError, decode, detect_layout, list_entries
from dfflab.data.store import Store

SOURCES = ("wiki", "inpainting", "insight", "text2img")


def jpeg(w=64, h=48, mode="RGB", quality=90, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG") if mode else Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def make_dff(root, n=6, files=None):
    """A DFF-layout folder tree with n groups of random JPEGs (+ extra files per source)."""
    for s in SOURCES:
        for i in range(n):
            p = root / s / f"{i:02d}" / f"{100 + i}_1980-01-0{1 + i % 9}_2010.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            size = (64 + 8 * i, 48 + 4 * i) if s == "wiki" else (64, 64)
            p.write_bytes(jpeg(*size, seed=i))
    for rel, data in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_decode_conversions():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent -> white
    d = decode(png(rgba, "RGBA"))
    assert d.rgb.shape == (20, 20, 3) and d.mode == "RGBA" and (d.rgb == 255).all()
    gray = decode(jpeg(mode="L"))
    assert gray.rgb.shape == (48, 64, 3) and gray.mode == "L"
    assert (gray.rgb[..., 0] == gray.rgb[..., 1]).all()
    cmyk = decode(jpeg(mode="CMYK"))
    assert cmyk.rgb.shape == (48, 64, 3) and cmyk.mode == "CMYK"
    sixteen = np.full((20, 30), 65535, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(sixteen).save(buf, "PNG")
    d16 = decode(buf.getvalue())
    assert d16.mode.startswith("I") and d16.rgb.dtype == np.uint8 and (d16.rgb == 255).all()
    assert decode(jpeg(quality=75)).jpeg_quality == 75
    assert decode(png(rgba, "RGBA")).jpeg_quality == -1


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"this is text, not a picture", "not an image"),
    (jpeg()[:300], "corrupt or truncated"),
    (png(np.zeros((1, 1, 3), np.uint8)), "too small"),
])
def test_decode_rejects_bad_files(data, reason):
    with pytest.raises(BadImage, match=reason):
        decode(data)


def test_decode_refuses_decompression_bombs(monkeypatch):
    monkeypatch.setattr(reader, "MAX_PIXELS", 1000)
    with pytest.raises(BadImage, match="decompression bomb"):
        decode(jpeg(64, 48))


def test_dff_folders_and_pairing(tmp_path):
    root = make_dff(tmp_path / "dff")
    entries = list_entries(root)
    assert detect_layout(root) == "dff" and len(entries) == 24
    by_source = {s: {e.relpath for e in entries if e.source == s} for s in SOURCES}
    assert all(by_source[s] == by_source["wiki"] for s in SOURCES)  # same relpaths in all four
    assert {e.label for e in entries if e.source == "wiki"} == {0}
    assert {e.label for e in entries if e.source != "wiki"} == {1}


def test_missing_source_and_broken_zip_fail_clearly(tmp_path):
    root = make_dff(tmp_path / "dff")
    import shutil

    shutil.rmtree(root / "insight")
    with pytest.raises(DataError, match="source 'insight' is missing"):
        list_entries(root)
    (root / "insight.zip").write_bytes(b"PK not really a zip")
    with pytest.raises(DataError, match=r"insight.zip: not a readable zip"):
        list_entries(root)
    with pytest.raises(DataError, match="no dataset found"):
        list_entries(tmp_path / "dff" / "wiki" / "00")
    with pytest.raises(DataError, match="not found"):
        list_entries(tmp_path / "nowhere")


def test_prepare_skips_bad_files_and_reports_them(tmp_path):
    bad = {  # fakes replace files of make_dff: DFF's fakes must line up with its reals
        "wiki/90/1_1980-01-01_2010.jpg": jpeg()[:200],  # truncated
        "wiki/91/2_1980-01-01_2010.jpg": b"",  # zero bytes
        "inpainting/02/102_1980-01-03_2010.jpg": b"<html>not an image</html>",
        "insight/03/103_1980-01-04_2010.jpg": png(np.zeros((1, 1, 3), np.uint8)),  # 1x1
    }
    ok = {
        "text2img/04/104_1980-01-05_2010.jpg": png(np.zeros((40, 40, 4), np.uint8), "RGBA"),
        "wiki/95/6_1980-01-01_2010.jpg": jpeg(mode="CMYK"),
        "wiki/96/7_1980-01-01_2010.jpg": jpeg(mode="L"),
    }
    root = make_dff(tmp_path / "dff", n=30, files={**bad, **ok})
    n_files = 4 * 30 + 4  # four extra reals
    out = prepare(root, tmp_path / "store", 24, workers=1, progress=False, max_bad_frac=0.2)
    report = (out / "bad_files.csv").read_text()
    for rel in bad:
        assert rel.split("/", 1)[1] in report
    assert "truncated" in report and "empty file" in report and "not an image" in report and "too small" in report
    store = Store(out)
    assert len(store) == n_files - len(bad)
    assert store.images.shape == (len(store), 24, 24, 3)
    assert store.meta["n_bad"] == 4
    # too many bad files: fail, but the report is there to read
    with pytest.raises(DataError, match="unusable"):
        prepare(root, tmp_path / "store2", 24, workers=1, progress=False, max_bad_frac=0.01)
    assert (tmp_path / "store2" / "bad_files.csv").is_file()
    assert not (tmp_path / "store2" / "meta.json").exists()


def test_generic_layout(tmp_path):
    root = tmp_path / "mine"
    for i in range(5):
        for sub in ("real", "fake/gan", "fake/diffusion"):
            p = root / sub / "people" / f"{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(jpeg(seed=i))
    assert detect_layout(root) == "generic"
    entries = list_entries(root)
    assert {e.source for e in entries} == {"real", "gan", "diffusion"}
    assert {e.relpath for e in entries if e.source == "gan"} == {e.relpath for e in entries if e.source == "real"}
    store = Store(prepare(root, tmp_path / "s", 16, workers=1, progress=False))
    assert store.source_names[0] == "real" and set(store.fake_sources) == {"diffusion", "gan"}
    assert (store.labels == 0).sum() == 5


def test_zip_reading_without_extracting(tmp_path):
    root = make_dff(tmp_path / "dff")
    zroot = tmp_path / "zips"
    zroot.mkdir()
    for s in SOURCES:
        with zipfile.ZipFile(zroot / f"{s}.zip", "w") as zf:
            for p in sorted((root / s).rglob("*.jpg")):
                zf.write(p, f"{s}/{p.relative_to(root / s).as_posix()}")
    a, b = list_entries(root), list_entries(zroot)
    assert [(e.source, e.relpath, e.file_size) for e in a] == [(e.source, e.relpath, e.file_size) for e in b]
    assert b[0].location.startswith(str(zroot / "inpainting.zip") + "!inpainting/")
    sa = Store(prepare(root, tmp_path / "sa", 16, workers=1, progress=False))
    sb = Store(prepare(zroot, tmp_path / "sb", 16, workers=2, progress=False))
    assert (sa.images[:] == sb.images[:]).all() and sa.fingerprint == sb.fingerprint
    assert not any(zroot.rglob("*.jpg"))  # nothing was extracted
