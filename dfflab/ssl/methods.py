"""The SSL methods by name. Each takes ``(backbone, ssl_cfg)`` and offers
``loss(x0, x1, step, total_steps)``; its ``.backbone`` is what pretraining saves."""

from __future__ import annotations

from torch import nn

from dfflab.config import ConfigError
from dfflab.ssl.byol import BYOL
from dfflab.ssl.simclr import SimCLR

METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR, "byol": BYOL}


def build_method(name: str, backbone: nn.Module, ssl_cfg) -> nn.Module:
    """Wrap ``backbone`` in the method ``name`` (ValueError naming ssl.method otherwise)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method ssl.method='{name}' (known: {', '.join(METHODS)})")
    return METHODS[name](backbone, ssl_cfg)
