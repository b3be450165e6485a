"""SynthDFF's images: a real photo and its three fakes, each made the way DFF made it.

DFF pairs every real photo X with a partner Y; the fakes stored at X's path are made
from X and Y. Each leaves a fingerprint whose strength grows with
`SynthSpec.difficulty` (0: next to none, 2: blatant):

- text2img: the partner's identity drawn whole, as if at half resolution and
  upsampled, with the decoder's periodic checkerboard, smoothed skin, no sensor noise
  and boosted saturation.
- inpainting: this photo with its face box redrawn (identity blended towards the
  partner) the same way, but with a periodic *grid* of another period, a colour
  mismatch and no noise, blended in with a feathered box mask.
- insight: the partner's photo with this photo's face warped in, colour-matched to
  the partner's skin with a residual cast, blurred (swappers work at low resolution)
  and pasted with a seam at its edge.

Reals keep varied native sizes and web JPEG qualities; fakes are `fake_size` squares
saved at quality 90-95, the size and quality shortcuts DFF has too. Every image is
drawn from its own seeded random streams, so it depends only on the spec and its index.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from dfflab.data.imageops import gaussian_blur, match_colour, resize, sample_bilinear
from dfflab.data.synth_faces import (
    FaceFrame,
    Shot,
    add_sensor_noise,
    face_frame,
    from_face,
    image_grid,
    sample_identity,
    sample_shot,
    to_face,
)
from dfflab.data.synth_portrait import render_portrait

__all__ = ["SOURCE_STREAMS", "Real", "SynthSpec", "draw_fakes", "make_real"]

SOURCE_STREAMS = ("wiki", "inpainting", "insight", "text2img")  # index = rng stream
_IDENTITY = len(SOURCE_STREAMS)  # rng stream of a person's identity
_REAL_QUALITY = (60, 95)  # web photos
_FAKE_QUALITY = (90, 95)  # DFF saved its fakes at high quality
_MAX_ASPECT = 1.4

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
        draw_size: 0 (default): fakes are drawn at ``fake_size``. Else they are drawn at
            this side and resized up to ``fake_size`` before their JPEG is written: a
            scale test's cheap stand-in (drawing 512 px fakes runs at ~10 img/s on 2 cores)
            whose files have DFF's size and format but smoother content, and whose
            fingerprints are those of a ``draw_size`` SynthDFF, enlarged.
    """

    n_real: int = 1000
    seed: int = 0
    difficulty: float = 1.0
    fake_size: int = 128
    real_min: int = 80
    real_max: int = 224
    draw_size: int = 0

    def __post_init__(self):
        if not 1 <= self.n_real <= 900_000:
            raise ValueError(f"n_real must be in [1, 900000], got {self.n_real}")
        if self.seed < 0 or self.difficulty < 0:
            raise ValueError("seed and difficulty must be >= 0")
        if self.fake_size < 32 or not 32 <= self.real_min <= self.real_max:
            raise ValueError("need fake_size >= 32 and 32 <= real_min <= real_max")
        if self.draw_size and not 32 <= self.draw_size <= self.fake_size:
            raise ValueError(f"draw_size must be 0 or in [32, fake_size={self.fake_size}], got {self.draw_size}")

    def drawn(self) -> SynthSpec:
        """The spec the fakes are drawn with (``fake_size`` = ``draw_size`` when that is set)."""
        return replace(self, fake_size=self.draw_size, draw_size=0) if self.draw_size else self

    def record(self) -> dict:
        """The spec as SYNTHDFF.json holds it (``draw_size`` only when set, so older records still match)."""
        d = asdict(self)
        if not self.draw_size:
            d.pop("draw_size")
        return d




def _rng(spec: SynthSpec, idx: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, idx, stream])


def draw_fakes(spec: SynthSpec, idx: int, real: Real, partner: Real) -> dict[str, bytes]:
    """The JPEG bytes of real `idx` and its three fakes, keyed by DFF source name.

    `real` and `partner` come from :func:`make_real` with the same `spec`.
    """
    drawn, n = spec.drawn(), spec.fake_size

    def jpeg(img_quality: tuple[np.ndarray, int]) -> bytes:
        img, quality = img_quality
        return _jpeg(img if img.shape[0] == n else resize(img, n, n), quality)

    return {
        "wiki": real.jpeg,
        "inpainting": jpeg(_inpainting(drawn, idx, real, partner)),
        "insight": jpeg(_insight(drawn, idx, real, partner)),
        "text2img": jpeg(_text2img(drawn, idx, partner)),
    }


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
    return Real(identity, shot, data, (w, h), _square(data, spec.drawn().fake_size))


def _text2img(spec: SynthSpec, idx: int, partner: Real) -> tuple[np.ndarray, int]:
    """A new photo of the partner's identity, as a diffusion model would draw it."""
    rng = _rng(spec, idx, SOURCE_STREAMS.index("text2img"))
    shot = sample_shot(rng)
    quality = int(rng.integers(*_FAKE_QUALITY, endpoint=True))
    d, n = spec.difficulty, spec.fake_size
    img = render_portrait(partner.identity, shot, n, n)
    checker = _T2I_TILE * _tile(n, _T2I_PERIOD, checker=True)
    img = _decoder_trace(img, d, _T2I_SMOOTH, checker)
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + (1 + _T2I_SATURATE * d) * (img - grey)
    img = add_sensor_noise(img, shot.params["noise"] * max(0.0, 1 - d / 2), rng)
    return img, quality


def _inpainting(spec: SynthSpec, idx: int, real: Real, partner: Real) -> tuple[np.ndarray, int]:
    """This photo with its face box redrawn by a generator, identity drifting."""
    rng = _rng(spec, idx, SOURCE_STREAMS.index("inpainting"))
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
    return img, quality


def _insight(spec: SynthSpec, idx: int, real: Real, partner: Real) -> tuple[np.ndarray, int]:
    """The partner's photo with this photo's inner face swapped in."""
    rng = _rng(spec, idx, SOURCE_STREAMS.index("insight"))
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
    return img, quality


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

