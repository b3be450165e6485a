"""Data layer: DFF reader, SynthDFF, partner-aware splits, the prepared store and its audits.

Stages call :func:`ensure_store` to get the store for a config: it synthesizes SynthDFF
when ``data.root`` is a SynthDFF path that doesn't exist yet, prepares the store when
it is missing or stale, and opens it.
"""

from __future__ import annotations

import json
from pathlib import Path

AUTO_MARKER = ".made-by-ensure-store"


def is_synth_root(root: str | Path) -> bool:
    return "synthdff" in Path(root).name.lower()


def prepare_from_config(cfg, progress: bool = True, force: bool = False) -> Path:
    """:func:`~dfflab.data.prepare.prepare` of ``cfg.data.root`` into ``cfg.store_dir``."""
    from dfflab.data.prepare import prepare

    d = cfg.data
    return prepare(d.root, cfg.store_dir, d.image_size, val_frac=d.val_frac, test_frac=d.test_frac,
                   split_seed=d.split_seed, max_bad_frac=d.max_bad_frac, workers=d.workers,
                   jpeg_quality=d.jpeg_quality, progress=progress, force=force)


def ensure_store(cfg, progress: bool = True, in_memory: bool = False):
    """The prepared :class:`~dfflab.data.store.Store` for ``cfg``, building what is missing.

    A SynthDFF that this function made (it leaves ``.made-by-ensure-store``) and whose
    ``SYNTHDFF.json`` records other settings than ``cfg.data`` (or an older SynthDFF
    version) is regenerated; the store then follows (its fingerprint changes). One
    written by ``dfflab data synth`` is the user's data and is used as it is, with a note.
    """
    from dfflab.data.store import Store

    root = Path(cfg.data.root)
    if is_synth_root(root):
        from dfflab.data.synth import VERSION, SynthSpec, write_synth

        spec = SynthSpec(n_real=cfg.data.n_real, seed=0, difficulty=cfg.data.difficulty,
                         fake_size=cfg.data.fake_size, real_min=cfg.data.real_min, real_max=cfg.data.real_max)
        written = root / "SYNTHDFF.json"
        old = json.loads(written.read_text()) if written.is_file() else None
        stale = root.exists() and old is not None and (old.get("spec") != spec.record()
                                                        or old.get("version") != VERSION)
        what = f"{old.get('spec')} (version {old.get('version')})" if old else ""
        if stale and (root / AUTO_MARKER).is_file():
            # one dfflab made on demand (an older difficulty, say) is replaced, so the
            # data always matches the config that names it
            print(f"{root}: SynthDFF was made with {what}; regenerating with {spec.record()} (version {VERSION})")
        if not root.exists() or (stale and (root / AUTO_MARKER).is_file()):
            write_synth(root, spec, cfg, progress=progress)
            (root / AUTO_MARKER).write_text("made by dfflab on demand; remade when data.* settings change\n")
        elif stale:
            # one written by `dfflab data synth` is the user's data: used as it is
            print(f"{root}: SynthDFF was made with {what}, not the config's {spec.record()} (version {VERSION}); "
                  "using it as it is (`dfflab data synth` rebuilds it)")
    return Store(prepare_from_config(cfg, progress=progress), in_memory=in_memory)
