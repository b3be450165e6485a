"""Detector = backbone + dropout + linear head giving one real-vs-fake logit."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfflab.models.backbones import build_backbone


class Detector(nn.Module):
    """Binary real/fake classifier; ``forward`` returns logits of p(fake), shape (B,)."""

    def __init__(self, backbone: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B,)
        return self.head(self.dropout(self.backbone(x))).squeeze(1)


def build_detector(model_cfg) -> Detector:
    """Build from a ``ModelConfig`` (backbone name, width, dropout)."""
    return Detector(build_backbone(model_cfg.backbone, model_cfg.width), model_cfg.dropout)


def load_backbone_weights(detector: Detector, state: dict[str, torch.Tensor], source: str | Path = "") -> None:
    """Load backbone weights (e.g. from SSL) into a detector; the head stays fresh.

    Raises a ValueError naming ``source`` when the weights don't fit the backbone.
    """
    try:
        detector.backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: backbone weights don't fit this model ({e})") from None
