"""``dfflab report``: rebuild REPORT.md and plots from run folders (no training); ``dfflab compare RUN...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from dfflab.cli import add_config_args

    p = sub.add_parser("report", help="build results/REPORT.md and results/plots/ from run folders",
                       description="Rebuild the report from the run folders alone: re-runnable at any "
                                   "time, trains nothing.")
    p.add_argument("--results", default="results", help="results folder holding runs/ (default: %(default)s)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="centralized vs federated runs: curves, per-source bars, table",
                       description="Plot test accuracy and AUROC of the given runs against samples processed "
                       "(epochs-equivalent), per-source AUROC bars and a table.")
    add_config_args(p)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (paths, or names under <results>/runs)")
    p.add_argument("--out", help="output folder (default: <results>/compare)")
    p.set_defaults(func=cmd_compare)


def cmd_report(args: argparse.Namespace) -> int:
    from dfflab.report.build import build_report

    print(f"report written: {build_report(args.results)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.report.compare import compare, markdown, resolve_runs, table

    cfg = config_from_args(args)
    try:
        runs = resolve_runs(args.runs, cfg.results)
        out = compare(runs, args.out or Path(cfg.results) / "compare")
    except (FileNotFoundError, ValueError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    print(markdown(table(runs)))
    print(f"figures and table: {out}")
    return 0
