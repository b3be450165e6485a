"""SynthDFF's face model: who a person is and how a photo of them was taken.

A portrait comes from two parameter vectors: an *identity* (who: face shape, skin,
hair, eyes, nose, mouth) and a *shot* (how the photo was taken: pose, light,
background, clothes, camera). Both are uniform vectors in [0, 1]^D mapped onto the
named ranges below, so identities blend by linear interpolation (the inpainting fake
needs that) and everything a photo shows follows from its two vectors. The drawing
itself is in ``synth_portrait.py``.

Coordinates: u runs right and v down; the central square of any image spans [-1, 1]
in both, so the centre crop of a real lines up exactly with a square render of the
same shot (the inpainting and insight fakes rely on it).

    ident, shot = sample_identity(rng), sample_shot(rng)
    img = render_portrait(ident, shot, width=160, height=200)  # (H, W, 3) in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Identity ranges. Lengths are in face units: rx is the face's half-width, ry its
# half-height (chin at +ry); features are placed relative to them.
IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_rx": (0.36, 0.44),  # in image units (central square = [-1, 1])
    "face_aspect": (1.18, 1.42),  # ry / rx
    "jaw": (0.05, 0.25),  # how much the face narrows towards the chin
    "skin": (0.0, 1.0),  # position along _SKIN, light to dark
    "skin_warm": (-1.0, 1.0),  # olive to ruddy undertone
    "hair_tone": (0.0, 1.0),  # position along _HAIR
    "hair_volume": (1.04, 1.32),  # hair outline relative to the head
    "hair_length": (-0.6, 1.2),  # > 0: hair falls below the ears
    "hairline": (-0.80, -0.50),  # fringe height, ry units
    "fringe_phase": (0.0, 6.3),  # where the fringe's waves sit
    "eye_y": (-0.20, -0.05),  # ry units
    "eye_dx": (0.36, 0.46),  # half the eye spacing, rx units
    "eye_size": (0.17, 0.23),  # eye half-width, rx units
    "eye_tone": (0.0, 1.0),  # position along _IRIS
    "brow_gap": (0.13, 0.20),  # brow above eye, ry units
    "brow_thick": (0.022, 0.045),  # ry units
    "nose_len": (0.30, 0.42),  # eye line to nostrils, ry units
    "nose_w": (0.15, 0.23),  # half-width, rx units
    "mouth_y": (0.50, 0.64),  # ry units
    "mouth_w": (0.30, 0.42),  # half-width, rx units
    "lip_h": (0.05, 0.085),  # half-height of both lips, ry units
    "lip_red": (0.0, 1.0),
    "smile": (-0.4, 1.0),
    "beard": (-1.5, 1.0),  # > 0: stubble or beard strength
}

SHOT_RANGES: dict[str, tuple[float, float]] = {
    "cx": (-0.12, 0.12),  # face centre, image units
    "cy": (-0.04, 0.12),
    "rot": (-0.22, 0.22),  # head roll, radians (about +-12 degrees)
    "scale": (0.85, 1.10),
    "yaw": (-0.16, 0.16),  # features slide sideways, rx units: a cheap head turn
    "light_angle": (0.0, 2 * np.pi),
    "light_str": (0.05, 0.45),
    "exposure": (0.80, 1.12),
    "wb": (-1.0, 1.0),  # white balance, cool to warm
    "bg_hue": (0.0, 1.0),
    "bg_hue2": (0.0, 1.0),
    "bg_sat": (0.0, 0.55),
    "bg_val": (0.25, 0.95),
    "bg_val2": (0.25, 0.95),
    "bg_angle": (0.0, 2 * np.pi),
    "bg_noise": (0.0, 0.12),  # low-frequency texture amplitude
    "blobs": (0.0, 4.99),  # how many soft blobs (lamps, plants, people) behind
    "cloth_hue": (0.0, 1.0),
    "cloth_sat": (0.0, 0.7),
    "cloth_val": (0.10, 0.85),
    "noise": (0.004, 0.03),  # sensor noise sigma, fraction of full scale
    "blur": (0.0, 0.012),  # lens/focus blur sigma, image units (not pixels)
}

BG_GRID = 6  # background texture grid side
BG_BLOBS = 4  # most blobs a background can hold


@dataclass(frozen=True, eq=False)
class Shot:
    """How one photo was taken: SHOT_RANGES values plus the background's texture."""

    z: np.ndarray  # (len(SHOT_RANGES),) uniform in [0, 1]
    grid: np.ndarray  # (BG_GRID, BG_GRID, 3) low-frequency background noise in [-1, 1]
    blobs: np.ndarray  # (BG_BLOBS, 6): x, y, radius, hue, value, alpha in [0, 1]

    @property
    def params(self) -> dict[str, float]:
        return named(self.z, SHOT_RANGES)


@dataclass(frozen=True)
class FaceFrame:
    """Where a face sits in image units: centre, roll, scale and half-axes."""

    cx: float
    cy: float
    rot: float
    scale: float
    rx: float
    ry: float


def sample_identity(rng: np.random.Generator) -> np.ndarray:
    """Draws an identity: a uniform vector over IDENTITY_RANGES."""
    return rng.random(len(IDENTITY_RANGES))


def sample_shot(rng: np.random.Generator) -> Shot:
    """Draws a shot: pose, light, background, clothes and camera of one photo."""
    z = rng.random(len(SHOT_RANGES))
    grid = rng.uniform(-1, 1, (BG_GRID, BG_GRID, 3))
    return Shot(z, grid, rng.random((BG_BLOBS, 6)))


def named(z: np.ndarray, ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Maps a uniform vector onto the named ranges."""
    return {
        k: lo + float(t) * (hi - lo)
        for t, (k, (lo, hi)) in zip(z, ranges.items(), strict=True)
    }


def face_frame(identity: np.ndarray, shot: Shot) -> FaceFrame:
    """The face's placement for this identity in this shot."""
    f, s = named(identity, IDENTITY_RANGES), shot.params
    rx = f["face_rx"]
    return FaceFrame(s["cx"], s["cy"], s["rot"], s["scale"], rx, rx * f["face_aspect"])


def to_face(u: np.ndarray, v: np.ndarray, fr: FaceFrame) -> tuple[np.ndarray, ...]:
    """Image units -> face units (origin at the face centre, upright, unscaled)."""
    du, dv = u - fr.cx, v - fr.cy
    c, s = np.cos(fr.rot), np.sin(fr.rot)
    return (c * du + s * dv) / fr.scale, (c * dv - s * du) / fr.scale


def from_face(x: np.ndarray, y: np.ndarray, fr: FaceFrame) -> tuple[np.ndarray, ...]:
    """Face units -> image units; the inverse of `to_face`."""
    c, s = np.cos(fr.rot), np.sin(fr.rot)
    x, y = x * fr.scale, y * fr.scale
    return fr.cx + c * x - s * y, fr.cy + s * x + c * y


def image_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel-centre coordinates (H, W) in image units, and one pixel's size."""
    half = min(width, height) / 2
    u = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / half
    v = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / half
    uu, vv = np.meshgrid(u, v)
    return uu, vv, 1 / half



def add_sensor_noise(img: np.ndarray, sigma: float, rng: np.random.Generator):
    """Adds Gaussian sensor noise; draws the same numbers whatever sigma is."""
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img + np.float32(sigma) * noise, 0, 1)

