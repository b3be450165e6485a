"""``dfflab ssl pretrain|compare-views|label-efficiency``."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from dfflab.cli import add_config_args

    ssl = sub.add_parser("ssl", help="self-supervised pretraining (SimCLR, BYOL) and its experiments")
    ssub = ssl.add_subparsers(dest="ssl_command", metavar="<ssl command>", required=True)

    p = ssub.add_parser("pretrain", help="pretrain the detector's backbone without labels",
                        description="SimCLR or BYOL (lightly) on the training split, labels unused. "
                        "Each epoch logs the SSL loss and kNN real/fake and 4-way source accuracy on val "
                        "(train feature bank); the end adds a linear probe. Writes backbone.pt for "
                        "`dfflab centralized train --init <run>`; resumes an interrupted run.")
    add_config_args(p)
    p.add_argument("--method", choices=("simclr", "byol"), help="SSL method (default: ssl.method)")
    p.add_argument("--reals-only", action="store_true", help="pretrain on real images only")
    p.add_argument("--views", help="view recipe: shift, jitter, patch, crop, imagenet (default: ssl.views)")
    p.add_argument("--init", choices=("scratch", "imagenet", "clip"),
                   help="start from random, ImageNet or CLIP weights (sets model.pretrained; default: model.pretrained)")
    _run_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = ssub.add_parser("compare-views", help="the views experiment: pretrain once per view recipe",
                        description="Pretrain with each view recipe (same method, seed, epochs) and "
                        "tabulate kNN and linear-probe accuracy: the evidence for ssl.views' default.")
    add_config_args(p)
    p.add_argument("--views", default="shift,jitter,patch,crop,imagenet", help="comma-separated recipes (default: %(default)s)")
    p.add_argument("--methods", default="simclr,byol", help="comma-separated methods (default: %(default)s)")
    _run_args(p, name=False)
    p.set_defaults(func=cmd_compare_views)

    p = ssub.add_parser("label-efficiency", help="fine-tune with 1/10/100%% of labels from SSL and scratch",
                        description="For each label fraction (ssl.label-fractions) and each init (scratch, "
                        "every --ssl-runs run), train the centralized detector and tabulate/plot its test "
                        "AUROC. Without --ssl-runs, the newest finished simclr and byol runs with this "
                        "preset's data/model/ssl settings are used; missing ones are pretrained first.")
    add_config_args(p)
    p.add_argument("--ssl-runs", nargs="+", metavar="RUN", help="SSL run folders (or backbone .pt files)")
    p.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per cell (default: %(default)s)")
    _run_args(p, name=False)
    p.set_defaults(func=cmd_label_efficiency)


def _run_args(p: argparse.ArgumentParser, name: bool = True) -> None:
    if name:
        p.add_argument("--name", help="run name (default: the method)")
    p.add_argument("--note", default="", help="what this run changes and why (kept in config.json)")
    p.add_argument("--parent", help="the run this one evolves from")
    p.add_argument("--no-resume", action="store_true", help="start fresh even if an unfinished run exists")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.ssl.pretrain import pretrain

    extra = [f"ssl.method={args.method}"] if args.method else []
    extra += ["ssl.reals-only=true"] if args.reals_only else []
    extra += [f"ssl.views={args.views}"] if args.views else []
    extra += [f"model.pretrained={'none' if args.init == 'scratch' else args.init}"] if args.init else []
    cfg = config_from_args(args, extra)
    run = pretrain(cfg, name=args.name, parent=args.parent, note=args.note, resume=not args.no_resume)
    s = run.summary()
    print(f"{run.dir}: kNN real/fake {s['knn']['knn_real_fake_acc_val']:.3f} "
          f"(bal. {s['knn']['knn_real_fake_bacc_val']:.3f}), source {s['knn']['knn_source_acc_val']:.3f}; "
          f"linear real/fake {s['linear']['linear_real_fake_acc_val']:.3f}, "
          f"source {s['linear']['linear_source_acc_val']:.3f} (val); {s['seconds']:.0f}s")
    return 0


def cmd_compare_views(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.ssl.views_experiment import compare_views

    cfg = config_from_args(args)
    run = compare_views(cfg, _split(args.views), _split(args.methods), note=args.note,
                        parent=args.parent, resume=not args.no_resume)
    print((run.dir / "views_experiment.md").read_text())
    return 0


def cmd_label_efficiency(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.ssl.label_efficiency import label_efficiency

    cfg = config_from_args(args)
    run = label_efficiency(cfg, args.ssl_runs, seeds=args.seeds, note=args.note, parent=args.parent,
                           resume=not args.no_resume)
    print((run.dir / "label_efficiency.md").read_text())
    return 0


def _split(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]
