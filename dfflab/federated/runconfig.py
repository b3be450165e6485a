"""Flower's run config <-> dfflab's :class:`~dfflab.config.Config`.

``[tool.flwr.app.config]`` in ``pyproject.toml`` declares every key a run may
override: the dfflab settings of ``results``, ``[data]``, ``[model]``, ``[train]``, ``[ssl]``
(federated SSL: ``fl.task="ssl"``) and ``[fl]`` under their usual kebab-case names (``fl.rounds``, ``train.init``), each
``""`` there, meaning "the preset's value", plus :data:`EXTRA` (``preset``, ``run-dir``,
``name``, ``note``, ``base``, ``batch``). So::

    flwr run . --run-config 'preset="tiny" fl.strategy="fedprox" fl.rounds=3'
    flwr run . --run-config 'preset="my-preset.toml"'    # any preset file
    flwr run . --run-config my-fl.toml                   # a TOML of declared keys only

(A preset file passed whole as ``--run-config`` works only if all its keys are declared,
so one with ``[ssl]`` or ``[gan]`` tables goes through ``preset`` instead; a
``base = ...`` line in such a file is honoured.)

Relative paths are resolved against the working directory of the process reading the
run config (the SuperLink's), so :func:`dfflab.federated.launcher.run_federated` passes
absolute ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from dfflab.config import PATH_KEYS, Config, apply_dict, config_from_dict, load_config, set_value

EXTRA = {
    "preset": "quick",  # packaged preset name or .toml path the other keys override
    "base": "",  # set by a preset TOML given as --run-config (it names its base preset)
    "run-dir": "",  # an existing run folder to write to (dfflab federated run makes it)
    "name": "",  # run name; "" = <strategy>-<partitioning>
    "note": "",  # what this run changes and why (config.json)
    "batch": "",  # run folders (";"-separated) the ServerApp runs one after another (the launcher's batches)
}
EXTRA_HELP = {
    "preset": "a packaged preset name or a .toml path: every setting below it overrides one of its values",
    "base": "set by a preset TOML given whole as --run-config (the base preset it names)",
    "run-dir": "absolute path of an existing run folder (\"\" = a new one under `results`)",
    "name": "run name (\"\" = <strategy>-<partitioning>)",
    "note": "what the run changes and why (config.json)",
    "batch": "run folders, ';'-separated, each with its flwr-run-config.toml: run one after another here",
}
SECTIONS = ("data", "model", "train", "ssl", "fl")
TABLE = "[tool.flwr.app.config]"


def declarable_keys(cfg: Config | None = None) -> list[str]:
    """The dfflab settings a federated run config may carry (what pyproject declares)."""
    flat = (cfg or Config()).flat()
    return [k for k in flat if k == "results" or k.split(".", 1)[0] in SECTIONS]


def declared_keys(app_dir: Path | str) -> set[str]:
    """Flat keys of ``[tool.flwr.app.config]`` in ``<app_dir>/pyproject.toml``."""
    with open(Path(app_dir) / "pyproject.toml", "rb") as f:
        table = tomllib.load(f).get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return {key for key, _ in _flatten(table)}


def app_config_block() -> str:
    """The ``[tool.flwr.app.config]`` table pyproject.toml must hold, made from the config classes:
    :data:`EXTRA`, then every declarable setting as ``""`` ("the preset's value"), one group per
    section. ``dfflab federated app-config`` puts it into pyproject.toml."""
    lines = [TABLE, "# Generated from dfflab/config.py by `dfflab federated app-config`: do not edit.",
             "# \"\" means \"the preset's value\": --run-config 'preset=\"tiny\" fl.rounds=3'."]
    lines += [f'{k} = "{v}"  # {EXTRA_HELP[k]}' for k, v in EXTRA.items()]
    section = None
    for key in declarable_keys():
        head = key.split(".", 1)[0]
        if head != section:
            lines.append("")
            section = head
        lines.append(f'{key} = ""')
    return "\n".join(lines) + "\n"


def write_app_config(app_dir: Path | str, check: bool = False) -> bool:
    """Replace pyproject.toml's ``[tool.flwr.app.config]`` table (the file's last) with
    :func:`app_config_block`; with ``check``, only report whether it is up to date.

    Returns:
        Whether the file already held the generated table.
    """
    path = Path(app_dir) / "pyproject.toml"
    text = path.read_text()
    if TABLE not in text:
        raise ValueError(f"{path}: no {TABLE} table to replace")
    head = text[: text.index(TABLE)]
    new = head + app_config_block()
    if new != text and not check:
        from dfflab.files import atomic_write_text

        atomic_write_text(path, new)
    return new == text


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def absolute_paths(cfg: Config, base: Path | None = None) -> Config:
    """Make the path settings (:data:`dfflab.config.PATH_KEYS`) absolute."""
    base = base or Path.cwd()
    for key in PATH_KEYS:
        value = cfg.flat()[key]
        if value not in ("", "scratch") and not Path(value).is_absolute():
            set_value(cfg, key, str((base / value).resolve()))
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


def read_run_config(path: Path | str) -> dict[str, Any]:
    """A run config TOML (a run folder's ``flwr-run-config.toml``) as Flower hands it over: flat keys."""
    with open(path, "rb") as f:
        return dict(_flatten(tomllib.load(f)))
