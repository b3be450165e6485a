"""The ``dfflab`` command: ``dfflab <group> <command> [options]``.

Each stage registers its commands from its own ``cli.py`` (a ``register(subparsers)``
function), so this module only assembles them and holds the options every command
shares (``--preset``, ``--set``). Heavy libraries are imported inside the command
handlers, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dfflab.config import Config, ConfigError, help_table, load_config, preset_names

COMMAND_MODULES = (
    "dfflab.data.cli",
    "dfflab.ssl.cli",
    "dfflab.centralized.cli",
    "dfflab.federated.cli",
    "dfflab.uq.cli",
    "dfflab.generative.cli",
    "dfflab.report.cli",
    "dfflab.pipeline",
)


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "quick") -> None:
    """``--preset`` and ``--set key=value`` (repeatable), shared by every command."""
    p.add_argument("--preset", default=default_preset,
                   help=f"settings preset: {', '.join(preset_names())} or a .toml path (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs=3 (repeatable; `dfflab config` lists them)")


def config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """Resolve preset + ``--set`` overrides (+ command-specific ``extra`` overrides last)."""
    return load_config(args.preset, list(args.overrides) + list(extra or []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfflab",
        description="Detect and generate deepfake faces on DeepFakeFace (DFF) or its offline stand-in "
                    "SynthDFF: SSL pretraining, centralized and federated detectors, uncertainty, "
                    "a conditional GAN and a report.",
        epilog="Start with `dfflab pipeline --preset quick`; `dfflab <command> --help` explains each command.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    p = sub.add_parser("config", help="print every setting with its default and meaning")
    add_config_args(p)
    p.set_defaults(func=_cmd_config)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # the stage is not built yet
                continue
            raise
        module.register(sub)
    return parser


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    print(f"# preset {args.preset}, with overrides {args.overrides or 'none'}")
    for key, value in cfg.flat().items():
        print(f"{key} = {value!r}")
    print("\n# meaning of each setting (defaults before the preset)\n" + help_table())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"dfflab: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfflab: interrupted; finished epochs and checkpoints are kept in the run folder",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
