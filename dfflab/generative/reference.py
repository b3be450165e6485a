"""The held-out reals the GAN is measured against: two disjoint sets per class, their features, the floor.

Set **A** (``gan.ref-n`` images per class) is what generated images are compared with;
set **B** (as many, disjoint from A) gives the **real-vs-real floor**: FID/KID of B
against A at the same n, what a generator indistinguishable from the data would score
with this many images. Both come from (``gan.ref-split``):

* ``test`` / ``val`` / ``heldout`` (val + test): the store's held-out rows of each class
  (never the train split), shuffled with a fixed seed; A = the first ref-n, B = the next.
* ``synth`` (SynthDFF only): a separate draw of the very SynthDFF spec the store was made
  from, with seed 1 instead of 0 (new identities, never in any split), prepared exactly
  like the store. The quick store holds 224 held-out images per class, fewer than the
  2 x 500 the two sets need; drawing more keeps every other stage's data unchanged.

Images reach the GAN's resolution as its training images do (:func:`gan_images`) and
are quantized to uint8 like generated images. Features per extractor and the floor are
cached in ``<results>/cache/gan-reference/`` (Inception at 299 px is the slow part).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dfflab.generative.metrics import VERSION, mean_of, score

REF_SPLITS = {"test": ("test",), "val": ("val",), "heldout": ("val", "test"), "synth": ()}
SYNTH_SEED = 1  # the store's SynthDFF is drawn with seed 0 (ensure_store)


def downscale(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float images (B, 3, S, S) in [0, 1] -> (B, 3, size, size), box-filtered.

    An integer factor uses average pooling (an exact box filter, no aliasing); any
    other ratio uses antialiased bilinear interpolation.
    """
    s = x.shape[-1]
    if s == size:
        return x
    if size > s:
        raise ValueError(f"gan.image-size={size} is larger than the store's {s} px images "
                         f"(raise data.image-size to at least {size})")
    if s % size == 0:
        return F.avg_pool2d(x, s // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def gan_images(store, rows: np.ndarray, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 (N, 3, size, size) store images at the GAN's resolution (what it trains on and is measured with)."""
    out = []
    for i in range(0, len(rows), chunk):
        x, _, _ = store.batch(rows[i:i + chunk])
        out.append((downscale(x.float() / 255, size) * 255).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros(0, 3, size, size, dtype=torch.uint8)


def synth_pool(cfg, n_per_class: int, progress: bool = True):
    """The prepared store of the extra SynthDFF draw (seed 1) with ``n_per_class`` images per class."""
    from dfflab.data import is_synth_root
    from dfflab.data.prepare import prepare
    from dfflab.data.store import Store
    from dfflab.data.synth import SynthSpec, synthesize
    from dfflab.files import read_json

    root = Path(cfg.data.root)
    if not is_synth_root(root):
        raise ValueError(f"gan.ref-split=synth needs SynthDFF data (data.root={root} is not a SynthDFF path); "
                         "use test, val or heldout")
    d = cfg.data
    spec = SynthSpec(n_real=n_per_class, seed=SYNTH_SEED, difficulty=d.difficulty, fake_size=d.fake_size,
                     real_min=d.real_min, real_max=d.real_max)
    pool = root.with_name(f"{root.name}-gan-heldout")
    meta = pool / "SYNTHDFF.json"
    if not meta.is_file() or read_json(meta).get("spec") != spec.record():
        synthesize(pool, spec, workers=d.workers, progress=progress)
    out = prepare(pool, pool.with_name(f"{pool.name}-store-{d.image_size}"), d.image_size, val_frac=0.0,
                  test_frac=0.0, max_bad_frac=d.max_bad_frac, workers=d.workers, jpeg_quality=d.jpeg_quality,
                  progress=progress)
    return Store(out)


def reference_rows(store, split: str, n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Rows of sets A and B per class: disjoint, ``n`` each, from the held-out ``split`` of ``store``.

    For ``synth`` ``store`` is the extra draw and every row is eligible.
    """
    if split not in REF_SPLITS:
        raise ValueError(f"gan.ref-split='{split}' (known: {', '.join(REF_SPLITS)})")
    eligible = np.isin(store.split, REF_SPLITS[split]) if REF_SPLITS[split] else np.ones(len(store), dtype=bool)
    a, b = {}, {}
    for c, name in enumerate(store.source_names):
        rows = np.flatnonzero(eligible & (store.source_ids == c))
        if len(rows) < 2 * n or n < 2:
            raise ValueError(f"gan.ref-n={n}: class {name} has {len(rows)} images in gan.ref-split={split} "
                             f"({store.path}); the two disjoint reference sets need {2 * max(n, 2)}. Lower "
                             "gan.ref-n" + (" or use gan.ref-split=synth (SynthDFF)" if split != "synth" else ""))
        rows = np.random.default_rng(seed + c).permutation(rows)
        a[name], b[name] = np.sort(rows[:n]), np.sort(rows[n:2 * n])
    return a, b


def _tag(extractor: nn.Module) -> str:
    """Identity of an extractor's weights and precision, for the cache key."""
    p = Path(getattr(extractor, "path", type(extractor).__name__))
    stat = f"{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.is_file() else ""
    return hashlib.sha1(f"{p.resolve()}:{stat}:{getattr(extractor, 'precision', '')}".encode()).hexdigest()[:10]


def score_settings(gc) -> dict:
    """The metric settings every score against a reference uses (one seed: paired replicates)."""
    return {"reps": gc.bootstrap, "subset_size": gc.kid_subset_size, "subsets": gc.kid_subsets, "seed": 0}


class Reference:
    """Features of sets A and B per extractor and class (cached on disk), and floors at any n.

    Attributes:
        source: where the reals came from (split, store, fingerprint, n per class, size).
        features: ``{extractor: {class: A features (ref-n, D)}}``.
    """

    def __init__(self, source: dict, features: dict, b_features: dict, settings: dict,
                 cache: dict[str, Path] | None = None):
        self.source, self.features, self._b, self.settings = source, features, b_features, settings
        self._cache = cache or {}  # {extractor: its features file}; floors are cached beside it
        self._floors: dict = {}

    def floor(self, extractor: str, n: int) -> dict | None:
        """``{class | "overall": score}`` of the first ``n`` of set B per class against set A (memoized).

        None when ``n`` exceeds set B (``gan.ref-n``): there is no floor at that n.
        """
        from dfflab.files import load_checkpoint, save_checkpoint

        key = (extractor, n)
        if key not in self._floors:
            feats = self._cache.get(extractor)
            path = feats.with_name(f"{feats.stem}-floor-n{n}-v{VERSION}.pt") if feats is not None else None
            if path is not None and path.is_file():
                self._floors[key] = load_checkpoint(path)["floor"]
            else:
                a, b = self.features[extractor], self._b[extractor]
                if n > min(len(v) for v in b.values()):
                    return None
                floor = {c: score(a[c], b[c][:n], **self.settings) for c in a}
                floor["overall"] = mean_of([floor[c] for c in a])
                self._floors[key] = floor
                if path is not None:
                    save_checkpoint(path, {"floor": floor})
        return self._floors[key]


def load_reference(cfg, store, extractors: dict[str, nn.Module], progress: bool = True) -> Reference:
    """Sets A and B of ``cfg.gan`` for ``store``'s classes, with features of every extractor (cached)."""
    from dfflab.files import load_checkpoint, save_checkpoint

    gc = cfg.gan
    pool = synth_pool(cfg, 2 * gc.ref_n, progress) if gc.ref_split == "synth" else store
    names = list(store.source_names)
    if list(pool.source_names) != names:
        raise ValueError(f"{pool.path}: classes {pool.source_names} differ from the store's {names}")
    rows = reference_rows(pool, gc.ref_split, gc.ref_n)
    source = {"split": gc.ref_split, "store": str(pool.path), "fingerprint": pool.fingerprint,
              "n_per_class": gc.ref_n, "image_size": gc.image_size}
    settings = score_settings(gc)
    cache_dir = Path(cfg.results) / "cache" / "gan-reference"
    feats_a, feats_b, paths = {}, {}, {}
    for name, ex in extractors.items():
        key = hashlib.sha1(repr((source, _tag(ex), settings)).encode()).hexdigest()[:16]
        path = paths[name] = cache_dir / f"{pool.fingerprint}-{gc.image_size}px-{name}-{key}.pt"
        if path.is_file():
            saved = load_checkpoint(path)
        else:
            saved = {}
            for set_name, set_rows in zip(("A", "B"), rows, strict=True):
                saved[set_name] = {c: ex(gan_images(pool, set_rows[c], gc.image_size)).cpu()
                                   for c in tqdm(names, desc=f"reference set {set_name} ({name})",
                                                 disable=not progress, leave=False)}
            save_checkpoint(path, saved)
        feats_a[name], feats_b[name] = saved["A"], saved["B"]
    return Reference(source, feats_a, feats_b, settings, paths)
