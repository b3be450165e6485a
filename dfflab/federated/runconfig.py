"""Flower's run config <-> dfflab's :class:`~dfflab.config.Config`.

``[tool.flwr.app.config]`` in ``pyproject.toml`` declares every key a run may
override: the dfflab settings of ``results``, ``[data]``, ``[model]``, ``[train]`` and
``[fl]`` under their usual kebab-case names (``fl.rounds``, ``train.init``), each
``""`` there, meaning "the preset's value", plus :data:`EXTRA` (``preset``, ``run-dir``,
``name``, ``note``, ``base``). So::

    flwr run . --run-config 'preset="tiny" fl.strategy="fedprox" fl.rounds=3'
    flwr run . --run-config 'preset="my-preset.toml"'    # any preset file
    flwr run . --run-config my-fl.toml                   # a TOML of declared keys only

(A preset file passed whole as ``--run-config`` works only if all its keys are declared,
so one with ``[ssl]`` or ``[gan]`` tables goes through ``preset`` instead; a
``base = ...`` line in such a file is honoured.)

Relative paths are resolved against the working directory of the process reading the
run config (the SuperLink's), so :func:`dfflab.federated.run.run_federated` passes
absolute ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from dfflab.config import Config, apply_dict, config_from_dict, load_config

EXTRA = {
    "preset": "quick",  # packaged preset name or .toml path the other keys override
    "base": "",  # set by a preset TOML given as --run-config (it names its base preset)
    "run-dir": "",  # an existing run folder to write to (dfflab federated run makes it)
    "name": "",  # run name; "" = <strategy>-<partitioning>
    "note": "",  # what this run changes and why (config.json)
}
SECTIONS = ("data", "model", "train", "fl")
PATH_KEYS = ("results", "data.root", "data.store", "train.init")


def declarable_keys(cfg: Config | None = None) -> list[str]:
    """The dfflab settings a federated run config may carry (what pyproject declares)."""
    flat = (cfg or Config()).flat()
    return [k for k in flat if k == "results" or k.split(".", 1)[0] in SECTIONS]


def declared_keys(app_dir: Path | str) -> set[str]:
    """Flat keys of ``[tool.flwr.app.config]`` in ``<app_dir>/pyproject.toml``."""
    with open(Path(app_dir) / "pyproject.toml", "rb") as f:
        table = tomllib.load(f).get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return {key for key, _ in _flatten(table)}


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def absolute_paths(cfg: Config, base: Path | None = None) -> Config:
    """Make ``results``, ``data.root``, ``data.store`` and a ``train.init`` path absolute."""
    base = base or Path.cwd()

    def fix(p: str) -> str:
        return p if not p or Path(p).is_absolute() else str((base / p).resolve())

    cfg.results = fix(cfg.results)
    cfg.data.root = fix(cfg.data.root)
    cfg.data.store = fix(cfg.data.store)
    if cfg.train.init not in ("", "scratch"):
        cfg.train.init = fix(cfg.train.init)
    return cfg


def from_run_config(run_config: dict[str, Any]) -> tuple[Config, dict[str, str]]:
    """(resolved Config with absolute paths, the EXTRA values) of a Flower run config.

    With ``run-dir`` naming a folder that holds ``config.json``, that config is the
    base (what ``dfflab federated run`` resolved); else ``base`` or ``preset``.
    Non-empty keys override it.
    """
    meta = {k: str(run_config.get(k, v)) for k, v in EXTRA.items()}
    overrides = {k: v for k, v in run_config.items() if k not in EXTRA and v != ""}
    record = Path(meta["run-dir"]) / "config.json" if meta["run-dir"] else None
    if record is not None and record.is_file():
        from dfflab.runs import read_json

        cfg = config_from_dict(read_json(record)["config"])
        apply_dict(cfg, overrides, "Flower run config")
    else:
        cfg = load_config(meta["base"] or meta["preset"] or "quick", overrides)
    return absolute_paths(cfg), meta


def to_run_config(cfg: Config, declared: set[str], **extra: str) -> dict[str, Any]:
    """The nested (TOML-shaped) run config carrying ``cfg``'s declared settings and ``extra``.

    Lists become comma-joined strings (a Flower run config holds scalars only).
    """
    flat: dict[str, Any] = {}
    for key, value in cfg.flat().items():
        if key in declared:
            flat[key] = ",".join(value) if isinstance(value, list) else value
    flat.update({k: v for k, v in extra.items() if k in EXTRA})
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        d = nested
        *parents, leaf = key.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return nested
