"""Which store rows a detector trains on, selects on and is tested on (every trainer uses this).

``train.train-sources`` pick the fakes of train and val (reals always included),
``train.test-sources`` those of test, each empty (the default) meaning every fake source
the store holds; ``train.label-frac`` keeps a seeded, per-source stratified share of the
training rows (label-efficiency experiments).
"""

from __future__ import annotations

import numpy as np

from dfflab.config import ConfigError


def check_sources(store, sources: list[str], key: str) -> list[str]:
    """The fake sources ``sources`` names (empty: all the store holds); ConfigError naming ``key``
    for unknown ones."""
    try:
        return store.resolve_sources(sources)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


def label_subset(store, rows: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """A seeded share ``frac`` of ``rows``, stratified by source (at least one row each)."""
    if not 0 < frac <= 1:
        raise ConfigError(f"train.label-frac must be in (0, 1], got {frac}")
    if frac == 1:
        return rows
    rng = np.random.default_rng([seed, 7])
    keep = []
    for s in np.unique(store.sources[rows]):
        mine = rows[store.sources[rows] == s]
        keep.append(
            rng.choice(mine, size=max(1, round(frac * len(mine))), replace=False)
        )
    return np.sort(np.concatenate(keep))


def select_rows(store, tcfg) -> dict[str, np.ndarray]:
    """Row indices: train (train sources, label-frac applied), val (train sources), test."""
    train_src = check_sources(store, tcfg.train_sources, "train.train-sources")
    test_src = check_sources(store, tcfg.test_sources, "train.test-sources")
    rows = {
        "train": label_subset(
            store, store.select("train", train_src), tcfg.label_frac, tcfg.seed
        ),
        "val": store.select("val", train_src),
        "test": store.select("test", test_src),
    }
    for split, r in rows.items():
        if len(np.unique(store.labels[r])) < 2:
            raise ConfigError(
                f"the {split} split of {store.path} needs reals and fakes, has "
                f"{len(r)} rows of one class; check data.val-frac / data.test-frac"
            )
    return rows
