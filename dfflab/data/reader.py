"""Read DFF as users have it: four source folders, four zips, or a generic tree.

Layouts accepted under a root folder:

* DFF folders: ``wiki/``, ``inpainting/``, ``insight/``, ``text2img/``, each ``<NN>/<file>.jpg``.
* DFF zips: ``wiki.zip`` ... ``text2img.zip`` holding ``<source>/<NN>/<file>.jpg``; read in
  place, never extracted. Folders and zips may be mixed (a folder wins over its zip).
* Generic: ``real/**`` and ``fake/<source>/**`` for users' own data. A real and a fake
  with the same path below ``real/`` and ``fake/<source>/`` form one group.

:func:`list_entries` finds the files; :func:`decode` turns bytes into an RGB array,
raising :class:`BadImage` with a reason for anything that can't be used as is.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dfflab.data.layout import (
    FAKE_SOURCES,
    GENERIC_REAL,
    IMAGE_SUFFIXES,
    REAL_SOURCE,
    SOURCES,
)

MAX_PIXELS = 40_000_000  # refuse decompression bombs: DFF's largest reals are far below this
MIN_SIDE = 16  # a 1x1 or 8x8 "photo" carries nothing to learn from


class DataError(RuntimeError):
    """The dataset as a whole can't be read (missing source, broken zip, too many bad files)."""


class BadImage(ValueError):
    """One file can't be used; the message is the reason recorded in the bad-files report."""


@dataclass(frozen=True)
class Entry:
    """One image file: where it is and what it is."""

    source: str  # wiki / inpainting / insight / text2img, or real / <fake source>
    relpath: str  # group key: the path below the source folder, e.g. "07/123_1980-01-02_2009.jpg"
    container: str  # a folder or a .zip path
    member: str  # the path inside the container
    file_size: int

    @property
    def label(self) -> int:
        return 0 if self.source in (REAL_SOURCE, GENERIC_REAL) else 1

    @property
    def location(self) -> str:
        """A path a person can find: ``folder/member`` or ``file.zip!member``."""
        sep = "!" if self.container.endswith(".zip") else "/"
        return f"{self.container}{sep}{self.member}"


def detect_layout(root: Path | str) -> str:
    """``dff`` or ``generic``; raises DataError explaining what was expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root not found or not a folder: {root}")
    if (root / "real").is_dir() and (root / "fake").is_dir():
        return "generic"
    if any((root / s).is_dir() or (root / f"{s}.zip").exists() for s in SOURCES):
        return "dff"
    raise DataError(
        f"{root}: no dataset found. Expected DFF's folders or zips "
        f"({', '.join(SOURCES)}; e.g. {root}/wiki/00/*.jpg or {root}/wiki.zip) "
        f"or a generic tree ({root}/real/** and {root}/fake/<source>/**)."
    )


def list_entries(root: Path | str, sources: tuple[str, ...] | None = None) -> list[Entry]:
    """Every image file under ``root``, sorted by (source, relpath).

    Args:
        root: the dataset folder.
        sources: DFF only: which sources must be present (default: all four).

    Raises:
        DataError: a required source is missing, or a zip is not a zip.
    """
    root = Path(root)
    layout = detect_layout(root)
    entries: list[Entry] = []
    if layout == "generic":
        entries += _folder_entries(root / "real", GENERIC_REAL)
        fakes = sorted(p for p in (root / "fake").iterdir() if p.is_dir())
        if not fakes:
            raise DataError(f"{root}/fake has no <source> folders")
        for d in fakes:
            entries += _folder_entries(d, d.name)
    else:
        for source in sources or SOURCES:
            folder, zpath = root / source, root / f"{source}.zip"
            if folder.is_dir():
                found = _folder_entries(folder, source)
            elif zpath.exists():
                found = _zip_entries(zpath, source)
            else:
                raise DataError(f"{root}: source '{source}' is missing (neither {folder}/ nor {zpath}). "
                                f"DFF needs {', '.join(SOURCES)}; `dfflab data download` fetches them.")
            if not found:
                raise DataError(f"{folder if folder.is_dir() else zpath}: source '{source}' holds no images")
            entries += found
    return sorted(entries, key=lambda e: (e.source, e.relpath))


def _folder_entries(folder: Path, source: str) -> list[Entry]:
    out = []
    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."):
            rel = p.relative_to(folder).as_posix()
            out.append(Entry(source, rel, str(folder), rel, p.stat().st_size))
    return out


def _zip_entries(zpath: Path, source: str) -> list[Entry]:
    try:
        with zipfile.ZipFile(zpath) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zpath}: not a readable zip file ({e}); re-download it") from None
    out = []
    prefix = f"{source}/"
    for info in infos:
        name = info.filename
        if info.is_dir() or "__MACOSX" in name or Path(name).name.startswith("."):
            continue
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = name[len(prefix):] if name.startswith(prefix) else name
        out.append(Entry(source, rel, str(zpath), name, info.file_size))
    return out


class EntryReader:
    """Reads entry bytes, keeping zips open (one handle per process, opened lazily)."""

    def __init__(self) -> None:
        self._zips: dict[str, zipfile.ZipFile] = {}

    def read(self, e: Entry) -> bytes:
        if e.container.endswith(".zip"):
            zf = self._zips.get(e.container)
            if zf is None:
                zf = self._zips[e.container] = zipfile.ZipFile(e.container)
            return zf.read(e.member)
        return (Path(e.container) / e.member).read_bytes()

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()


@dataclass
class Decoded:
    """A decoded image and the metadata the shortcut audit needs."""

    rgb: np.ndarray  # (H, W, 3) uint8
    width: int
    height: int
    mode: str  # the file's own PIL mode (RGB, L, CMYK, RGBA, I;16, ...)
    jpeg_quality: int  # estimated from the quantisation tables; -1 if not a JPEG


def decode(data: bytes, name: str = "") -> Decoded:
    """Decode image bytes to RGB uint8, converting what can be converted cleanly.

    Grayscale and CMYK become RGB; alpha is composited on white; 16-bit and float
    images are scaled to 8 bits; EXIF orientation is applied.

    Raises:
        BadImage: empty, truncated, corrupt or non-image data, too small (< MIN_SIDE),
            or a decompression bomb (> MAX_PIXELS).
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImage(f"decompression bomb refused: {w}x{h} = {w * h:,} px > {MAX_PIXELS:,}")
            img.load()
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb refused: {e}") from None
    except Image.DecompressionBombWarning as e:
        raise BadImage(f"decompression bomb refused: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"corrupt or truncated image ({e})") from None
    mode = img.mode
    quality = estimate_jpeg_quality(img)
    if min(w, h) < MIN_SIDE:
        raise BadImage(f"image too small: {w}x{h} (needs at least {MIN_SIDE} px a side)")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block is not worth losing the photo for
        pass
    return Decoded(_to_rgb(img), img.size[0], img.size[1], mode, quality)


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(a.max()), 1.0)
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


# IJG standard luminance quantisation table (quality 50), natural order.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


def estimate_jpeg_quality(img: Image.Image) -> int:
    """IJG quality (1..100) that best explains the luminance table; -1 if not a JPEG.

    Table entries are stored in zig-zag order by PIL; comparing sums makes the order
    irrelevant.
    """
    q = getattr(img, "quantization", None)
    if img.format != "JPEG" or not q or 0 not in q:
        return -1
    table = np.asarray(q[0], dtype=np.float64)
    best, err = -1, np.inf
    for quality in range(1, 101):
        scale = 5000 / quality if quality < 50 else 200 - 2 * quality
        std = np.clip(np.floor((_STD_LUMA * scale + 50) / 100), 1, 255)
        e = abs(std.sum() - table.sum())
        if e < err:
            best, err = quality, e
    return best


def reencode_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` saved as a JPEG at ``quality`` (4:2:0 chroma) and decoded again.

    ``data.jpeg-quality`` sends every image through this before crop and resize, so
    every image's last compression is the same. It does not erase an earlier, stronger
    compression: double-compression traces of a low original quality can survive.
    """
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def load_pixels(data: bytes, name: str, size: int, jpeg_quality: int = 0) -> tuple[np.ndarray, Decoded]:
    """File bytes -> the (size, size, 3) uint8 image every stage sees, and the decoded file.

    Decode, re-encode at ``jpeg_quality`` when it is not 0, centre-crop and resize:
    exactly what ``prepare`` stores, so scoring new files must go through it too. The
    returned :class:`Decoded` holds the file's metadata and the (re-encoded) full image.
    """
    d = decode(data, name)
    if jpeg_quality:
        d = replace(d, rgb=reencode_jpeg(d.rgb, jpeg_quality))
    return crop_resize(d.rgb, size), d


def squash(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole image resized to ``size`` x ``size``, aspect ratio ignored (box filter).

    DFF resized each real photo to 512x512 this way before swapping a face in, so this
    thumbnail of a real lines up with its insight fakes (``pairs.py``).
    """
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def crop_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (antialiased bicubic).

    Every image, real or fake, goes through exactly this, so a detector can't see the
    native size or aspect ratio (DFF's reals vary, its fakes are all 512x512).
    """
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(rgb)
    out = img.resize((size, size), Image.Resampling.BICUBIC,
                     box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


__all__ = ["FAKE_SOURCES", "BadImage", "DataError", "Decoded", "Entry", "EntryReader", "crop_resize",
           "decode", "detect_layout", "estimate_jpeg_quality", "list_entries", "load_pixels",
           "reencode_jpeg", "squash"]
