"""``dfflab generative train|sample|evaluate|evolve``: the class-conditional GAN.

    dfflab generative train --preset quick
    dfflab generative sample --class inpainting --n 64 --out samples/
    dfflab generative evaluate --augment
    dfflab generative evolve --preset quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from dfflab.cli import add_config_args

    grp = sub.add_parser("generative", help="class-conditional GAN: train, sample, evaluate, evolve")
    gsub = grp.add_subparsers(dest="generative_command", metavar="<generative command>", required=True)

    p = gsub.add_parser("train", help="train the conditional GAN and score it (FID/KID per class)",
                        description="Train a GAN conditioned on the source (wiki = real, inpainting, "
                        "insight, text2img) with the [gan] settings; writes a run folder with "
                        "metrics.csv, samples_epoch<N>.png, last.pt, generator.pt, bootstrap.json and "
                        "summary.json (FID/KID per class and overall with 95%% bootstrap intervals and the "
                        "real-vs-real floor, every n stated; TF-Inception and, if an SSL run exists, the SSL "
                        "backbone). A crashed run of the same name and settings resumes.")
    add_config_args(p)
    p.add_argument("--name", help="run name (default: the preset's name)")
    p.add_argument("--parent", help="run folder this run evolves from (recorded in config.json)")
    p.add_argument("--note", default="", help="what this run changes and why (recorded)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a crashed run exists")
    p.set_defaults(func=cmd_train)

    p = gsub.add_parser("sample", help="write generated images of one or more classes and a grid")
    add_config_args(p)
    p.add_argument("--run", help="a GAN run folder or generator.pt (default: the newest finished GAN run)")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="class to sample: wiki (or real), inpainting, insight, text2img; repeatable "
                   "(default: all)")
    p.add_argument("--n", type=int, default=64, help="images per class (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.set_defaults(func=cmd_sample)

    p = gsub.add_parser("evaluate", help="fooling rate against a detector; GAN-augmented LOGO detection",
                        description="Share of generated images per class the detector calls real "
                        "(with real-image controls); with --augment, the change in leave-one-"
                        "generator-out test AUROC when GAN images are added as training fakes. "
                        "Writes a run folder (stage generative, name detector-eval).")
    add_config_args(p)
    p.add_argument("--run", help="GAN run folder (default: the newest finished GAN run)")
    p.add_argument("--detector", help="detector.pt (default: newest centralized run trained on all sources)")
    p.add_argument("--n", type=int, default=500, help="generated images per class for the fooling rate")
    p.add_argument("--matched", action="store_true",
                   help="also train a detector on images resampled through the GAN's size and report the "
                        "fooling rate against it (the ordinary detector calls any upsampled image fake)")
    p.add_argument("--augment", action="store_true",
                   help="also run the GAN-augmented LOGO experiment with its control (as many extra non-GAN images)")
    p.add_argument("--augment-n", type=int, default=300,
                   help="extra images per class added (--augment): generated ones, and as many resampled train images")
    p.add_argument("--fid", action="store_true", help="also recompute FID/KID with the configured extractors")
    p.set_defaults(func=cmd_evaluate)

    p = gsub.add_parser("evolve", help="the recorded evolution: one change per step, kept only if KID improves",
                        description="Steps baseline -> +DiffAugment -> +EMA -> 2x G learning rate -> 3x longer. "
                        "Each is a GAN run on top of the last accepted one, with a note and a reason read from "
                        "the parent's curves; it is accepted only when its KID is below the parent's beyond "
                        "the 95%% paired bootstrap interval, else kept and marked rejected. Prints the table.")
    add_config_args(p)
    p.add_argument("--steps", type=int, default=None, help="train only the first N steps of the chain (default: all)")
    p.set_defaults(func=cmd_evolve)


def newest_gan_run(results: str | Path) -> Path:
    """The newest finished GAN run folder with a generator.pt."""
    from dfflab.runs import find_run

    run = find_run(results, "generative", where=lambda r: r.path("generator.pt").is_file())
    if run is not None:
        return run.dir
    raise FileNotFoundError(f"no finished GAN run under {results}/runs; run `dfflab generative train` "
                            "or pass --run")


def cmd_train(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.generative.train import GANDivergence, train_gan

    cfg = config_from_args(args)
    name = args.name or Path(str(args.preset)).stem
    try:
        run = train_gan(cfg, name=name, parent=args.parent, note=args.note, resume=not args.no_resume)
    except GANDivergence as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    print_scores(run.summary())
    print(f"run folder: {run.dir}")
    return 0


def _ci(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def print_scores(summary: dict) -> None:
    """FID/KID (x1e3) per class and overall with intervals, floors and n."""
    print(f"{summary['metric']['extractor']} ({summary['metric']['precision']}), {summary['g_steps']} G steps; "
          f"95% intervals; floor = held-out reals vs held-out reals at the same n")
    rows = {**summary["per_class"], "overall (class mean)": summary}
    for c, s in rows.items():
        k = [1e3 * v for v in s.get("kid_ci") or []]
        print(f"  {c:<20} FID {s['fid']:8.2f} {_ci(s.get('fid_ci')):<18} floor {s.get('fid_floor', float('nan')):6.2f}"
              f"   KID x1e3 {1e3 * s['kid']:7.2f} {_ci(k):<16} (n gen {s['n_eval']}, n real {s['n_real']})")
    print(f"train {summary['train_seconds']:.0f} s, evaluation {summary['eval_seconds']:.0f} s")


def cmd_sample(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.generative.sample import load_generator, write_samples

    cfg = config_from_args(args)
    try:
        src = Path(args.run) if args.run else newest_gan_run(cfg.results)
        g, ckpt = load_generator(src)
        names = ckpt["source_names"]
        written = write_samples(args.out, g, names, args.classes or names, args.n, args.seed)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    for c, folder in written.items():
        print(f"{args.n} images of {c} -> {folder}  (grid: {Path(args.out) / f'grid_{c}.png'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data import ensure_store
    from dfflab.generative.detector_eval import evaluate_gan, find_detector

    cfg = config_from_args(args)
    try:
        gan_dir = Path(args.run) if args.run else newest_gan_run(cfg.results)
        store = ensure_store(cfg)
        detector = args.detector or find_detector(cfg.results, store.fake_sources)
        if detector is None:
            raise FileNotFoundError("no detector: run `dfflab centralized train` or pass --detector")
        run = evaluate_gan(cfg, gan_dir, store, detector, n=args.n,
                           augment_n=args.augment_n if args.augment else 0, matched=args.matched, fid=args.fid)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    out = run.summary()
    print_fooling(out["fooling"])
    if "fooling_matched" in out:
        print(f"matched detector (test AUROC {out['fooling_matched']['detector_test_auroc']:.4f} on resampled images):")
        print_fooling(out["fooling_matched"])
    for h, m in out.get("augmented_logo", {}).get("held_out", {}).items():
        print(f"LOGO held out {h:<11} AUROC base {m['auroc_base']:.4f}, +GAN {m['auroc_gan']:.4f}, "
              f"+control {m['auroc_control']:.4f}; GAN - control {m['gan_vs_control']:+.4f} "
              f"[{m['gan_vs_control_ci'][0]:+.4f}, {m['gan_vs_control_ci'][1]:+.4f}]")
    print(f"run folder: {run.dir}")
    return 0


def print_fooling(f: dict) -> None:
    print(f"detector {f['detector']} (threshold {f['threshold']:.3f}, {f['detector_image_size']} px; "
          f"GAN images {f['gan_image_size']} px upsampled)")
    print(f"{'class':<12}{'fooled':>8}{'n':>6}   test reals/fakes called real: native, resampled")
    for c, m in f["per_class"].items():
        extra = (f"   {m['called_real_test_native']:.3f}, {m['called_real_test_resampled']:.3f}"
                 if "n_test" in m else "")
        print(f"{c:<12}{m['fooling_rate']:>8.3f}{m['n_generated']:>6}{extra}")


def cmd_evolve(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.generative.evolve import run_evolution
    from dfflab.generative.train import GANDivergence

    cfg = config_from_args(args)
    try:
        chain = run_evolution(cfg, steps=args.steps)
    except GANDivergence as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    print(chain.summary()["table"])
    print(f"chain: {chain.dir}")
    return 0
