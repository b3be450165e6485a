"""Detector = backbone + dropout + linear head giving one real-vs-fake logit."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfflab.models.backbones import build_backbone

HEADS = ("linear", "mlp")


def make_head(kind: str, in_dim: int, hidden: int = 256, dropout: float = 0.0) -> nn.Module:
    """``linear``: one logit; ``mlp``: BatchNorm (standardises frozen features of any scale),
    one hidden GELU layer and dropout, then the logit."""
    if kind == "linear":
        return nn.Linear(in_dim, 1)
    if kind == "mlp":
        return nn.Sequential(nn.BatchNorm1d(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                             nn.Linear(hidden, 1))
    from dfflab.config import ConfigError

    raise ConfigError(f"model.head: unknown '{kind}' (known: {', '.join(HEADS)})")


class Detector(nn.Module):
    """Binary real/fake classifier; ``forward`` returns logits of p(fake), shape (B,)."""

    def __init__(self, backbone: nn.Module, dropout: float = 0.0, head: str = "linear", hidden: int = 256):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = make_head(head, backbone.out_dim, hidden, dropout)

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        for m in self.backbone.modules():
            if getattr(m, "frozen", False):  # frozen batch norm (train.freeze) keeps its statistics
                m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B,)
        return self.head(self.dropout(self.backbone(x))).squeeze(1)


def build_detector(model_cfg, load_weights: bool = True) -> Detector:
    """Build from a ``ModelConfig`` (backbone, width, pretrained weights, input size, head, dropout).

    ``load_weights=False`` skips fetching pretrained weights (a checkpoint replaces them).
    """
    backbone = build_backbone(model_cfg.backbone, model_cfg.width, model_cfg, load_weights)
    return Detector(backbone, model_cfg.dropout, getattr(model_cfg, "head", "linear"),
                    getattr(model_cfg, "head_hidden", 256))


def load_backbone_weights(detector: Detector, state: dict[str, torch.Tensor], source: str | Path = "") -> None:
    """Load backbone weights (e.g. from SSL) into a detector; the head stays fresh.

    Raises a ValueError naming ``source`` when the weights don't fit the backbone.
    """
    try:
        detector.backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: backbone weights don't fit this model ({e})") from None


# -- checkpoint formats shared by every stage --------------------------------------------
# A detector checkpoint: {"kind": "detector", "model": state_dict, "model_cfg": {...},
#   "image_size": int, "threshold": float, "source_names": [...], "temperature": float}
# A backbone checkpoint (SSL): {"kind": "backbone", "backbone": state_dict, "model_cfg": {...},
#   "image_size": int, "method": str}
# Both hold only tensors and plain values, so they load with weights_only=True.


def save_detector(path: Path | str, model: Detector, model_cfg, image_size: int, *,
                  threshold: float = 0.5, source_names: list[str] | None = None,
                  temperature: float = 1.0, **extra) -> Path:
    """Write a detector checkpoint that :func:`load_detector` (and ``dfflab detect``) reads."""
    from dataclasses import asdict

    from dfflab.files import save_checkpoint

    state = {"kind": "detector", "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "model_cfg": asdict(model_cfg), "image_size": int(image_size), "threshold": float(threshold),
             "source_names": list(source_names or []), "temperature": float(temperature), **extra}
    save_checkpoint(path, state)
    return Path(path)


def load_detector(path: Path | str, map_location="cpu") -> tuple[Detector, dict]:
    """Rebuild a detector from its checkpoint; returns (model in eval mode, checkpoint dict)."""
    from dfflab.config import ModelConfig
    from dfflab.files import load_checkpoint

    ckpt = load_checkpoint(path, map_location)
    if ckpt.get("kind") != "detector":
        raise ValueError(f"{path}: not a detector checkpoint (kind={ckpt.get('kind')!r})")
    model = build_detector(ModelConfig(**ckpt["model_cfg"]), load_weights=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def save_backbone(path: Path | str, backbone: nn.Module, model_cfg, image_size: int, **extra) -> Path:
    """Write a backbone checkpoint (what SSL pretraining produces)."""
    from dataclasses import asdict

    from dfflab.files import save_checkpoint

    save_checkpoint(path, {"kind": "backbone",
                           "backbone": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
                           "model_cfg": asdict(model_cfg), "image_size": int(image_size), **extra})
    return Path(path)


def resolve_init(init: str) -> Path | None:
    """``scratch`` -> None; an SSL run folder -> its ``backbone.pt``; a file -> itself."""
    if init in ("", "scratch"):
        return None
    p = Path(init)
    if p.is_dir():
        p = p / "backbone.pt"
    if not p.is_file():
        raise FileNotFoundError(f"init '{init}': no such backbone checkpoint or SSL run folder with backbone.pt")
    return p


def init_backbone(detector: Detector, init: str, model_cfg=None) -> str | None:
    """Load ``init`` (see :func:`resolve_init`) into ``detector.backbone``; returns the path used.

    Accepts backbone checkpoints and detector checkpoints (their backbone part).
    """
    from dfflab.files import load_checkpoint

    path = resolve_init(init)
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    if model_cfg is not None and ckpt.get("model_cfg"):
        mine, theirs = asdict_safe(model_cfg), ckpt["model_cfg"]
        for key in ("backbone", "width"):
            if mine.get(key) != theirs.get(key):
                raise ValueError(f"{path}: backbone {theirs.get('backbone')}(width {theirs.get('width')}) "
                                 f"does not match model {mine.get('backbone')}(width {mine.get('width')})")
        for key, default in (("pretrained", "none"), ("input_size", 0)):  # the input adapter must match
            if mine.get(key, default) != theirs.get(key, default):
                raise ValueError(f"{path}: made with model.{key.replace('_', '-')}={theirs.get(key, default)}; "
                                 f"set it here too (now {mine.get(key, default)})")
    if ckpt.get("kind") == "backbone":
        state = ckpt["backbone"]
    elif ckpt.get("kind") == "detector":
        state = {k[len("backbone."):]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    else:
        raise ValueError(f"{path}: not a backbone or detector checkpoint")
    load_backbone_weights(detector, state, path)
    return str(path)


def asdict_safe(cfg) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)
