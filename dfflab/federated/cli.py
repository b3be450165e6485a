"""``dfflab federated run|ssl|local-only|search|deploy-local|robustness|privacy-tables|partition-plot|app-config``."""

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
                        epilog="e.g. dfflab federated run --set fl.strategy=fedprox --set fl.proximal-mu=0.1; "
                        "DP-FedAvg: --set fl.dp-clip=1 --set fl.dp-noise=0.1 (epsilon at fl.dp-delta per round in "
                        "metrics.csv); from an SSL backbone: --set train.init=<ssl or federated-ssl run folder>")
    add_config_args(p)
    _run_args(p)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh even if a crashed run of this name and settings exists")
    p.set_defaults(func=cmd_run)

    p = fsub.add_parser("ssl", help="federated self-supervised pretraining (SimCLR, BYOL/FedEMA) of the backbone",
                        description="Each of fl.num-partitions clients pretrains the detector's backbone on its own "
                        "unlabeled training images with ssl.method; the server averages the online network "
                        "(BYOL: the target network stays on the clients, fl.ssl-update=fedema|fedbyol). The run "
                        "folder's backbone.pt is what --set train.init=<run> loads, for `dfflab federated run` "
                        "and `dfflab centralized train`. Same as `flwr run .` with fl.task=\"ssl\".",
                        epilog="e.g. dfflab federated ssl --method byol --preset quick; then dfflab federated run "
                        "--preset quick --set train.init=<the ssl run folder>")
    add_config_args(p)
    p.add_argument("--method", choices=("simclr", "byol"), help="SSL method (default: ssl.method)")
    p.add_argument("--rounds", type=int, help="rounds (default: ssl.epochs / fl.local-epochs, so each client "
                   "makes as many passes over its images as centralized pretraining makes over all of them)")
    _run_args(p)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start afresh even if a crashed run of this name and settings exists")
    p.set_defaults(func=cmd_ssl)

    p = fsub.add_parser("local-only", help="baseline: each client trains alone on its partition",
                        description="Each client of fl.partitioning trains alone (no communication) for "
                        "fl.rounds x fl.local-epochs epochs; every client model is scored on the global "
                        "test set.")
    add_config_args(p)
    _run_args(p)
    p.set_defaults(func=cmd_local_only)

    p = fsub.add_parser("search", help="the federated recipe search: one change per step, each judged (paired CI)",
                        description="On IID clients, FedAvg with the centralized recipe, then one change per step "
                        "(clients keep AdamW state; local batch = batch / N; server momentum), each accepted only "
                        "when its test AUROC is significantly better than the last accepted step's. Every step "
                        "trains fl.rounds x fl.local-epochs epochs per client.")
    add_config_args(p)
    p.add_argument("--quiet", action="store_true", help="print only the result lines")
    p.set_defaults(func=cmd_search)

    p = fsub.add_parser("deploy-local", help="run on Flower's deployment engine on this machine (TLS, auth)",
                        description="Start a flower-superlink (TLS with a generated CA, SuperNode "
                        "authentication) and fl.num-partitions flower-supernodes on loopback, each with its "
                        "own partition and registered key; check that an unregistered SuperNode is refused; "
                        "run `flwr run .` against it; stop every process it started.",
                        epilog="e.g. dfflab federated deploy-local --preset tiny --kill 2@1 "
                        "--set fl.min-nodes=2 --set fl.wait-nodes=60")
    add_config_args(p)
    _run_args(p)
    p.add_argument("--kill", metavar="P@R", help="SIGKILL SuperNode P while it trains in round R, then "
                   "restart it (set fl.min-nodes below N; fl.wait-nodes lets it rejoin)")
    p.add_argument("--no-unregistered-check", action="store_true",
                   help="skip starting a SuperNode with an unregistered key")
    p.set_defaults(func=cmd_deploy_local)

    p = fsub.add_parser("robustness", help="table: clean vs attacked test AUROC per strategy (simulation)",
                        description="For 1 of 4 and 2 of 6 malicious IID clients, run each strategy clean "
                        "and under each attack (dfflab/federated/byzantine.py); writes robustness.md/.csv "
                        "in a run folder and prints the table.")
    add_config_args(p)
    p.add_argument("--strategies", default="fedavg,fedmedian,fedtrimmedavg,krum", help="comma-separated")
    p.add_argument("--attacks", default="label-flip,scale,nan", help="comma-separated (see fl.attack)")
    p.add_argument("--settings", default="4:1,6:2", help="N:m pairs, m of N clients malicious")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_robustness)

    p = fsub.add_parser("privacy-tables", help="tables: SSL inits for FedAvg, DP-FedAvg's privacy-utility (paired CIs)",
                        description="From the finished runs in <results> (the pipeline's names): FedAvg by source "
                        "from scratch vs from the centralized and the federated SSL backbones, and each DP-FedAvg "
                        "run's epsilon beside its test AUROC, with 95%% intervals and paired differences; plots "
                        "test AUROC against epsilon. Trains nothing.")
    add_config_args(p)
    p.add_argument("--out", help="plot path (default: <results>/privacy_utility.png)")
    p.set_defaults(func=cmd_privacy_tables)

    p = fsub.add_parser("app-config", help="write pyproject.toml's Flower run-config table from the settings",
                        description="Regenerate [tool.flwr.app.config] in pyproject.toml from dfflab/config.py, "
                        "so `flwr run . --run-config` accepts every data/model/train/fl setting. Run it after "
                        "adding or renaming a setting; --check only reports whether it is up to date.")
    p.add_argument("--check", action="store_true", help="exit 1 if pyproject.toml is out of date; change nothing")
    p.set_defaults(func=cmd_app_config)

    p = fsub.add_parser("partition-plot", help="plot and print the clients' data per source",
                        description="Bar chart (flwr-datasets) and table of the training images per client "
                        "and source for fl.partitioning and fl.num-partitions.")
    add_config_args(p)
    p.add_argument("--out", help="PNG path (default: <results>/partition-<partitioning>-<N>.png)")
    p.set_defaults(func=cmd_partition_plot)



def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="run name (default: <strategy>-<partitioning>, local-only-<partitioning>, "
                   "ssl-<method>-<partitioning>)")
    p.add_argument("--parent", help="run folder this run evolves from (recorded in config.json)")
    p.add_argument("--note", default="", help="what this run changes and why (recorded in config.json)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_run(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args

    return _launch(config_from_args(args), args)


def _launch(cfg, args: argparse.Namespace) -> int:
    """One Flower run of ``cfg`` with the command's name, parent, note and resume flags; 1 on failure."""
    from dfflab.federated.launcher import run_federated

    try:
        run_federated(cfg, name=args.name, parent=args.parent, note=args.note, progress=not args.quiet,
                      resume=args.resume)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_ssl(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.ssl_server import ssl_config

    return _launch(ssl_config(config_from_args(args), method=args.method, rounds=args.rounds), args)


def cmd_local_only(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.local_only import run_local_only

    run_local_only(config_from_args(args), name=args.name, parent=args.parent, note=args.note,
                   progress=not args.quiet)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data import ensure_store
    from dfflab.federated.launcher import flower_session
    from dfflab.federated.search import run_search
    from dfflab.runs import find_run

    cfg = config_from_args(args)
    store = ensure_store(cfg, progress=not args.quiet)
    central = find_run(cfg.results, "centralized", name="scratch", fingerprint=store.fingerprint)
    with flower_session():
        out = run_search(cfg, store=store, central=central, progress=not args.quiet)
    print(f"accepted recipe: {out['recipe'] or 'the base recipe'} (best step {out['best']})")
    return 0


def cmd_partition_plot(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data import ensure_store
    from dfflab.federated.partition import (
        all_client_rows,
        make_partitioner,
        plot_partition,
    )
    from dfflab.federated.shares import composition

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


def cmd_privacy_tables(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.report import privacy as pt

    cfg = config_from_args(args)
    inits, dp_runs, base = pt.find_privacy_runs(cfg.results)
    if len(inits) > 1:
        print("## Inits for federated fine-tuning (FedAvg, one generator per client)\n")
        print(pt.init_table(pt.init_comparison(inits, cfg.train.bootstrap)))
    if dp_runs:
        rows = pt.privacy_utility(dp_runs, base, cfg.train.bootstrap)
        print("## Privacy-utility (DP-FedAvg, client-level epsilon)\n")
        print(pt.privacy_table(rows))
        plot = pt.plot_privacy_utility(rows, args.out or Path(cfg.results) / "privacy_utility.png")
        if plot:
            print(f"plot: {plot}")
    if len(inits) <= 1 and not dp_runs:
        print(f"no federated SSL-init or DP runs in {cfg.results}", file=sys.stderr)
        return 1
    return 0


def cmd_app_config(args: argparse.Namespace) -> int:
    from dfflab.federated.launcher import app_dir
    from dfflab.federated.runconfig import write_app_config

    path = app_dir() / "pyproject.toml"
    fresh = write_app_config(app_dir(), check=args.check)
    if args.check:
        print(f"{path}: [tool.flwr.app.config] is {'up to date' if fresh else 'OUT OF DATE (run without --check)'}")
        return 0 if fresh else 1
    print(f"{path}: [tool.flwr.app.config] {'already up to date' if fresh else 'rewritten'}")
    return 0


def cmd_deploy_local(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.deploy import deploy_local

    cfg = config_from_args(args)
    kill = None
    if args.kill:
        node, _, rnd = args.kill.partition("@")
        kill = (int(node), int(rnd or 1))
    try:
        run = deploy_local(cfg, name=args.name, note=args.note, progress=not args.quiet, kill=kill,
                           check_unregistered=not args.no_unregistered_check)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    un = run.record["deploy"].get("unregistered")
    if un and not args.quiet:
        print(f"unregistered SuperNode: {'refused' if un['refused'] else 'NOT refused'} "
              f"(exit code {un['returncode']})")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.federated.byzantine import robustness

    settings = tuple(tuple(int(v) for v in pair.split(":")) for pair in args.settings.split(","))
    try:
        robustness(config_from_args(args), strategies=tuple(args.strategies.split(",")),
                   attacks=tuple(args.attacks.split(",")), settings=settings, progress=not args.quiet)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    return 0
