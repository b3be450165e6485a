"""``dfflab centralized train|crossgen|robustness|audit`` and the top-level ``dfflab detect``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from dfflab.cli import add_config_args

    grp = sub.add_parser(
        "centralized", help="the centralized real-vs-fake detector (the baseline)"
    )
    csub = grp.add_subparsers(
        dest="centralized_command", metavar="<centralized command>", required=True
    )

    p = csub.add_parser(
        "train",
        help="train, select on val AUROC and test one detector",
        description="Train the detector on reals + train.train-sources, keep the epoch with the "
        "best val AUROC, choose the threshold on val, test on train.test-sources. Writes a run "
        "folder (metrics.csv, summary.json, detector.pt, ROC/PR/confusion PNGs). A crashed run "
        "of the same name and settings resumes from its last.pt.",
    )
    add_config_args(p)
    p.add_argument(
        "--init",
        help="backbone init: scratch, an SSL run folder or a backbone .pt (default: train.init)",
    )
    p.add_argument(
        "--train-sources",
        metavar="SRC,...",
        help="comma-separated fake sources to train on (default: train.train-sources)",
    )
    p.add_argument(
        "--test-sources",
        metavar="SRC,...",
        help="comma-separated fake sources to test on (default: train.test-sources)",
    )
    p.add_argument(
        "--name", help="run name (default: scratch, or finetune with --init)"
    )
    p.add_argument(
        "--note",
        default="",
        help="what this run changes and why (recorded in config.json)",
    )
    p.add_argument(
        "--parent", help="run folder this run evolves from (recorded in config.json)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue this crashed run folder (its settings; --set still applies)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh even if a crashed run of this name exists",
    )
    p.set_defaults(func=cmd_train)

    p = csub.add_parser(
        "crossgen",
        help="cross-generator protocol: 3x3 AUROC matrix + leave-one-generator-out",
        description="Train on reals + each fake source alone and test on every source (matrix), "
        "then train on all but one source and test on the held-out one (LOGO). One run folder "
        "(stage crossgen) with summary.json, metrics.csv and crossgen.png; resumable.",
    )
    add_config_args(p)
    p.add_argument(
        "--name", default="crossgen", help="protocol run name (default: %(default)s)"
    )
    p.add_argument("--note", default="", help="recorded in config.json")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh even if a crashed protocol exists",
    )
    p.set_defaults(func=cmd_crossgen)

    p = csub.add_parser(
        "robustness",
        help="test AUROC under contrast, saturation, blur, pixelation and JPEG",
        description="Score a detector on its test split with each distortion at a mild and a "
        "strong setting; writes robustness.json and robustness.png.",
    )
    add_config_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run",
        help="a centralized run folder (its detector.pt and settings; --set still applies)",
    )
    src.add_argument("--checkpoint", help="a detector .pt (data from --preset/--set)")
    p.add_argument(
        "--out",
        help="output folder (default: the run folder, or the checkpoint's folder)",
    )
    p.add_argument(
        "--distortions",
        help="comma-separated subset of contrast,saturation,blur,pixelate,jpeg",
    )
    p.set_defaults(func=cmd_robustness)

    p = csub.add_parser(
        "audit",
        help="shortcut audit: metadata-only classifier and pixel pipeline check",
        description="Train a classifier on file metadata alone (width, height, aspect, file size, "
        "JPEG quality) on the detector's split and report its test AUROC; check that every "
        "source's pixels went through the same crop and resize. Writes a run folder (stage audit).",
    )
    add_config_args(p)
    p.add_argument(
        "--train-sources",
        metavar="SRC,...",
        help="comma-separated fake sources (default: train.train-sources)",
    )
    p.add_argument(
        "--test-sources",
        metavar="SRC,...",
        help="comma-separated fake sources (default: train.test-sources)",
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "detect",
        help="score image files or folders with a trained detector",
        description="Decode, centre-crop and resize each image exactly as training did, score "
        "it and write path, p_fake, decision (at the checkpoint's val-chosen threshold) to a CSV. "
        "Unreadable files are reported and skipped.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files or folders (searched recursively)",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="detector.pt from `dfflab centralized train`",
    )
    p.add_argument(
        "--out", default="detections.csv", help="CSV to write (default: %(default)s)"
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="images per forward pass (default: %(default)s)",
    )
    p.add_argument(
        "--uq",
        choices=["temperature", "mc-dropout"],
        help="add an uncertainty column: predictive entropy (bits) of the temperature-scaled "
        "p(fake) or of MC-dropout passes (fit them with `dfflab uq evaluate RUN`)",
    )
    p.add_argument(
        "--abstain",
        action="store_true",
        help="mark images above the abstain threshold 'uncertain' instead of forcing a label "
        "(the threshold `dfflab uq evaluate` fitted on val for uq.coverage; default method temperature)",
    )
    p.add_argument(
        "--abstain-entropy",
        type=float,
        metavar="BITS",
        help="abstain above this predictive entropy (0..1 bits) instead of the fitted threshold",
    )
    p.set_defaults(func=cmd_detect)


def _source_overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if getattr(args, "train_sources", None):
        extra.append(f"train.train-sources={args.train_sources}")
    if getattr(args, "test_sources", None):
        extra.append(f"train.test-sources={args.test_sources}")
    if getattr(args, "init", None):
        extra.append(f"train.init={args.init}")
    return extra


def _run_config(run, args: argparse.Namespace):
    """A run folder's own settings, with this command's ``--set`` overrides on top."""
    from dfflab.config import config_from_dict, set_value

    cfg = config_from_dict(run.config)
    for item in args.overrides:
        key, _, value = item.partition("=")
        set_value(cfg, key.strip(), value.strip())
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from dfflab.centralized.train import train_detector
    from dfflab.cli import config_from_args
    from dfflab.runs import Run

    if args.resume:
        run = Run.open(args.resume)
        cfg, name = _run_config(run, args), run.record["name"]
    else:
        cfg = config_from_args(args, _source_overrides(args))
        name = args.name or (
            "scratch" if cfg.train.init in ("", "scratch") else "finetune"
        )
    train_detector(
        cfg,
        name=name,
        parent=args.parent,
        note=args.note,
        resume=not args.no_resume,
        resume_from=args.resume,
    )
    return 0


def cmd_crossgen(args: argparse.Namespace) -> int:
    from dfflab.centralized.crossgen import run_crossgen
    from dfflab.cli import config_from_args

    run_crossgen(
        config_from_args(args),
        name=args.name,
        note=args.note,
        resume=not args.no_resume,
    )
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from dfflab.centralized.robustness import (
        evaluate_robustness,
        robustness_table,
        write_robustness,
    )
    from dfflab.cli import config_from_args
    from dfflab.data import ensure_store
    from dfflab.device import set_threads
    from dfflab.runs import Run

    if args.run:
        run = Run.open(args.run)
        cfg, ckpt, out = (
            _run_config(run, args),
            run.path("detector.pt"),
            Path(args.out or run.dir),
        )
    else:
        cfg, ckpt = config_from_args(args), Path(args.checkpoint)
        out = Path(args.out or ckpt.parent)
    set_threads(cfg.train.threads)
    store = ensure_store(cfg)
    names = args.distortions.split(",") if args.distortions else None
    result = evaluate_robustness(ckpt, store, cfg, names=names)
    path = write_robustness(result, out)
    print(robustness_table(result))
    print(f"written: {path} and {path.with_suffix('.png')}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from dfflab.centralized.rows import select_rows
    from dfflab.cli import config_from_args
    from dfflab.data import ensure_store
    from dfflab.data.audit import run_audit
    from dfflab.runs import Run

    cfg = config_from_args(args, _source_overrides(args))
    store = ensure_store(cfg)
    rows = select_rows(store, cfg.train)
    result = run_audit(store, rows["train"], rows["test"], cfg.train.seed)
    run = Run.create(
        cfg.results, "audit", "audit", cfg.to_dict(), fingerprint=store.fingerprint
    )
    run.write_summary(
        {
            **result,
            "train_sources": cfg.train.train_sources,
            "test_sources": cfg.train.test_sources,
        }
    )
    m = result["metadata"]
    print(
        f"metadata-only test AUROC {m['auroc']:.4f} (balanced accuracy {m['balanced_accuracy']:.4f})"
    )
    for s, v in m["auroc_per_source"].items():
        print(f"  {s:<12} AUROC {v:.4f}")
    print(
        "single features: "
        + ", ".join(f"{k} {v:.3f}" for k, v in m["single_feature_auroc"].items())
    )
    print(result["message"])
    print(f"run folder: {run.dir}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from dfflab.centralized.detect import detect, report_errors, table, to_csv
    from dfflab.runs import atomic_write_text

    try:
        dets, info = detect(
            args.paths,
            args.checkpoint,
            args.device,
            args.batch_size,
            uq=args.uq,
            abstain=args.abstain,
            abstain_entropy=args.abstain_entropy,
        )
    except (
        FileNotFoundError,
        ValueError,
        RuntimeError,
    ) as e:  # the checkpoint, not an image
        print(f"dfflab detect: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, to_csv(dets))
    print(table(dets, info["threshold"]))
    report_errors(dets)
    print(f"written: {args.out}")
    if not any(d.decision != "error" for d in dets):
        print("dfflab detect: no image could be scored", file=sys.stderr)
        return 1
    return 0
