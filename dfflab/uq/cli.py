"""``dfflab uq evaluate RUN`` and ``dfflab uq ensemble``.

    dfflab uq evaluate results/runs/<stamp>-centralized-scratch
    dfflab uq evaluate RUN --methods plain,temperature,mc-dropout --set uq.mc-samples=50
    dfflab uq ensemble --preset quick --m 3
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from dfflab.cli import add_config_args

    uq = sub.add_parser("uq", help="uncertainty: calibration, MC dropout, deep ensembles, abstaining")
    usub = uq.add_subparsers(dest="uq_command", metavar="<uq command>", required=True)

    p = usub.add_parser(
        "evaluate", help="every uncertainty method on a detector run: uq.json and plots in the run folder",
        description="Compare plain, temperature scaling, MC dropout, deep ensemble and federated client "
        "ensemble on one run: ECE/NLL/Brier before and after, risk-coverage and AURC, and for runs that "
        "held a generator out, how well each uncertainty separates its fakes. Fitting uses validation "
        "only. Data and model come from the run's config.json; [uq] settings from --preset/--set.")
    add_config_args(p)
    p.add_argument("run", help="run folder: centralized, federated, ensemble or crossgen")
    p.add_argument("--methods", help="comma-separated subset (default: uq.methods)")
    p.add_argument("--members", nargs="+", default=[], metavar="RUN",
                   help="other runs (or detector .pt files) whose detectors join this run's in 'ensemble'")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="don't store the fitted temperature and abstain thresholds in detector.pt")
    p.set_defaults(func=cmd_evaluate)

    p = usub.add_parser(
        "ensemble", help="train a deep ensemble (M seeded centralized detectors) and evaluate it",
        description="Train M centralized detectors that differ only in train.seed (base seed + i), each a "
        "normal resumable run, recorded in one run folder of stage 'ensemble'; then run `uq evaluate` on it.")
    add_config_args(p)
    p.add_argument("--m", type=int, help="members (default: uq.ensemble-size)")
    p.add_argument("--name", default="ens", help="ensemble name; members are <name>-<i> (default: %(default)s)")
    p.add_argument("--note", default="", help="what this ensemble changes and why (recorded in config.json)")
    p.add_argument("--no-evaluate", action="store_true", help="only train the members")
    p.set_defaults(func=cmd_ensemble)


def run_config(args: argparse.Namespace, run_dir: str):
    """The run's own config, with this command's [uq] settings and --set overrides on top."""
    from dfflab.cli import config_from_args
    from dfflab.config import config_from_dict, set_value
    from dfflab.runs import Run

    cfg = config_from_dict(Run.open(run_dir).config)
    cfg.uq = config_from_args(args).uq  # preset + --set for [uq]
    for item in args.overrides:  # other --set (e.g. train.device=cpu) apply to the run's config
        key, _, value = item.partition("=")
        if not key.strip().startswith("uq."):
            set_value(cfg, key.strip(), value.strip())
    return cfg


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dfflab.config import ConfigError
    from dfflab.uq.evaluate import evaluate_run

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    try:
        cfg = run_config(args, args.run)  # for a crossgen run only its [uq] part is used
        evaluate_run(args.run, cfg, methods, members=args.members, write_checkpoint=not args.no_checkpoint)
    except ConfigError:
        raise  # dfflab.cli reports it with exit code 2
    except (FileNotFoundError, ValueError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.uq.ensemble import train_ensemble
    from dfflab.uq.evaluate import evaluate_run

    cfg = config_from_args(args)
    run = train_ensemble(cfg, args.m, name=args.name, note=args.note)
    if not args.no_evaluate:
        evaluate_run(run.dir, cfg)
    return 0
