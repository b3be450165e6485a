"""``dfflab data synth|download|prepare|pairs|leaks|info``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub) -> None:
    from dfflab.cli import add_config_args

    data = sub.add_parser("data", help="make, fetch, prepare and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="<data command>", required=True)

    p = dsub.add_parser("synth", help="write SynthDFF, the offline stand-in, in DFF's exact layout",
                        description="Write SynthDFF: procedurally drawn real portraits (folder wiki) and "
                        "three fake processes (text2img, inpainting, insight) under DFF's layout "
                        "<source>/<NN>/<id>_<birth>_<year>.jpg, plus partners.csv (who each fake was made from) "
                        "and a splits.csv that keeps partners together. Defaults come from the preset.")
    add_config_args(p)
    p.add_argument("--out", help="output folder (default: data.root)")
    p.add_argument("--n-real", type=int, help="real photos (total = 4 x n-real; default: data.n-real)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default: %(default)s)")
    p.add_argument("--difficulty", type=float, help="artifact strength (default: data.difficulty)")
    p.add_argument("--zip", action="store_true", help="write the four <source>.zip files instead of folders")
    p.add_argument("--draw-size", type=int, default=0, metavar="PX",
                   help="draw the fakes at PX and resize them up to data.fake-size: a fast stand-in for scale "
                        "tests (files of DFF's size and format, smoother content); default 0: draw at full size")
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("download", help="download DFF (OpenRL/DeepFakeFace) from the Hugging Face hub",
                        description="Fetch wiki.zip, inpainting.zip, insight.zip and text2img.zip "
                        "(resumable) and check each is a complete zip. Point --set data.root=DIR at the folder.")
    p.add_argument("--to", required=True, help="folder for the zips")
    p.add_argument("--revision", help="hub revision (commit hash or tag) to pin")
    p.add_argument("--verify", action="store_true", help="also CRC-check every member (slow)")
    p.set_defaults(func=cmd_download)

    p = dsub.add_parser("prepare", help="decode a dataset once into the uint8 store every stage reads",
                        description="Decode every image (re-encoded at data.jpeg-quality when set), centre-crop, "
                        "resize to data.image-size and store uint8 arrays (memory-mapped) with an index. On a DFF "
                        "layout, check that fakes and reals line up and recover each insight fake's partner "
                        "(pairs.csv). Split so that linked paths (partners, the dataset's groups.csv) share a "
                        "split, then run the leak audit (leaks.json, a warning when not leak-free). Unusable "
                        "files are skipped and listed in bad_files.csv.")
    add_config_args(p)
    p.add_argument("--data", help="dataset root (default: data.root)")
    p.add_argument("--out", help="store folder (default: data.store or <results>/data/<root name>-store-<size>)")
    p.add_argument("--image-size", type=int, help="side in pixels (default: data.image-size)")
    p.add_argument("--force", action="store_true", help="rebuild even if an up-to-date store exists")
    p.set_defaults(func=cmd_prepare)

    p = dsub.add_parser("pairs", help="recover DFF's hidden partner of every insight fake from the pixels",
                        description="Match every insight fake's picture outside the face against all reals "
                        "(thumbnails, nearest neighbour) and write pairs.csv (relpath,partner,distance,ratio,"
                        "confident) and pairs.png (distance distributions). prepare runs this on a DFF layout. "
                        "With --truth (a relpath,partner CSV such as SynthDFF's partners.csv), print precision "
                        "and recall.")
    add_config_args(p)
    p.add_argument("--store", help="a prepared store (default: the preset's)")
    p.add_argument("--out", help="folder for pairs.csv and pairs.png (default: the store)")
    p.add_argument("--truth", help="known partners (relpath,partner CSV) to score the recovery against")
    p.set_defaults(func=cmd_pairs)

    p = dsub.add_parser("leaks", help="do val/test images have near-copies in train? (cross-split nearest neighbours)",
                        description="For every val/test image, its nearest training image (16x16 thumbnails, or "
                        "--features of an SSL backbone): the share of near-duplicates and the nearest-neighbour "
                        "label agreement per source, beside the same figures inside train. Writes leaks.json and "
                        "leaks.png (the closest cross-split pairs). prepare runs this too.")
    add_config_args(p)
    p.add_argument("--store", help="a prepared store (default: the preset's)")
    p.add_argument("--out", help="folder for leaks.json and leaks.png (default: the store)")
    p.add_argument("--features", help="an SSL run folder or backbone/detector checkpoint to embed with")
    p.set_defaults(func=cmd_leaks)

    p = dsub.add_parser("info", help="counts per source and split, native sizes, skipped files")
    add_config_args(p)
    p.add_argument("--store", help="a prepared store (default: the preset's)")
    p.add_argument("--data", help="a raw dataset root instead: list its files per source")
    p.set_defaults(func=cmd_info)


def cmd_synth(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data.synth import SynthSpec, write_synth

    cfg = config_from_args(args)
    out = Path(args.out or cfg.data.root)
    spec = SynthSpec(n_real=args.n_real or cfg.data.n_real, seed=args.seed,
                     difficulty=cfg.data.difficulty if args.difficulty is None else args.difficulty,
                     fake_size=cfg.data.fake_size, real_min=cfg.data.real_min,
                     real_max=cfg.data.real_max, draw_size=args.draw_size)

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
    from dfflab.data import prepare_from_config
    from dfflab.data.reader import DataError
    from dfflab.data.store import Store

    extra = [f"data.image-size={args.image_size}"] if args.image_size else []
    if args.data:
        extra.append(f"data.root={args.data}")
    if args.out:
        extra.append(f"data.store={args.out}")
    cfg = config_from_args(args, extra)
    try:
        out = prepare_from_config(cfg, force=args.force)
    except DataError as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    print(Store(out).summary())
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    import math

    from dfflab.cli import config_from_args
    from dfflab.data import pairs
    from dfflab.data.links import read_partners
    from dfflab.data.reader import DataError
    from dfflab.data.store import Store

    cfg = config_from_args(args)
    try:
        store = Store(args.store or cfg.store_dir)
        truth = dict(read_partners(args.truth)) if args.truth else {}
        if args.truth and not truth:
            raise DataError(f"{args.truth}: no such partners file")
    except DataError as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    t0 = time.time()
    found = pairs.pairs_from_store(store.images, store.thumbs, store.sources, store.relpaths, progress=True)
    if found is None:
        print(f"dfflab: {store.path} holds no '{pairs.SWAP_SOURCE}' fakes and wiki reals to pair", file=sys.stderr)
        return 1
    seconds = time.time() - t0
    out = Path(args.out or store.path)
    out.mkdir(parents=True, exist_ok=True)
    pairs.write_pairs(out / "pairs.csv", found)
    pairs.plot_pairs(found, out / "pairs.png")
    s = pairs.summary(found)
    print(f"{s['confident']:,} of {s['fakes']:,} insight fakes matched confidently in {seconds:.1f} s; "
          f"wrote {out / 'pairs.csv'} and {out / 'pairs.png'}")
    if truth:
        sc = pairs.score_pairs(found, truth)
        prec = "n/a" if math.isnan(sc["precision"]) else f"{sc['precision']:.4f}"
        print(f"against {args.truth}: precision {prec} at the confident threshold, recall {sc['recall']:.4f}, "
              f"nearest real right {sc['top1']:.4f} ({sc['fakes']:,} fakes with a known partner)")
    return 0


def cmd_leaks(args: argparse.Namespace) -> int:
    from dfflab.cli import config_from_args
    from dfflab.data.leaks import COPY_RMS, leak_audit, leak_grid, store_embedding
    from dfflab.data.reader import DataError
    from dfflab.data.store import Store
    from dfflab.runs import write_json

    cfg = config_from_args(args)
    try:
        store = Store(args.store or cfg.store_dir)
        emb, what = store_embedding(store.images, args.features)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"dfflab: {e}", file=sys.stderr)
        return 1
    result = leak_audit(emb, store.labels, store.sources, store.split, store.groups, seed=cfg.data.split_seed,
                        copy_distance=None if args.features else COPY_RMS)
    result["embedding"] = what
    out = Path(args.out or store.path)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "leaks.json", result)
    leak_grid(store.images, result, store.sources, store.split, out / "leaks.png")
    print(leak_table(result))
    print(result["message"])
    print(f"wrote {out / 'leaks.json'} and {out / 'leaks.png'} ({what})")
    return 0


def leak_table(result: dict) -> str:
    """Per-source cross-split vs within-train figures, one line per source."""
    if "cross_split" not in result:
        return result.get("message", "")
    lines = [f"{'source':<12}{'n':>6}  {'near-dup val/test':>18}  {'near-dup train':>15}  "
             f"{'label agr. val/test':>20}  {'label agr. train':>17}"]
    cross, within = result["cross_split"]["per_source"], result["within_train"]["per_source"]
    nan = float("nan")
    for s, c in cross.items():
        w = within.get(s, {})
        lines.append(f"{s:<12}{c['n']:>6}  {c['near_duplicate_share']:>18.1%}  "
                     f"{w.get('near_duplicate_share', nan):>15.1%}  {c['label_agreement']:>20.1%}  "
                     f"{w.get('label_agreement', nan):>17.1%}")
    return "\n".join(lines)


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
