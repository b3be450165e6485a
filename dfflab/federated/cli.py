"""``dfflab federated run|local-only|partition-plot`` and ``dfflab compare RUN...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from dfflab.cli import add_config_args

    fed = sub.add_parser("federated", help="federated detector with Flower: run, local-only baseline, partitions")
    fsub = fed.add_subparsers(dest="federated_command", metavar="<federated command>", required=True)

    p = fsub.add_parser("run", help="one federated training (flwr run . with a local simulation)",
                        description="Train the detector with Flower's simulation engine: fl.num-partitions "
                        "clients partitioned by fl.partitioning, fl.rounds rounds of fl.strategy. Starts "
                        "and stops its own SuperLink. Writes a run folder under <results>/runs/.",
                        epilog="e.g. dfflab federated run --set fl.strategy=fedprox --set fl.proximal-mu=0.1")
    add_config_args(p)
    _run_args(p)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh even if a crashed run of this name and settings exists")
    p.set_defaults(func=cmd_run)

    p = fsub.add_parser("local-only", help="baseline: each client trains alone on its partition",
                        description="Each client of fl.partitioning trains alone (no communication) for "
                        "fl.rounds x fl.local-epochs epochs; every client model is scored on the global "
                        "test set.")
    add_config_args(p)
    _run_args(p)
    p.set_defaults(func=cmd_local_only)

    p = fsub.add_parser("partition-plot", help="plot and print the clients' data per source",
                        description="Bar chart (flwr-datasets) and table of the training images per client "
                        "and source for fl.partitioning and fl.num-partitions.")
    add_config_args(p)
    p.add_argument("--out", help="PNG path (default: <results>/partition-<partitioning>-<N>.png)")
    p.set_defaults(func=cmd_partition_plot)

    p = sub.add_parser("compare", help="centralized vs federated runs: curves, per-source bars, table",
                       description="Plot test accuracy and AUROC of the given runs against samples processed "
                       "(epochs-equivalent), per-source AUROC bars and a table.")
    add_config_args(p)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (paths, or names under <results>/runs)")
    p.add_argument("--out", help="output folder (default: <results>/compare)")
    p.set_defaults(func=cmd_compare)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="run name (default: <strategy>-<partitioning>, local-only-<partitioning>)")
    p.add_argument("--parent", help="run folder this run evolves from (recorded in config.json)")
    p.add_argument("--note", default="", help="what this run changes and why (recorded in config.json)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_run(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.run import run_federated

    cfg = config_from_args(args)
    try:
        run_federated(cfg, name=args.name, parent=args.parent, note=args.note, progress=not args.quiet,
                      resume=args.resume)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_local_only(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.run import run_local_only

    run_local_only(config_from_args(args), name=args.name, parent=args.parent, note=args.note,
                   progress=not args.quiet)
    return 0


def cmd_partition_plot(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data import ensure_store
    from dfflab.federated.partition import (
        all_client_rows,
        composition,
        make_partitioner,
        plot_partition,
    )

    cfg = config_from_args(args)
    store = ensure_store(cfg)
    part = make_partitioner(store, cfg)
    out = Path(args.out or Path(cfg.results) / f"partition-{cfg.fl.partitioning}-{cfg.fl.num_partitions}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_partition(part, out, f"{cfg.fl.partitioning} partition, N={cfg.fl.num_partitions} (training images)")
    for split in ("train", "val"):
        table = composition(store, all_client_rows(part), split)
        print(f"{split}: " + "  ".join(f"{k}" for k in table[0]))
        for row in table:
            print("  " + "  ".join(f"{v}" for v in row.values()))
    print(f"plot: {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.compare import compare, markdown, resolve_runs, table

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
