"""Backbone registry: name -> feature extractor with an ``out_dim`` attribute.

``resnet18``        torchvision ResNet-18, ImageNet stem (7x7/2 + max-pool): DFF at 128+ px on a GPU.
``resnet18-small``  ResNet-18 with a 3x3/1 stem and no max-pool: keeps detail of small images.
``resnet-narrow``   a 4-stage ResNet of ``width``..8*width channels with a 3x3/2 stem:
                    fast enough to train on 2 CPU cores at 64 px in minutes.
No pretrained weights are loaded (none can be downloaded here); SSL provides them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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


BACKBONES: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda width: _tv_resnet18(small_stem=False),
    "resnet18-small": lambda width: _tv_resnet18(small_stem=True),
    "resnet-narrow": lambda width: NarrowResNet(width),
}


def build_backbone(name: str, width: int = 32) -> nn.Module:
    """Build a backbone by registry name; raises ValueError naming the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
    return BACKBONES[name](width)
