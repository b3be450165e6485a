"""SynthDFF: a procedural stand-in for the DeepFakeFace (DFF) dataset, in DFF's layout.

DFF pairs 30,000 IMDB-WIKI photos (`wiki`) with three fakes of each: Stable Diffusion
v1.5 text-to-image (`text2img`), SD inpainting of the face (`inpainting`) and an
InsightFace face swap (`insight`). SynthDFF draws the reals as procedural portraits
(`synth_faces.py`) and makes each fake the way DFF made it, leaving a fingerprint
whose strength grows with `SynthSpec.difficulty` (0: next to none, 2: blatant):

- text2img: a partner's identity drawn whole, as if at half resolution and upsampled,
  with the decoder's periodic checkerboard, smoothed skin, no sensor noise and boosted
  saturation.
- inpainting: this photo with its face box redrawn (identity blended towards the
  partner) the same way, but with a periodic *grid* of another period, a colour
  mismatch and no noise, blended in with a feathered box mask.
- insight: the partner's photo with this photo's face warped in, colour-matched to
  the partner's skin with a residual cast, blurred (swappers work at low resolution)
  and pasted with a seam at its edge.

Layout: `<out>/<source>/<NN>/<id>_<birth>_<year>.jpg`, or `<out>/<source>.zip` holding
`<source>/<NN>/...`; one `<NN>/<file>` names a real and its three fakes. Reals keep
varied native sizes and JPEG qualities; fakes are `fake_size` squares saved at quality
90-95, the size shortcut DFF has too. Output depends only on the spec, never on
`workers`.

    python -c "from dfflab.data.synth import synthesize; synthesize('data/synthdff')"
"""

from __future__ import annotations

import calendar
import io
import json
import multiprocessing
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dfflab.data.imageops import gaussian_blur, match_colour, resize, sample_bilinear
from dfflab.data.synth_faces import (
    FaceFrame,
    Shot,
    add_sensor_noise,
    face_frame,
    from_face,
    image_grid,
    render_portrait,
    sample_identity,
    sample_shot,
    to_face,
)

__all__ = ["SynthSpec", "synthesize", "make_real", "relpaths"]

_SOURCES = ("wiki", "inpainting", "insight", "text2img")  # index = rng stream
_IDENTITY = len(_SOURCES)  # rng stream of a person's identity
_TABLE = 2**20  # rng stream of the file-name table
_REAL_QUALITY = (60, 95)  # web photos
_FAKE_QUALITY = (90, 95)  # DFF saved its fakes at high quality
_MAX_ASPECT = 1.4
_BLOCK = 32  # partners are drawn inside fixed blocks, so a task renders all it needs
_MARKER = "SYNTHDFF.json"
_STAGING = ".synthdff-staging"

# Artifact strengths at difficulty 1; amplitudes scale linearly with difficulty d,
# the low-resolution blend as min(d, 1) and mask feathers shrink as 1 / (1 + d). Pixel
# amounts are at fake_size 128 and scale with it, so the fingerprints keep their
# size in the detector's 64 px input whatever fake_size is.
_LOWRES = 2  # generators work at 1/2 resolution and upsample (weight min(d, 1))
_T2I_PERIOD = 8  # px; the decoder's checkerboard (4 px once resized to 64)
_T2I_TILE = 0.02  # checkerboard amplitude, fraction of the pixel value
_T2I_SMOOTH = 0.5  # extra Gaussian sigma, px: diffusion skin is smooth
_T2I_SATURATE = 0.12  # saturation gain
_INP_PERIOD = 12  # px; inpainting's grid, another period than text2img's
_INP_TILE = 0.02
_INP_SMOOTH = 0.5
_INP_SHIFT = 0.04  # colour gain mismatch of the redrawn box, per channel
_INP_FEATHER = 0.16  # mask feather at d = 0, image units; sharper as d grows
_INS_BLUR = 0.8  # px; the swapper's output is blurrier than the photo
_INS_CAST = 0.06  # residual colour gain error after mean/std matching
_INS_SEAM = 0.05  # brightness ridge along the paste boundary
_INS_FEATHER = 0.24  # mask feather at d = 0, face units; sharper as d grows


@dataclass(frozen=True)
class SynthSpec:
    """What SynthDFF to draw; the same spec always gives the same bytes.

    Attributes:
        n_real: Number of real photos; the dataset holds 4 * n_real images.
        seed: Master seed.
        difficulty: Scales every fake's artifacts: 0 almost none, 1 detectable by a
            small CNN with effort, 2 blatant.
        fake_size: Side of the square fakes (DFF: 512; small so CPUs train fast).
        real_min: Smallest native side of a real.
        real_max: Largest native side of a real.
    """

    n_real: int = 1000
    seed: int = 0
    difficulty: float = 1.0
    fake_size: int = 128
    real_min: int = 80
    real_max: int = 224

    def __post_init__(self):
        if not 1 <= self.n_real <= 900_000:
            raise ValueError(f"n_real must be in [1, 900000], got {self.n_real}")
        if self.seed < 0 or self.difficulty < 0:
            raise ValueError("seed and difficulty must be >= 0")
        if self.fake_size < 32 or not 32 <= self.real_min <= self.real_max:
            raise ValueError("need fake_size >= 32 and 32 <= real_min <= real_max")


def synthesize(
    out: Path | str,
    spec: SynthSpec = SynthSpec(),
    as_zip: bool = False,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Writes SynthDFF under `out`.

    Files are drawn into a staging folder, then moved (or zipped) into place, so an
    interrupted run leaves no half dataset. A previous SynthDFF in `out` (one with
    SYNTHDFF.json) is replaced; other data in the way raises FileExistsError.

    Args:
        out: Root folder; gets wiki/, inpainting/, insight/, text2img/ or, with
            `as_zip`, the four `<source>.zip`, plus SYNTHDFF.json (spec and counts).
        spec: What to draw.
        as_zip: Write `<source>.zip` archives (entries `<source>/<NN>/<file>.jpg`).
        workers: Processes; 0 = os.cpu_count(). Output does not depend on it.
        progress: Show a tqdm bar.

    Returns:
        `out` as a Path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    staging = out / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    names, partners = relpaths(spec), _partners(spec)
    jobs = [[(i, names[i], partners[i]) for i in b] for b in _blocks(spec.n_real)]
    tasks = [(spec, job, staging) for job in jobs]
    _run(tasks, workers or os.cpu_count() or 1, progress, 4 * spec.n_real)
    for source in _SOURCES:
        if as_zip:
            _zip_folder(staging / source, out / f"{source}.zip", source)
        else:
            os.replace(staging / source, out / source)
    shutil.rmtree(staging)
    meta = {
        "dataset": "SynthDFF",
        "version": 1,
        "spec": asdict(spec),
        "layout": "zip" if as_zip else "folders",
        "counts": {s: spec.n_real for s in _SOURCES},
        "total": 4 * spec.n_real,
    }
    tmp = out / (_MARKER + ".part")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / _MARKER)
    return out


# --- names, partners and work split ------------------------------------------


def relpaths(spec: SynthSpec) -> list[str]:
    """`<NN>/<id>_<YYYY-MM-DD>_<year>.jpg` of every index, shared by all sources.

    As in IMDB-WIKI, NN is the id's last two digits; a permutation spreads ids evenly
    over the 100 folders, and distinct id prefixes keep them unique.
    """
    n = spec.n_real
    rng = np.random.default_rng([spec.seed, _TABLE])
    prefix = rng.choice(999_000, size=n, replace=False) + 1000
    bucket = rng.permutation(n) % 100
    born = rng.integers(1930, 1996, size=n)  # adults by 2013
    month, day_t = rng.integers(1, 13, size=n), rng.random(n)
    age = rng.random(n)
    names = []
    for i in range(n):
        y, m = int(born[i]), int(month[i])
        d = 1 + int(day_t[i] * calendar.monthrange(y, m)[1])
        taken = y + 18 + int(age[i] * (2015 - y - 18 + 1))  # photos up to 2015
        ident = int(prefix[i]) * 100 + int(bucket[i])
        names.append(f"{bucket[i]:02d}/{ident}_{y:04d}-{m:02d}-{d:02d}_{taken}.jpg")
    return names


def _blocks(n: int) -> list[list[int]]:
    """Fixed index blocks of about _BLOCK (never 1 unless n == 1); the unit of work."""
    k = max(1, -(-n // _BLOCK))
    return [b.tolist() for b in np.array_split(np.arange(n), k)]


def _partners(spec: SynthSpec) -> list[int]:
    """Each index's partner: the next one on a random cycle through its block."""
    rng = np.random.default_rng([spec.seed, _TABLE + 1])
    partner = list(range(spec.n_real))
    for block in _blocks(spec.n_real):
        order = rng.permutation(block)
        for a, b in zip(order, np.roll(order, -1), strict=True):
            partner[int(a)] = int(b)
    return partner


def _rng(spec: SynthSpec, idx: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, idx, stream])


def _run(tasks: list, workers: int, progress: bool, total: int) -> None:
    with tqdm(total=total, unit="img", desc="SynthDFF", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            for task in tasks:
                bar.update(_render_block(task))
            return
        with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
            for count in pool.imap_unordered(_render_block, tasks):
                bar.update(count)


def _render_block(task) -> int:
    """Draws one block's reals and fakes into the staging folder."""
    spec, job, staging = task  # job: (index, relpath, partner index) triples
    reals = {i: make_real(spec, i) for i, _, _ in job}
    for i, name, p in job:
        real, partner = reals[i], reals[p]
        files = {
            "wiki": real.jpeg,
            "inpainting": _inpainting(spec, i, real, partner),
            "insight": _insight(spec, i, real, partner),
            "text2img": _text2img(spec, i, partner),
        }
        for source, data in files.items():
            path = staging / source / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return 4 * len(job)


# --- the real and its three fakes --------------------------------------------


@dataclass(frozen=True, eq=False)
class Real:
    """A drawn real photo and what its fakes need from it."""

    identity: np.ndarray
    shot: Shot
    jpeg: bytes
    size: tuple[int, int]  # native (width, height)
    square: np.ndarray  # decoded, centre-cropped, resized to fake_size; (S, S, 3)


def make_real(spec: SynthSpec, idx: int) -> Real:
    """Draws real number `idx`: a portrait at a web photo's size and JPEG quality."""
    identity = sample_identity(_rng(spec, idx, _IDENTITY))
    rng = _rng(spec, idx, 0)
    shot = sample_shot(rng)
    h = int(rng.integers(spec.real_min, spec.real_max, endpoint=True))
    aspect = np.exp(rng.uniform(-np.log(_MAX_ASPECT), np.log(1.2)))  # mostly portrait
    w = int(np.clip(round(h * aspect), spec.real_min, spec.real_max))
    quality = int(rng.integers(*_REAL_QUALITY, endpoint=True))
    img = render_portrait(identity, shot, w, h)
    img = add_sensor_noise(img, shot.params["noise"], rng)
    data = _jpeg(img, quality)
    return Real(identity, shot, data, (w, h), _square(data, spec.fake_size))


def _text2img(spec: SynthSpec, idx: int, partner: Real) -> bytes:
    """A new photo of the partner's identity, as a diffusion model would draw it."""
    rng = _rng(spec, idx, _SOURCES.index("text2img"))
    shot = sample_shot(rng)
    quality = int(rng.integers(*_FAKE_QUALITY, endpoint=True))
    d, n = spec.difficulty, spec.fake_size
    img = render_portrait(partner.identity, shot, n, n)
    checker = _T2I_TILE * _tile(n, _T2I_PERIOD, checker=True)
    img = _decoder_trace(img, d, _T2I_SMOOTH, checker)
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + (1 + _T2I_SATURATE * d) * (img - grey)
    img = add_sensor_noise(img, shot.params["noise"] * max(0.0, 1 - d / 2), rng)
    return _jpeg(img, quality)


def _inpainting(spec: SynthSpec, idx: int, real: Real, partner: Real) -> bytes:
    """This photo with its face box redrawn by a generator, identity drifting."""
    rng = _rng(spec, idx, _SOURCES.index("inpainting"))
    t = rng.uniform(0.3, 0.7)
    shift = rng.uniform(-1, 1, 3).astype(np.float32)
    quality = int(rng.integers(*_FAKE_QUALITY, endpoint=True))
    d, n = spec.difficulty, spec.fake_size
    identity = real.identity + t * (partner.identity - real.identity)
    face = render_portrait(identity, real.shot, n, n)
    grid = _INP_TILE * _tile(n, _INP_PERIOD, checker=False)
    face = _decoder_trace(face, d, _INP_SMOOTH, grid)
    face = face * (1 + _INP_SHIFT * d * shift)
    # The photo around it keeps its noise, shrunk by the downscale to the square.
    sigma = real.shot.params["noise"] / max(1.0, min(real.size) / n)
    face = add_sensor_noise(face, sigma * max(0.0, 1 - d / 2), rng)
    mask = _box_mask(face_frame(real.identity, real.shot), n, _INP_FEATHER / (1 + d))
    img = real.square + mask[..., None] * (face - real.square)
    return _jpeg(img, quality)


def _insight(spec: SynthSpec, idx: int, real: Real, partner: Real) -> bytes:
    """The partner's photo with this photo's inner face swapped in."""
    rng = _rng(spec, idx, _SOURCES.index("insight"))
    cast = rng.uniform(-1, 1, 3).astype(np.float32)
    seam = rng.choice((-1.0, 1.0))
    quality = int(rng.integers(*_FAKE_QUALITY, endpoint=True))
    d, n = spec.difficulty, spec.fake_size
    # Warp by normalised face coordinates, so eyes land on eyes whatever the poses.
    u, v, _ = image_grid(n, n)
    dst = face_frame(partner.identity, partner.shot)
    src = face_frame(real.identity, real.shot)
    x, y = to_face(u, v, dst)
    nx, ny = x / dst.rx, y / dst.ry
    su, sv = from_face(nx * src.rx, ny * src.ry, src)
    face = sample_bilinear(real.square, (su + 1) * n / 2 - 0.5, (sv + 1) * n / 2 - 0.5)
    r = np.sqrt((nx / 0.8) ** 2 + ((ny - 0.2) / 0.7) ** 2)  # brows to chin
    mask = np.clip(0.5 - (r - 1) / (_INS_FEATHER / (1 + d)), 0, 1)
    # Match on the cheeks and nose, which both faces show as skin.
    face = match_colour(face, partner.square, r < 0.7) * (1 + _INS_CAST * d * cast)
    # The swapper works on a small crop: lose detail, then blur a little more.
    low = max(8, round(n / (1 + d)))
    face = gaussian_blur(resize(resize(face, low, low), n, n), _INS_BLUR * d * n / 128)
    img = partner.square + mask[..., None] * (face - partner.square)
    ridge = np.exp(-(((r - 1) / 0.06) ** 2))
    img = img + _INS_SEAM * d * seam * ridge[..., None]
    return _jpeg(img, quality)


# --- fingerprints and helpers ------------------------------------------------


def _decoder_trace(img: np.ndarray, d: float, smooth: float, tile: np.ndarray):
    """A generator's output: upsampled from low resolution, smooth, periodic."""
    n = img.shape[0]
    low = resize(resize(img, n // _LOWRES, n // _LOWRES), n, n)
    img = img + min(d, 1.0) * (low - img)
    img = gaussian_blur(img, smooth * d * n / 128)
    return img * (1 + d * tile[..., None])


def _tile(n: int, period: float, checker: bool) -> np.ndarray:
    """A periodic (n, n) pattern in [-1, 1]: a checkerboard, or a grid of lines."""
    t = np.cos(2 * np.pi * (np.arange(n) + 0.5) / (period * n / 128))
    if checker:
        return np.outer(t, t).astype(np.float32)
    return (0.5 * (t[:, None] + t[None, :])).astype(np.float32)


def _box_mask(fr: FaceFrame, n: int, feather: float) -> np.ndarray:
    """SD inpainting's mask: the face's bounding box with feathered edges."""
    u, v, _ = image_grid(n, n)
    half_w = 1.25 * fr.scale * fr.rx
    half_h = 1.2 * fr.scale * fr.ry
    mid = fr.cy - 0.1 * fr.scale * fr.ry  # raised a little to take in the brow
    mu = np.clip((half_w - np.abs(u - fr.cx)) / feather + 0.5, 0, 1)
    mv = np.clip((half_h - np.abs(v - mid)) / feather + 0.5, 0, 1)
    return mu * mv


def _square(jpeg: bytes, n: int) -> np.ndarray:
    """Decodes a JPEG, crops its central square and resizes it to n x n."""
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    im = im.crop(box).resize((n, n), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    arr = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _clear_previous(out: Path) -> None:
    """Removes an earlier SynthDFF's sources; refuses to touch anything else."""
    targets = [out / s for s in _SOURCES] + [out / f"{s}.zip" for s in _SOURCES]
    present = [t for t in targets if t.exists()]
    if present and not (out / _MARKER).exists():
        raise FileExistsError(f"{present[0]} exists and {out} holds no {_MARKER}")
    for t in present:
        if t.is_dir():
            shutil.rmtree(t)
        else:
            t.unlink()


def _zip_folder(folder: Path, dest: Path, source: str) -> None:
    """Stores a staged source as `<source>/<NN>/<file>.jpg` entries, sorted."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    part = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
        for rel in files:
            # A fixed timestamp keeps the archive byte-identical between runs.
            info = zipfile.ZipInfo(f"{source}/{rel}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, (folder / rel).read_bytes())
    os.replace(part, dest)


def write_synth(out: Path, spec, cfg, as_zip: bool = False, progress: bool = True) -> Path:
    """Synthesize and save the grouped split beside the data (``splits.csv``)."""
    from dfflab.data.layout import FAKE_SOURCES, REAL_SOURCE
    from dfflab.data.reader import list_entries
    from dfflab.data.splits import assign_splits, write_splits

    synthesize(out, spec, as_zip=as_zip, progress=progress)
    entries = list_entries(out, (REAL_SOURCE, *FAKE_SOURCES))
    splits = assign_splits(((e.relpath, e.source) for e in entries), cfg.data.val_frac,
                           cfg.data.test_frac, cfg.data.split_seed)
    write_splits(out / "splits.csv", splits)
    return out
