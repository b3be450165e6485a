"""Data layer: DFF reader, SynthDFF, grouped splits and the prepared store.

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


def ensure_store(cfg, progress: bool = True, in_memory: bool = False):
    """The prepared :class:`~dfflab.data.store.Store` for ``cfg``, building what is missing.

    A SynthDFF that this function made (it leaves ``.made-by-ensure-store``) and whose
    ``SYNTHDFF.json`` records other settings than ``cfg.data`` is regenerated; the store
    then follows (its fingerprint changes). One written by ``dfflab data synth`` is the
    user's data and is used as it is, with a note.
    """
    from dfflab.data.store import Store, prepare

    root = Path(cfg.data.root)
    if is_synth_root(root):
        from dataclasses import asdict

        from dfflab.data.synth import SynthSpec, write_synth

        spec = SynthSpec(n_real=cfg.data.n_real, seed=0, difficulty=cfg.data.difficulty,
                         fake_size=cfg.data.fake_size, real_min=cfg.data.real_min, real_max=cfg.data.real_max)
        written = root / "SYNTHDFF.json"
        old = json.loads(written.read_text()).get("spec") if written.is_file() else None
        stale = root.exists() and old is not None and old != asdict(spec)
        if stale and (root / AUTO_MARKER).is_file():
            # one dfflab made on demand (an older difficulty, say) is replaced, so the
            # data always matches the config that names it
            print(f"{root}: SynthDFF was made with {old}; regenerating with {asdict(spec)}")
        if not root.exists() or (stale and (root / AUTO_MARKER).is_file()):
            write_synth(root, spec, cfg, progress=progress)
            (root / AUTO_MARKER).write_text("made by dfflab on demand; remade when data.* settings change\n")
        elif stale:
            # one written by `dfflab data synth` is the user's data: used as it is
            print(f"{root}: SynthDFF was made with {old}, not the config's {asdict(spec)}; "
                  "using it as it is (`dfflab data synth` rebuilds it)")
    out = prepare(root, cfg.store_dir, cfg.data.image_size, val_frac=cfg.data.val_frac,
                  test_frac=cfg.data.test_frac, split_seed=cfg.data.split_seed,
                  max_bad_frac=cfg.data.max_bad_frac, workers=cfg.data.workers, progress=progress)
    return Store(out, in_memory=in_memory)
