"""SimCLR (Chen et al. 2020) from lightly's parts: backbone, projection head, NT-Xent.

Two views of each image are pulled together and pushed from every other image of the
batch; the backbone's features are what the detector later starts from.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn


class SimCLR(nn.Module):
    """``loss(x0, x1, step, total_steps)`` on two views (B, 3, H, W) -> scalar."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__()
        self.backbone = backbone
        # 2-layer MLP head, output 128 (SimCLR sec. 4.2 / appendix B.9)
        self.projection_head = SimCLRProjectionHead(backbone.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor, step: int, total_steps: int) -> torch.Tensor:
        # Both views in one pass: one BN statistic over 2B images, as SimCLR's global BN.
        z = self.projection_head(self.backbone(torch.cat([x0, x1])))  # (2B, proj_dim)
        z0, z1 = z.float().chunk(2)  # the loss in fp32 even under bf16 autocast
        return self.criterion(z0, z1)
