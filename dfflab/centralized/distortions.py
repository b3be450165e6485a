"""Image distortions: test AUROC when test images are degraded after the detector was trained.

    dfflab centralized robustness --run results/runs/<centralized run>
    dfflab centralized robustness --checkpoint detector.pt --out DIR

The distortions of the DFF paper's robustness table (colour contrast, colour
saturation, Gaussian blur, pixelation) plus JPEG recompression, each at a mild and a
strong setting, applied on the device to the float (B, 3, S, S) test images in [0, 1],
at the model's input resolution S. Scores use the checkpoint's val-chosen threshold;
nothing is re-tuned. Writes ``robustness.json`` and ``robustness.png``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    return TF.adjust_contrast(x, factor)


def saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    return TF.adjust_saturation(x, factor)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1  # covers +-3 sigma
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def pixelate(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mosaic: average over ``block`` x ``block`` cells, then repeat each cell (nearest)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, h // block), max(1, w // block)), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip each image through a JPEG file at ``quality`` (PIL's libjpeg, on the CPU)."""
    u = (
        (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )  # (B, H, W, 3)
    out = []
    for img in u:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)  # (B, 3, H, W)
    return y.to(x.device).float().div(255).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Distortion:
    name: str
    param: str
    strengths: tuple
    description: str
    fn: Callable[[torch.Tensor, float], torch.Tensor]


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion(
            "contrast",
            "factor",
            (0.75, 0.5),
            "colour contrast: blend with the image's mean grey (torchvision adjust_contrast); 1 = unchanged",
            contrast,
        ),
        Distortion(
            "saturation",
            "factor",
            (0.5, 0.0),
            "colour saturation: blend with the greyscale image (adjust_saturation); 0 = grey, 1 = unchanged",
            saturation,
        ),
        Distortion(
            "blur",
            "sigma_px",
            (0.5, 1.0),
            "Gaussian blur with this sigma in input pixels, kernel 2*ceil(3 sigma)+1",
            gaussian_blur,
        ),
        Distortion(
            "pixelate",
            "block_px",
            (2, 4),
            "pixelation: mean over block x block cells, upsampled by nearest neighbour",
            pixelate,
        ),
        Distortion(
            "jpeg",
            "quality",
            (75, 50),
            "JPEG recompression at this libjpeg quality (1-100), PIL encoder",
            jpeg,
        ),
    )
}


def conditions(names: list[str] | None = None) -> list[tuple[Distortion, float]]:
    """(distortion, strength) pairs, in table order; ``names`` picks some distortions."""
    names = names or list(DISTORTIONS)
    unknown = set(names) - set(DISTORTIONS)
    if unknown:
        raise ValueError(
            f"unknown distortion(s) {sorted(unknown)} (known: {', '.join(DISTORTIONS)})"
        )
    return [(DISTORTIONS[n], s) for n in names for s in DISTORTIONS[n].strengths]


def _entry(overall: dict, per: dict) -> dict:
    keep = [k for k in overall if k.split("_ci")[0] in ("auroc", "accuracy", "balanced_accuracy", "ap", "eer")]
    return {
        **{k: overall[k] for k in keep},
        "auroc_per_source": {s: m["auroc"] for s, m in per.items()},
    }


def evaluate_robustness(
    ckpt: str | Path,
    store,
    cfg,
    *,
    rows=None,
    names: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Clean and distorted test metrics of a detector checkpoint (see the module docstring).

    Args:
        cfg: the config: ``train.test-sources`` picks the test rows, ``train.device`` the device.
        rows: store rows to score instead (default: the test split of the test sources).
        names: distortions to run (default: all of :data:`DISTORTIONS`).
    """
    from tqdm import tqdm

    from dfflab.detector.scoring import score_checkpoint
    from dfflab.device import resolve_device
    from dfflab.evidence import paired_difference
    from dfflab.runs import load_checkpoint

    device = resolve_device(cfg.train.device)
    if rows is None:
        rows = store.select("test", cfg.train.test_sources)
    threshold = float(load_checkpoint(ckpt).get("threshold", 0.5))
    n_boot = cfg.train.bootstrap
    clean_scores = score_checkpoint(ckpt, store, rows, device).add_intervals(n_boot, cfg.train.seed)
    clean, clean_per = clean_scores.overall, clean_scores.per_source
    out = {
        "checkpoint": str(ckpt),
        "test_sources": sorted(set(store.sources[rows]) - {"wiki", "real"}),
        "image_size": store.image_size,
        "n_test": len(rows),
        "threshold": threshold,
        "clean": _entry(clean, clean_per),
        "distortions": [],
    }
    for d, s in tqdm(
        conditions(names), desc="robustness", disable=not progress, leave=False
    ):
        scored = score_checkpoint(ckpt, store, rows, device, transform=lambda x, d=d, s=s: d.fn(x, s))
        scored.add_intervals(n_boot, cfg.train.seed)
        m, per = scored.overall, scored.per_source
        # the drop with its paired interval: the same test images, clean and distorted
        drop = paired_difference(clean_scores.scored(), scored.scored(), "auroc", max(n_boot, 100), cfg.train.seed)
        out["distortions"].append(
            {
                "name": d.name,
                "param": d.param,
                "strength": s,
                "label": f"{d.name} {d.param}={s}",
                "description": d.description,
                **_entry(m, per),
                "auroc_drop": clean["auroc"] - m["auroc"],
                "auroc_drop_ci": drop["ci"],
                "verdict": {"better": "significant drop", "worse": "significant gain"}.get(
                    drop["verdict"], "no significant change"),
            }
        )
    return out


def robustness_table(result: dict) -> str:
    lines = [
        f"{'condition':<28}{'AUROC':>8}{'drop':>8}{'bal.acc':>9}",
        f"{'clean':<28}{result['clean']['auroc']:>8.4f}{'':>8}{result['clean']['balanced_accuracy']:>9.4f}",
    ]
    for d in result["distortions"]:
        lines.append(
            f"{d['label']:<28}{d['auroc']:>8.4f}{-d['auroc_drop']:>+8.4f}{d['balanced_accuracy']:>9.4f}"
        )
    return "\n".join(lines)


def write_robustness(result: dict, out_dir: str | Path) -> Path:
    """``robustness.json`` and ``robustness.png`` into ``out_dir``; returns the JSON path."""
    from dfflab.detector.plots import plot_robustness
    from dfflab.runs import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "robustness.json", result)
    plot_robustness(result, out_dir / "robustness.png")
    return out_dir / "robustness.json"
