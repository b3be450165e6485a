"""``dfflab data synth|download|prepare|info``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from dfflab.cli import add_config_args

    data = sub.add_parser("data", help="make, fetch, prepare and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="<data command>", required=True)

    p = dsub.add_parser("synth", help="write SynthDFF, the offline stand-in, in DFF's exact layout",
                        description="Write SynthDFF: procedurally drawn real portraits (folder wiki) and "
                        "three fake processes (text2img, inpainting, insight) under DFF's layout "
                        "<source>/<NN>/<id>_<birth>_<year>.jpg, plus splits.csv. Defaults come from the preset.")
    add_config_args(p)
    p.add_argument("--out", help="output folder (default: data.root)")
    p.add_argument("--n-real", type=int, help="real photos (total = 4 x n-real; default: data.n-real)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default: %(default)s)")
    p.add_argument("--difficulty", type=float, help="artifact strength (default: data.difficulty)")
    p.add_argument("--zip", action="store_true", help="write the four <source>.zip files instead of folders")
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("download", help="download DFF (OpenRL/DeepFakeFace) from the Hugging Face hub",
                        description="Fetch wiki.zip, inpainting.zip, insight.zip and text2img.zip "
                        "(resumable) and check each is a complete zip. Point --set data.root=DIR at the folder.")
    p.add_argument("--to", required=True, help="folder for the zips")
    p.add_argument("--revision", help="hub revision (commit hash or tag) to pin")
    p.add_argument("--verify", action="store_true", help="also CRC-check every member (slow)")
    p.set_defaults(func=cmd_download)

    p = dsub.add_parser("prepare", help="decode a dataset once into the uint8 store every stage reads",
                        description="Decode every image, centre-crop, resize to data.image-size and store "
                        "uint8 arrays (memory-mapped) with an index and grouped splits. Unusable files are "
                        "skipped and listed in bad_files.csv.")
    add_config_args(p)
    p.add_argument("--data", help="dataset root (default: data.root)")
    p.add_argument("--out", help="store folder (default: data.store or <root>-store-<size>)")
    p.add_argument("--image-size", type=int, help="side in pixels (default: data.image-size)")
    p.add_argument("--force", action="store_true", help="rebuild even if an up-to-date store exists")
    p.set_defaults(func=cmd_prepare)

    p = dsub.add_parser("info", help="counts per source and split, native sizes, skipped files")
    add_config_args(p)
    p.add_argument("--store", help="a prepared store (default: the preset's)")
    p.add_argument("--data", help="a raw dataset root instead: list its files per source")
    p.set_defaults(func=cmd_info)


def cmd_synth(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data.synth import SynthSpec

    cfg = config_from_args(args)
    out = Path(args.out or cfg.data.root)
    spec = SynthSpec(n_real=args.n_real or cfg.data.n_real, seed=args.seed,
                     difficulty=cfg.data.difficulty if args.difficulty is None else args.difficulty,
                     fake_size=cfg.data.fake_size, real_min=cfg.data.real_min,
                     real_max=cfg.data.real_max)
    from dfflab.data.synth import write_synth

    write_synth(out, spec, cfg, as_zip=args.zip)
    print(f"SynthDFF written to {out} ({4 * spec.n_real} images, seed {spec.seed}, "
          f"difficulty {spec.difficulty})")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from dfflab.data.download import download
    from dfflab.data.reader import DataError

    try:
        download(args.to, args.revision, verify=args.verify)
    except DataError as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data.reader import DataError
    from dfflab.data.store import Store, prepare

    extra = [f"data.image-size={args.image_size}"] if args.image_size else []
    if args.data:
        extra.append(f"data.root={args.data}")
    if args.out:
        extra.append(f"data.store={args.out}")
    cfg = config_from_args(args, extra)
    try:
        out = prepare(cfg.data.root, cfg.store_dir, cfg.data.image_size, val_frac=cfg.data.val_frac,
                      test_frac=cfg.data.test_frac, split_seed=cfg.data.split_seed,
                      max_bad_frac=cfg.data.max_bad_frac, workers=cfg.data.workers, force=args.force)
    except DataError as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    print(Store(out).summary())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from dfflab.cli import config_from_args
    from dfflab.data.reader import DataError, list_entries
    from dfflab.data.store import Store

    cfg = config_from_args(args)
    try:
        if args.data:
            entries = list_entries(args.data)
            counts = Counter(e.source for e in entries)
            print(f"dataset {args.data}: {len(entries)} files")
            for s, c in sorted(counts.items()):
                print(f"  {s:<12}{c:>8}")
            return 0
        print(Store(args.store or cfg.store_dir).summary())
    except DataError as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    return 0
