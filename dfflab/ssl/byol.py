"""BYOL (Grill et al. 2020) from lightly's parts: online and momentum networks, no negatives.

The online network predicts the momentum (target) network's projection of the other
view; the target follows the online weights by an exponential moving average whose
momentum rises from ``ssl.momentum`` to 1 on a cosine schedule.
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


class BYOL(nn.Module):
    """``loss(x0, x1, step, total_steps)`` on two views (B, 3, H, W) -> scalar."""

    def __init__(self, backbone: nn.Module, cfg) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(backbone.out_dim, cfg.proj_hidden, cfg.proj_dim)
        self.prediction_head = BYOLPredictionHead(cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = cfg.momentum

    def loss(self, x0: torch.Tensor, x1: torch.Tensor, step: int, total_steps: int) -> torch.Tensor:
        m = cosine_schedule(step, total_steps, self.momentum, 1.0)  # BYOL sec. 3.1
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        x = torch.cat([x0, x1])  # (2B, 3, H, W): one pass per network
        p0, p1 = self.prediction_head(self.projection_head(self.backbone(x))).float().chunk(2)
        with torch.no_grad():
            z0, z1 = self.projection_head_momentum(self.backbone_momentum(x)).float().chunk(2)
        # symmetric loss: each view predicts the other's target (BYOL eq. 2-4)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
