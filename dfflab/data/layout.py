"""DeepFakeFace (DFF) layout facts shared by the reader, SynthDFF and every stage.

DFF (``OpenRL/DeepFakeFace`` on the Hugging Face hub) holds four zips, ``wiki.zip``
(real IMDB-WIKI photos) and one per fake generator, each with entries
``<source>/<NN>/<id>_<birth>_<year>.jpg``. The same relative path ``<NN>/<file>`` in all
four belongs to one real photo and its three fakes. The fakes at X's path were also
made from a partner photo Y (DFF paired its photos two by two), which the file names
don't say: the splits keep X and Y together (see ``splits.py`` and ``pairs.py``).

Files a dataset root may hold beside its images (all optional):

* ``splits.csv`` (``relpath,split``): the split to use, as is (SynthDFF writes one);
* ``partners.csv`` (``relpath,partner``): the photo each relative path's fakes were made from;
* ``groups.csv`` (``path,group``): files that show one person or come from one source
  video; ``path`` is relative to the root (``real/alice_1.jpg``, ``wiki/00/1_1980-01-01_2009.jpg``).
"""

from __future__ import annotations

import re

HF_REPO = "OpenRL/DeepFakeFace"
REAL_SOURCE = "wiki"
FAKE_SOURCES = ("inpainting", "insight", "text2img")
SOURCES = (REAL_SOURCE, *FAKE_SOURCES)
GENERIC_REAL = "real"  # source name of reals in the generic real/ + fake/<source>/ layout
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
SPLITS_FILE = "splits.csv"
PARTNERS_FILE = "partners.csv"
GROUPS_FILE = "groups.csv"
PAIRS_FILE = "pairs.csv"  # partners recovered from the pixels, written into the store
DFF_NAME = re.compile(r"^(?P<id>\d+)_(?P<birth>[\d-]+)_(?P<year>\d{4})\.jpe?g$", re.I)


def is_real_source(source: str) -> bool:
    return source in (REAL_SOURCE, GENERIC_REAL)


def label_of(source: str) -> int:
    """0 for reals, 1 for fakes."""
    return 0 if is_real_source(source) else 1


def source_order(sources) -> list[str]:
    """Reals first, then DFF's fake sources in their usual order, then any others sorted."""
    present = set(sources)
    known = [s for s in (REAL_SOURCE, GENERIC_REAL, *FAKE_SOURCES) if s in present]
    return known + sorted(present - set(known))
