"""``dfflab report``: rebuild REPORT.md and plots from run folders (no training)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="build results/REPORT.md and results/plots/ from run folders",
                       description="Rebuild the report from the run folders alone: re-runnable at any "
                                   "time, trains nothing.")
    p.add_argument("--results", default="results", help="results folder holding runs/ (default: %(default)s)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from dfflab.report.build import build_report

    print(f"report written: {build_report(args.results)}")
    return 0
