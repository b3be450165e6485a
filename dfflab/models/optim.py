"""Which parameters train, at which learning rate: ``train.freeze`` and ``train.layer-decay``.

    opt = torch.optim.AdamW(optimizer_groups(model, cfg.train), lr=t.lr, weight_decay=t.weight_decay)

* ``train.freeze=none``      everything trains (the default; one group, as before this existed);
* ``train.freeze=backbone``  a linear (or MLP) probe: only the head trains, the backbone's
  batch-norm statistics stay fixed (UnivFD's recipe on CLIP features);
* ``train.freeze=partial``   the lower half of the backbone's blocks (stem, early stages) stays
  fixed, the upper half and the head train: generic low-level features, a task-specific top.
* ``train.layer-decay=d < 1`` (fine-tuning, BEiT sec. 2.5 / ELECTRA): block ``i`` of ``n``
  (0 = stem) trains at ``lr * d**(n - i)``, the head at ``lr``, so ImageNet's low-level
  filters move least.

Blocks come from :func:`layer_groups`: a backbone's ``layer_groups()`` if it has one, the
known torchvision families, else its top-level children (sequences expanded).
"""

from __future__ import annotations

from torch import nn

FREEZE = ("none", "backbone", "partial")


def blocks(net: nn.Module) -> list[nn.Module]:
    """A backbone's blocks (modules) from input to output."""
    if hasattr(net, "layer_groups"):
        return list(net.layer_groups())
    if any(c.__module__.startswith("torchvision.") for c in type(net).__mro__):
        # imported only for torchvision's models: a process that trains dfflab's own nets skips it
        from torchvision.models import ConvNeXt, EfficientNet, ResNet, VisionTransformer

        if isinstance(net, ResNet):
            return [nn.ModuleList([net.conv1, net.bn1]), *net.layer1, *net.layer2, *net.layer3, *net.layer4]
        if isinstance(net, EfficientNet | ConvNeXt):
            return [*net.features, net.classifier]  # ConvNeXt's classifier keeps its final LayerNorm
        if isinstance(net, VisionTransformer):
            return [net.conv_proj, *net.encoder.layers, net.encoder.ln]
    out = []
    for child in net.children():
        out.extend(child if isinstance(child, nn.Sequential | nn.ModuleList) else [child])
    return out


def layer_groups(net: nn.Module) -> list[list[nn.Parameter]]:
    """The backbone's parameters in blocks from input to output (empty blocks dropped).

    Parameters held outside any block (a ViT's class token and position embedding, CLIP's
    output projection) join the first block, or the last one when their name says ``proj``
    or ``head``.
    """
    groups = [list(b.parameters()) for b in blocks(net)]
    groups = [g for g in groups if g]
    seen = {id(p) for g in groups for p in g}
    loose = [(n, p) for n, p in net.named_parameters() if id(p) not in seen]
    if not groups:
        return [[p for _, p in loose]] if loose else []
    for n, p in loose:
        (groups[-1] if ("proj" in n.split(".")[-1] or "head" in n) else groups[0]).append(p)
    return groups


def freeze(model: nn.Module, mode: str) -> list[list[nn.Parameter]]:
    """Apply ``train.freeze`` to ``model.backbone``; returns the backbone's trainable blocks."""
    if mode not in FREEZE:
        from dfflab.config import ConfigError

        raise ConfigError(f"train.freeze: unknown '{mode}' (known: {', '.join(FREEZE)})")
    groups = layer_groups(model.backbone)
    n_frozen = {"none": 0, "backbone": len(groups), "partial": len(groups) // 2}[mode]
    for g in groups[:n_frozen]:
        for p in g:
            p.requires_grad_(False)
    for m in model.backbone.modules():
        # frozen batch norm keeps its ImageNet statistics (Detector.train leaves it in eval mode)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            m.frozen = bool(ps) and not any(p.requires_grad for p in ps)
    return [[p for p in g if p.requires_grad] for g in groups[n_frozen:]]


def optimizer_groups(model: nn.Module, train_cfg) -> list[dict]:
    """AdamW parameter groups for ``model`` (a Detector) under ``train.freeze`` / ``train.layer-decay``.

    Frozen parameters get ``requires_grad=False`` and are left out; each group carries its
    own ``lr`` (the scheduler scales every group alike).

    Raises:
        ConfigError: an unknown freeze mode, a decay outside (0, 1], or nothing left to train.
    """
    from dfflab.config import ConfigError

    t = train_cfg
    decay = float(getattr(t, "layer_decay", 1.0))
    if not 0 < decay <= 1:
        raise ConfigError(f"train.layer-decay={decay}: must be in (0, 1] (1 = off)")
    trainable = freeze(model, getattr(t, "freeze", "none"))
    in_backbone = {id(p) for p in model.backbone.parameters()}
    rest = [p for p in model.parameters() if id(p) not in in_backbone and p.requires_grad]
    if decay == 1:
        params = [p for g in trainable for p in g] + rest
        out = [{"params": params, "lr": t.lr}] if params else []
    else:
        n = len(layer_groups(model.backbone))
        first = n - len(trainable)  # index of the first trainable block
        out = [{"params": g, "lr": t.lr * decay ** (n - (first + i))} for i, g in enumerate(trainable) if g]
        out += [{"params": rest, "lr": t.lr}] if rest else []
    if not out:
        raise ConfigError("nothing to train: every parameter is frozen (train.freeze)")
    return out


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


