"""Draws SynthDFF's procedural portraits with numpy alone.

:func:`render_portrait` paints a portrait from an identity and a shot (see
``synth_faces.py``) in layers: background, body and hair behind, the shaded face,
fringe and beard, eyes, nose and mouth, then light, white balance and lens blur.
Every edge is anti-aliased over about one pixel, so the same person drawn at any
size looks the same.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from dfflab.data.imageops import gaussian_blur
from dfflab.data.synth_faces import (
    BG_GRID,
    IDENTITY_RANGES,
    FaceFrame,
    Shot,
    face_frame,
    image_grid,
    named,
    to_face,
)

_BLUSH = np.array([0.85, 0.35, 0.35], dtype=np.float32)
_LASH = np.array([0.10, 0.07, 0.06], dtype=np.float32)
_WHITE = np.array([0.92, 0.90, 0.87], dtype=np.float32)
_PUPIL = np.zeros(3, dtype=np.float32)
_LIP_TINT = np.array([0.1, 1.0, 0.9], dtype=np.float32)  # lips redden: less G, B
_SKIN = np.array(
    [
        [0.96, 0.82, 0.72],
        [0.90, 0.71, 0.58],
        [0.78, 0.57, 0.42],
        [0.60, 0.41, 0.28],
        [0.42, 0.27, 0.18],
        [0.30, 0.19, 0.13],
    ]
)
_HAIR = np.array(
    [
        [0.06, 0.05, 0.05],
        [0.20, 0.13, 0.08],
        [0.38, 0.24, 0.14],
        [0.55, 0.25, 0.12],
        [0.80, 0.64, 0.40],
        [0.72, 0.70, 0.68],
    ]
)
_IRIS = np.array(
    [
        [0.20, 0.12, 0.07],
        [0.38, 0.24, 0.12],
        [0.45, 0.42, 0.22],
        [0.30, 0.45, 0.35],
        [0.30, 0.45, 0.65],
    ]
)



def render_portrait(
    identity: np.ndarray, shot: Shot, width: int, height: int, optics: bool = True
) -> np.ndarray:
    """Draws a noise-free portrait; sensor noise is added by `add_sensor_noise`.

    Args:
        identity: Vector from `sample_identity` (or a blend of two).
        shot: From `sample_shot`.
        width: Image width in pixels.
        height: Image height in pixels.
        optics: Apply the shot's lens blur (off for a generator's clean output).

    Returns:
        (H, W, 3) float32 RGB in [0, 1].
    """
    f, s = named(identity, IDENTITY_RANGES), shot.params
    u, v, px = image_grid(width, height)
    fr = face_frame(identity, shot)
    x, y = to_face(u, v, fr)
    warm = 1 + 0.04 * f["skin_warm"] * np.array([1, 0, -1], dtype=np.float32)
    c = _Sketch(
        img=_background(u, v, s, shot),
        x=x,
        y=y,
        aa=px / fr.scale,
        fr=fr,
        f=f,
        s=s,
        skin=_palette(_SKIN, f["skin"]) * warm,
        hair=_palette(_HAIR, f["hair_tone"]),
    )
    _draw_body(c)
    face = _draw_face(c)
    _draw_hair_front(c, face)
    _draw_eyes(c)
    _draw_nose_mouth(c)
    _light(c.img, u, v, s)
    img = gaussian_blur(c.img, s["blur"] / px) if optics else c.img
    return np.clip(img, 0, 1)



# --- drawing -----------------------------------------------------------------


@dataclass(eq=False)
class _Sketch:
    """What the drawing steps of one portrait share."""

    img: np.ndarray  # (H, W, 3) float32, painted in place
    x: np.ndarray  # (H, W) face units: origin at the face centre, upright
    y: np.ndarray
    aa: float  # one pixel in face units: the width of every soft edge
    fr: FaceFrame
    f: dict[str, float]  # identity parameters
    s: dict[str, float]  # shot parameters
    skin: np.ndarray  # (3,)
    hair: np.ndarray  # (3,)


def _disc(x, y, rx, ry, aa):
    """Soft ellipse coverage in [0, 1], anti-aliased over about `aa`."""
    r = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    return np.clip(0.5 - (r - 1) * np.minimum(rx, ry) / aa, 0, 1)


def _paint(img, alpha, colour):
    """Alpha-blends `colour` over `img` in place, only where alpha > 0 (speed)."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    win = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    colour = np.asarray(colour, dtype=np.float32)
    if colour.ndim == 3:
        colour = colour[win]
    img[win] += alpha[win][..., None] * (colour - img[win])


def _palette(colours: np.ndarray, t: float) -> np.ndarray:
    pos = t * (len(colours) - 1)
    i = min(int(pos), len(colours) - 2)
    return (colours[i] + (pos - i) * (colours[i + 1] - colours[i])).astype(np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _background(u, v, s, shot):
    c1 = _hsv(s["bg_hue"], s["bg_sat"], s["bg_val"])
    c2 = _hsv(s["bg_hue2"], s["bg_sat"], s["bg_val2"])
    a = s["bg_angle"]
    t = np.clip(0.5 + 0.35 * (u * np.cos(a) + v * np.sin(a)), 0, 1)
    img = c1 + t[..., None] * (c2 - c1)
    img += s["bg_noise"] * _lowfreq(shot.grid, u[0], v[:, 0])
    for bx, by, br, hue, val, alpha in shot.blobs[: int(s["blobs"])]:
        cx, cy, r = 3 * bx - 1.5, 3 * by - 1.5, 0.15 + 0.5 * br
        g = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * r * r)) * 0.6 * alpha
        _paint(img, g, _hsv(hue, 0.4, val))
    return img.astype(np.float32)


def _lowfreq(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear upsampling of `grid` over the fixed window [-1.6, 1.6]^2 of image
    units, so the wall behind is the same whatever the photo's size or crop."""

    def weights(t):  # (N, BG_GRID) linear interpolation weights
        pos = np.clip((t + 1.6) * (BG_GRID - 1) / 3.2, 0, BG_GRID - 1)
        return np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(BG_GRID)))

    out = weights(v) @ grid.transpose(2, 0, 1) @ weights(u).T  # (3, H, W)
    return out.transpose(1, 2, 0).astype(np.float32)


def _hair_colour(c: _Sketch) -> np.ndarray:
    """The hair colour with wavy strands, (H, W, 3)."""
    strands = 1 + 0.1 * np.sin(35 * c.x / c.fr.rx + 3 * np.sin(9 * c.y))
    return c.hair * strands[..., None]


def _hair_outline(c: _Sketch) -> np.ndarray:
    rx, ry, hv = c.fr.rx, c.fr.ry, c.f["hair_volume"]
    return _disc(c.x, c.y + 0.1 * ry, rx * hv, ry * (0.95 + 0.3 * (hv - 1)), c.aa)


def _draw_body(c: _Sketch) -> None:
    """Clothes, hair behind the head, neck and ears."""
    x, y, aa, rx, ry = c.x, c.y, c.aa, c.fr.rx, c.fr.ry
    cloth = _hsv(c.s["cloth_hue"], c.s["cloth_sat"], c.s["cloth_val"])
    shade = 1 + 0.25 * c.s["light_str"] * np.clip(x / (3 * rx), -1, 1)
    body = _disc(x, y - 2.25 * ry, 3.0 * rx, 1.25 * ry, aa)
    _paint(c.img, body, cloth * shade[..., None])
    back, hv, length = _hair_outline(c), c.f["hair_volume"], c.f["hair_length"]
    if length > 0:  # long hair falls over the shoulders, behind the neck
        dy, h = 0.45 * ry * length, ry * (0.6 + 0.6 * length)
        long = _disc(x, y - dy, 1.05 * rx * hv, h, aa) * min(1.0, 4 * length)
        back = np.maximum(back, long)
    _paint(c.img, back, _hair_colour(c))
    _paint(c.img, _disc(x, y - 1.0 * ry, 0.5 * rx, 0.75 * ry, aa), c.skin * 0.8)
    for side in (-1, 1):  # ears, behind the face outline
        ear = _disc(x - side * 0.98 * rx, y - 0.05 * ry, 0.14 * rx, 0.2 * ry, aa)
        _paint(c.img, ear, c.skin * 0.88)


def _draw_face(c: _Sketch) -> np.ndarray:
    """Paints the shaded face oval; returns its coverage."""
    x, y, rx, ry, a = c.x, c.y, c.fr.rx, c.fr.ry, c.s["light_angle"]
    # Narrow the lower half into a chin: the oval becomes an egg.
    rxe = rx * (1 - 0.18 * np.clip(y / ry, 0, 1) ** 1.5)
    face = _disc(x, y, rxe, ry, c.aa)
    nx, ny = np.clip(x / rxe, -1, 1), np.clip(y / ry, -1, 1)
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))  # the face as a half-ellipsoid
    lit = nx * np.cos(a) + ny * np.sin(a)
    shade = 0.8 + 0.2 * nz + 0.5 * c.s["light_str"] * lit
    _paint(c.img, face, c.skin * shade[..., None])
    for side in (-1, 1):  # cheeks catch a little blood
        d2 = (x - side * 0.55 * rx) ** 2 + (y - 0.25 * ry) ** 2
        _paint(c.img, 0.08 * np.exp(-d2 / (0.04 * rx)) * face, _BLUSH)
    return face


def _draw_hair_front(c: _Sketch, face: np.ndarray) -> None:
    """The fringe over the forehead, then any beard."""
    x, y, rx, ry = c.x, c.y, c.fr.rx, c.fr.ry
    wave = 0.05 * ry * np.sin(3 * x / rx + c.f["fringe_phase"])
    cap = _hair_outline(c) * np.clip(
        (c.f["hairline"] * ry + wave - y) / c.aa + 0.5, 0, 1
    )
    _paint(c.img, cap, _hair_colour(c))
    beard = np.clip(c.f["beard"], 0, 1)
    if beard > 0:
        jaw = _disc(x, y - 0.62 * ry, 0.95 * rx, 0.55 * ry, 6 * c.aa) * face
        _paint(c.img, 0.55 * beard * jaw, c.hair)


def _draw_eyes(c: _Sketch) -> None:
    """Brows, lids, whites, irises and pupils; they slide with the head's yaw."""
    rx, ry, aa, f = c.fr.rx, c.fr.ry, c.aa, c.f
    x, y = c.x - c.s["yaw"] * rx, c.y - f["eye_y"] * ry  # origin between the eyes
    es = f["eye_size"] * rx
    iris = _palette(_IRIS, f["eye_tone"])
    for side in (-1, 1):
        ex = x - side * f["eye_dx"] * rx
        brow_y = y + f["brow_gap"] * ry + side * 0.15 * ex  # brows tilt outwards
        brow = _disc(ex, brow_y, 1.3 * es, f["brow_thick"] * ry, aa)
        _paint(c.img, 0.9 * brow, c.hair * 0.8)
        lid = _disc(ex, y + 0.1 * es, 1.12 * es, 0.62 * es, aa) * (y < 0)
        _paint(c.img, 0.7 * lid, _LASH)
        white = _disc(ex, y, es, 0.5 * es, aa)
        _paint(c.img, white, _WHITE)
        _paint(c.img, white * _disc(ex, y, 0.48 * es, 0.48 * es, aa), iris)
        _paint(c.img, white * _disc(ex, y, 0.2 * es, 0.2 * es, aa), _PUPIL)


def _draw_nose_mouth(c: _Sketch) -> None:
    """The nose as a shadow away from the light plus a lit tip; then the lips."""
    rx, ry, aa, f, skin = c.fr.rx, c.fr.ry, c.aa, c.f, c.skin
    x = c.x - c.s["yaw"] * rx
    ey, ny = f["eye_y"] * ry, (f["eye_y"] + f["nose_len"]) * ry
    nw = f["nose_w"] * rx
    side = 1.0 if np.cos(c.s["light_angle"]) >= 0 else -1.0
    ridge = _disc(
        x + side * 0.5 * nw, c.y - (ey + ny) / 2, 0.35 * nw, (ny - ey) / 2, 4 * aa
    )
    _paint(c.img, 0.25 * ridge, skin * 0.6)
    tip = _disc(x, c.y - ny + 0.04 * ry, 0.6 * nw, 0.06 * ry, 3 * aa)
    _paint(c.img, 0.5 * tip, skin * 1.08)
    for k in (-1, 1):
        nostril = _disc(x - k * 0.5 * nw, c.y - ny, 0.22 * nw, 0.09 * nw, aa)
        _paint(c.img, 0.55 * nostril, skin * 0.4)
    mw, lh = f["mouth_w"] * rx, f["lip_h"] * ry
    # A smile raises the corners: bend the mouth's vertical coordinate.
    y = c.y - f["mouth_y"] * ry + f["smile"] * 0.06 * ry * (x / mw) ** 2
    lips = skin * (1 - 0.3 * f["lip_red"] * _LIP_TINT)
    _paint(c.img, _disc(x, y, mw, lh, aa), lips * 0.9)
    _paint(c.img, 0.8 * _disc(x, y, 0.95 * mw, 0.18 * lh, aa), skin * 0.35)


def _light(img, u, v, s):
    """Directional light falloff, lens vignetting, white balance and exposure."""
    a = s["light_angle"]
    gain = 1 + 0.25 * s["light_str"] * (u * np.cos(a) + v * np.sin(a))
    gain *= 1 - 0.08 * (u * u + v * v)
    wb = np.array([1 + 0.07 * s["wb"], 1.0, 1 - 0.07 * s["wb"]]) * s["exposure"]
    img *= (gain[..., None] * wb).astype(np.float32)

