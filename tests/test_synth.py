"""SynthDFF: DFF's layout, size shortcut, determinism, zips and the difficulty knob."""

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfflab.data.links import read_partners
from dfflab.data.synth import SynthSpec, partners, relpaths, synthesize

SOURCES = ("wiki", "inpainting", "insight", "text2img")
FAKES = SOURCES[1:]
NAME = re.compile(r"^\d+_\d{4}-\d{2}-\d{2}_\d{4}\.jpg$")
SPEC = SynthSpec(n_real=16, seed=3)


def make(root: Path, spec: SynthSpec = SPEC, **kw) -> Path:
    return synthesize(root, spec, progress=False, **kw)


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every jpg under root, keyed by `<source>/<NN>/<file>`."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*.jpg")
    }


def files(root: Path, source: str) -> set[str]:
    return {
        p.relative_to(root / source).as_posix()
        for p in (root / source).rglob("*")
        if p.is_file()
    }


def load(path: Path, size: int | None = None) -> np.ndarray:
    """RGB in [0, 1]; with `size`, centre-cropped and resized as a detector would."""
    im = Image.open(path).convert("RGB")
    if size:
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.float64) / 255


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("base"), workers=1)


@pytest.fixture(scope="module")
def by_difficulty(tmp_path_factory) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("difficulty")
    return {
        d: make(root / str(d), SynthSpec(n_real=8, seed=5, difficulty=d), workers=1)
        for d in (0.0, 1.0, 2.0)
    }


def test_layout_matches_dff(base):
    assert {p.name for p in base.iterdir() if p.is_dir()} == set(SOURCES)
    names = files(base, "wiki")
    assert len(names) == SPEC.n_real
    for source in SOURCES:
        assert files(base, source) == names  # a real and its fakes share a path
    for rel in names:
        folder, name = rel.split("/")
        assert re.fullmatch(r"\d\d", folder) and NAME.match(name)
        assert name.split("_")[0][-2:] == folder  # NN = the id's last two digits
    assert len({rel.split("/")[0] for rel in names}) == SPEC.n_real  # spread out
    meta = json.loads((base / "SYNTHDFF.json").read_text())
    assert meta["spec"]["n_real"] == SPEC.n_real
    assert meta["counts"] == {s: SPEC.n_real for s in SOURCES}
    assert meta["total"] == 4 * SPEC.n_real


def test_fakes_are_squares_reals_vary(base):
    for source in FAKES:
        sizes = {Image.open(p).size for p in (base / source).rglob("*.jpg")}
        assert sizes == {(SPEC.fake_size, SPEC.fake_size)}
    sizes = [Image.open(p).size for p in (base / "wiki").rglob("*.jpg")]
    assert len(set(sizes)) > SPEC.n_real // 2
    for w, h in sizes:
        assert SPEC.real_min <= min(w, h) and max(w, h) <= SPEC.real_max
        assert max(w, h) / min(w, h) <= 1.4 + 0.02


def test_same_bytes_whatever_the_workers(base, tmp_path):
    other = make(tmp_path, workers=2)
    assert hashes(other) == hashes(base)
    meta = "SYNTHDFF.json"
    assert (other / meta).read_text() == (base / meta).read_text()


def test_other_seed_other_dataset(base, tmp_path):
    other = make(tmp_path, SynthSpec(n_real=SPEC.n_real, seed=SPEC.seed + 1))
    assert not set(hashes(other).values()) & set(hashes(base).values())


def test_zips_hold_the_folder_files(base, tmp_path):
    a, b = (
        make(tmp_path / "a", as_zip=True, workers=1),
        make(tmp_path / "b", as_zip=True),
    )
    assert not any(p.is_dir() for p in a.iterdir())
    for source in SOURCES:
        archive = a / f"{source}.zip"
        assert archive.read_bytes() == (b / f"{source}.zip").read_bytes()
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            assert names == sorted(names)
            assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
            assert {n.split("/", 1)[1] for n in names} == files(base, source)
            for n in names:
                assert n.startswith(f"{source}/")
                assert zf.read(n) == (base / n).read_bytes()


def test_partners_are_mutual_pairs_recorded_in_partners_csv(base):
    for n in (16, 33, 65, 1):  # one block, odd blocks (a cycle of three at the end), a single photo
        p = partners(SynthSpec(n_real=n, seed=3))
        counts = np.bincount(p, minlength=n)
        assert (counts == 1).all()  # a permutation: every photo is someone's partner once
        mutual = sum(p[p[i]] == i for i in range(n))
        assert n == 1 or (all(p[i] != i for i in range(n)) and mutual >= n - 3 * (-(-n // 32)))
    names = relpaths(SPEC)
    truth = dict(read_partners(base / "partners.csv"))
    assert truth == {names[i]: names[j] for i, j in enumerate(partners(SPEC))}


def test_insight_shows_its_partners_photo_outside_the_face(base):
    """DFF's insight fake at X is Y's photo with X's face: its border is Y's, not X's."""
    truth = dict(read_partners(base / "partners.csv"))
    border = np.ones((SPEC.fake_size, SPEC.fake_size), bool)
    m = SPEC.fake_size // 4
    border[m:-m, m:-m] = False
    for rel, partner in truth.items():
        fake = load(base / "insight" / rel, SPEC.fake_size)
        own = np.abs(fake - load(base / "wiki" / rel, SPEC.fake_size))[border].mean()
        theirs = np.abs(fake - load(base / "wiki" / partner, SPEC.fake_size))[border].mean()
        assert theirs < 0.03 < own, (rel, theirs, own)


def test_each_fake_differs_from_its_real(base):
    for rel in files(base, "wiki"):
        real = load(base / "wiki" / rel, SPEC.fake_size)
        for source in FAKES:
            fake = load(base / source / rel, SPEC.fake_size)
            assert np.abs(fake - real).mean() > 0.01, (source, rel)


def test_difficulty_scales_every_fingerprint(by_difficulty):
    """Distance from the difficulty-0 fake grows with difficulty; reals never move."""
    zero = by_difficulty[0.0]
    assert hashes(zero / "wiki") == hashes(by_difficulty[2.0] / "wiki")
    for source in FAKES:
        gap = {}
        for d in (1.0, 2.0):
            root = by_difficulty[d] / source
            gap[d] = np.mean(
                [
                    np.abs(load(p) - load(zero / source / p.relative_to(root))).mean()
                    for p in root.rglob("*.jpg")
                ]
            )
        assert 0.002 < gap[1.0] < gap[2.0] / 1.2, (source, gap)


def checker_peak(path: Path) -> float:
    """text2img's decoder checkerboard at the detector's 64 px: the spectrum at
    period 4 (bin 16) over the median of its neighbourhood."""
    grey = load(path, 64).mean(axis=-1)
    spec = np.abs(np.fft.fft2(grey - grey.mean()))
    return spec[16, 16] / np.median(spec[8:25, 8:25])


def test_text2img_checkerboard_survives_resize_and_grows(by_difficulty):
    peak = {
        d: np.median([checker_peak(p) for p in (root / "text2img").rglob("*.jpg")])
        for d, root in by_difficulty.items()
    }
    assert peak[0.0] < 3 < peak[1.0] < peak[2.0], peak


def test_rerun_replaces_only_synthdff(tmp_path):
    make(tmp_path / "a", SynthSpec(n_real=5))
    out = make(tmp_path / "a", SynthSpec(n_real=3), as_zip=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}.zip" for s in SOURCES] + ["SYNTHDFF.json", "partners.csv"]
    )
    with zipfile.ZipFile(out / "wiki.zip") as zf:
        assert len(zf.namelist()) == 3
    (tmp_path / "b" / "wiki").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        make(tmp_path / "b", SynthSpec(n_real=2))
    with pytest.raises(ValueError):
        SynthSpec(n_real=0)


def test_zip_bytes_decode(tmp_path):
    out = make(tmp_path, SynthSpec(n_real=2), as_zip=True)
    with zipfile.ZipFile(out / "text2img.zip") as zf:
        im = Image.open(io.BytesIO(zf.read(zf.namelist()[0])))
        assert im.format == "JPEG" and im.size == (128, 128)


def test_draw_size_draws_small_and_writes_full_size_fakes(base, tmp_path):
    spec = SynthSpec(n_real=4, seed=3, fake_size=96, draw_size=48)
    root = make(tmp_path / "drawn", spec, workers=1)
    plain = make(tmp_path / "plain", SynthSpec(n_real=4, seed=3, fake_size=96), workers=1)
    small = make(tmp_path / "small", SynthSpec(n_real=4, seed=3, fake_size=48), workers=1)
    for source in FAKES:
        for p in (root / source).rglob("*.jpg"):
            rel = p.relative_to(root)
            assert Image.open(p).size == (96, 96)
            # the 48 px drawing, enlarged: close to the 48 px SynthDFF's fake, not the same file as a 96 px one
            assert np.abs(load(p, 48) - load(small / rel)).mean() < 0.03
            assert p.read_bytes() != (plain / rel).read_bytes()
    assert hashes(root / "wiki") == hashes(plain / "wiki")  # the reals do not depend on it
    assert json.loads((root / "SYNTHDFF.json").read_text())["spec"]["draw_size"] == 48
    assert "draw_size" not in json.loads((base / "SYNTHDFF.json").read_text())["spec"]  # older records still match
    with pytest.raises(ValueError, match="draw_size"):
        SynthSpec(fake_size=64, draw_size=128)
