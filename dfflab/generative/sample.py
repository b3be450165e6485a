"""Generate images from a trained generator: uint8 batches, PNG files and grids.

``generator.pt`` (written at the end of ``dfflab generative train``) holds the EMA
generator's weights with its standing BatchNorm statistics (or the plain generator's
when EMA is off), its constructor arguments and the class names, so sampling needs
nothing else:

    dfflab generative sample --class inpainting --n 64 --out samples/
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 (B, 3, S, S) on the CPU."""
    return ((x.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()


@torch.no_grad()
def generate(g: nn.Module, class_ids: torch.Tensor, *, seed: int = 0, device: torch.device | None = None,
             batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, 3, S, S) of classes ``class_ids`` (N,) with noise from ``seed``.

    The generator is used in eval mode (BatchNorm running statistics), so an image
    depends only on its own noise and class, not on the rest of the batch.
    """
    device = device or next(g.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    was_training = g.training
    g.eval()
    out = []
    for y in class_ids.long().split(batch_size):
        z = torch.randn(len(y), g.z_dim, generator=gen).to(device)
        out.append(to_uint8(g(z, y.to(device))))
    g.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 3, g.image_size, g.image_size, dtype=torch.uint8)


def grid_image(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """uint8 (N, 3, S, S) -> one (H, W, 3) grid with ``nrow`` images per row."""
    from torchvision.utils import make_grid

    return make_grid(images, nrow=nrow, padding=pad, pad_value=255).permute(1, 2, 0).numpy()


def save_grid(path: Path | str, images: torch.Tensor, nrow: int) -> Path:
    """Write a PNG grid of uint8 images (one row per class when ``nrow`` = images per class)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_image(images, nrow)).save(path)
    return path


def save_generator(path: Path | str, g: nn.Module, width: int, source_names: list[str], **extra) -> Path:
    """Write ``generator.pt``: weights, constructor arguments and class names."""
    from dfflab.files import save_checkpoint
    from dfflab.generative.models import generator_kwargs

    save_checkpoint(path, {"kind": "generator", "generator": {k: v.detach().cpu() for k, v in g.state_dict().items()},
                           "kwargs": generator_kwargs(g, width), "source_names": list(source_names), **extra})
    return Path(path)


def load_generator(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a generator from ``generator.pt`` or a GAN run folder holding one."""
    from dfflab.files import load_checkpoint
    from dfflab.generative.models import make_generator

    path = Path(path)
    if path.is_dir():
        path = path / "generator.pt"
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "generator":
        raise ValueError(f"{path}: not a generator checkpoint (kind={ckpt.get('kind')!r})")
    g = make_generator(**ckpt["kwargs"])
    g.load_state_dict(ckpt["generator"])
    return g.to(device).eval(), ckpt


def class_index(name: str, source_names: list[str]) -> int:
    """Index of a class name; ``real`` is accepted for the real source (``wiki``)."""
    if name == "real" and "real" not in source_names:
        name = source_names[0]  # reals come first in every store
    if name not in source_names:
        raise ValueError(f"unknown class '{name}' (this generator knows: {', '.join(source_names)})")
    return source_names.index(name)


def write_samples(out: Path | str, g: nn.Module, source_names: list[str], classes: list[str], n: int,
                  seed: int = 0) -> dict[str, Path]:
    """Write ``n`` PNGs per class as ``<class>/<class>_0000.png`` and ``grid_<class>.png``.

    Returns:
        ``{class: folder}`` of the written images.
    """
    out = Path(out)
    written = {}
    for k, name in enumerate(classes):
        c = class_index(name, source_names)
        images = generate(g, torch.full((n,), c), seed=seed + 1000 * k)
        folder = out / source_names[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{source_names[c]}_{i:04d}.png")
        save_grid(out / f"grid_{source_names[c]}.png", images, nrow=max(1, int(np.ceil(np.sqrt(n)))))
        written[source_names[c]] = folder
    return written
