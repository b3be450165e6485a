"""The detector as it was trained: architecture from the model object, recipe from the resolved config.

Nothing here is prose about the code written beside it: the layer table comes from building
``build_detector(ModelConfig(**summary["model"]))`` and running one dummy batch through it;
the recipe sentences put each run's recorded settings into the recipe that
:mod:`dfflab.detector.recipe` fixes (AdamW, warmup + cosine, BCE, pixel-move augmentations),
with the schedule floor and translation pad read from the functions that apply them.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from dfflab.report.cells import table
from dfflab.report.collect import RunInfo, fmt, get
from dfflab.report.context import Context


def _block_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(basic block classes, bottleneck classes): resnet-narrow's own block and torchvision's."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBasic
    from torchvision.models.resnet import Bottleneck

    from dfflab.models.backbones import BasicBlock

    return (BasicBlock, TorchvisionBasic), (Bottleneck,)


def _short(m) -> str:
    """A one-line description of a layer (or a small block of layers)."""
    from torch import nn

    basic, bottleneck = _block_types()
    if isinstance(m, nn.Conv2d):
        k, s = m.kernel_size[0], m.stride[0]
        return f"conv {m.in_channels}→{m.out_channels} {k}×{k}/{s}"
    if isinstance(m, (*basic, *bottleneck)):
        kind = "basic" if isinstance(m, basic) else "bottleneck"
        out = m.conv2.out_channels if isinstance(m, basic) else m.conv3.out_channels
        return (f"residual {kind} block {m.conv1.in_channels}→{out}, stride {m.stride}"
                + (", projection shortcut" if m.downsample is not None else ""))
    if isinstance(m, nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, nn.ReLU):
        return "ReLU"
    if isinstance(m, nn.MaxPool2d):
        return f"max-pool {m.kernel_size}/{m.stride}"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "global average pool"
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features}→{m.out_features}"
    if isinstance(m, nn.Dropout):
        return f"dropout p={m.p:g}"
    if isinstance(m, nn.Sequential):
        return ", ".join(_short(c) for c in m if not isinstance(c, nn.Identity))
    return type(m).__name__


def _layers(model) -> list[tuple[str, object]]:
    """(name, module) of the detector's stages in forward order: the backbone's children, block
    containers opened up block by block, then dropout and head."""
    from torch import nn

    basic, bottleneck = _block_types()
    out = []
    for name, child in model.backbone.named_children():
        if isinstance(child, nn.Identity):
            continue
        if isinstance(child, nn.Sequential) and all(isinstance(c, (*basic, *bottleneck)) for c in child):
            out += [(f"{name}.{i}", c) for i, c in enumerate(child)]
        else:
            out.append((name, child))
    return out + [("dropout", model.dropout), ("head", model.head)]


def architecture(model_cfg: dict, image_size: int) -> dict:
    """``{"rows": [[layer, what, output shape, parameters]], "params", "trainable", "backbone_params",
    "feature_dim"}`` of the detector ``model_cfg`` builds, shapes from one forward pass at ``image_size``."""
    import torch

    from dfflab.config import ModelConfig
    from dfflab.models import build_detector

    model = build_detector(ModelConfig(**model_cfg)).eval()
    layers = _layers(model)
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in layers]
    with torch.no_grad():
        model(torch.zeros(2, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    rows = [[n, _short(m), "×".join(str(d) for d in shapes.get(n, ())) or "–",
             f"{sum(p.numel() for p in m.parameters()):,}"] for n, m in layers]
    params = sum(p.numel() for p in model.parameters())
    return {"rows": rows, "params": params, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
            "feature_dim": model.backbone.out_dim}


def init_text(ctx: Context, r: RunInfo) -> str:
    """What the run's backbone started from, and what that was pretrained on."""
    init = r.summary.get("init", get(r.config, "train.init", "scratch"))
    if init in (None, "", "scratch"):
        return f"random (PyTorch's default init, seed {r.seed}); no pretrained weights"
    ssl = ctx.folders.get(Path(str(init)).name) or ctx.folders.get(Path(str(init)).parent.name)
    if ssl is None or ssl.stage not in ("ssl", "ssl-views"):
        return f"the backbone checkpoint `{init}`"
    s = ssl.summary
    what = "the training split's reals only" if s.get("reals_only") else "the training split (reals and fakes)"
    return (f"the backbone of SSL run {ssl.link}: {s.get('method')} with `{s.get('views')}` views, "
            f"{s.get('epochs')} epochs on {s.get('images')} images of {what}, no labels")


def recipe_lines(r: RunInfo) -> list[str]:
    """The training strategy of one detector run, from its resolved config and summary."""
    from dfflab.train.augment import make_augment
    from dfflab.train.core import warmup_cosine

    t, s = r.config.get("train", {}), r.summary
    floor = inspect.signature(warmup_cosine).parameters["floor"].default
    pad = inspect.signature(make_augment).parameters["pad"].default
    spe = s.get("steps_per_epoch")
    warm = t.get("warmup_epochs", 0)
    warm_steps = f" ({round(warm * spe)} steps)" if spe else ""
    balance = {"weight": "positive-class weight n_real / n_fake of the training rows in the loss, so both classes "
                         "count the same (`train.balance=weight`)",
               "sample": "a class-balanced sampler draws each epoch's rows (`train.balance=sample`)",
               "none": "no class balancing (`train.balance=none`)"}.get(t.get("balance"), str(t.get("balance")))
    aug = {"none": "none", "flip": "horizontal flip (p 0.5)",
           "flip-crop": f"horizontal flip (p 0.5) and integer translation by up to ±{pad} px with reflect padding"
           }.get(t.get("augment"), str(t.get("augment")))
    sizes = s.get("sizes") or {}
    return [
        f"- **Optimizer**: AdamW, peak learning rate {t.get('lr')}, weight decay {t.get('weight_decay')}, "
        f"batch {t.get('batch_size')}" + (f" ({spe} optimizer steps per epoch over {sizes.get('train')} "
                                          "training images, last partial batch dropped)" if spe else "") + ".",
        f"- **Schedule**: linear warmup over {warm} epoch(s){warm_steps}, then cosine decay to {floor:g}× the peak "
        f"over the run's {t.get('epochs')} epochs, stepped per batch.",
        f"- **Loss and class balance**: binary cross-entropy on the logit; {balance}.",
        f"- **Augmentations**: {aug}; nothing that resamples, blurs or shifts colour (those erase the artifacts).",
        f"- **Early stopping**: validated every {t.get('eval_every', 1)} epoch(s); the epoch with the best validation "
        f"AUROC is kept; stop after {t.get('patience')} validations without improvement. This run: best epoch "
        f"{s.get('best_epoch')} of {s.get('epochs_run')} run ({s.get('stopped', '–')}), {s.get('steps')} optimizer "
        f"steps, {s.get('samples')} training images processed.",
        f"- **Threshold**: p(fake) ≥ {fmt(s.get('threshold'))}, chosen on validation only (maximum balanced "
        "accuracy); test data never chooses anything.",
        f"- **Seed** {r.seed} (`train.seed`): weights, batch order, dropout and augmentation.",
    ]


def detector_section(ctx: Context) -> list[str]:
    """Section 1.1: the detector's architecture and each headline run's training strategy."""
    lines = ["### 1.1 Detector", ""]
    groups = ctx.groups("centralized")
    if not groups:
        return lines + ["No centralized detector run yet.", ""]
    base = ctx.baseline()[0]
    model_cfg = base.summary.get("model") or base.config.get("model")
    size = int(get(base.config, "data.image_size", 64))
    try:
        arch = architecture(model_cfg, size) if model_cfg else None
    except (TypeError, ValueError) as e:  # settings of an older model registry: say so, don't crash
        arch = None
        lines += [f"The model of {base.link} ({model_cfg}) could not be rebuilt here: {e}.", ""]
    if arch:
        lines += [f"A `{model_cfg.get('backbone')}` backbone (width {model_cfg.get('width')}) with a dropout and a "
                  f"linear head giving one real-vs-fake logit; input {size}×{size} RGB (the store's centre-cropped, "
                  f"resized images scaled to [0, 1]). {arch['params']:,} parameters ({arch['backbone_params']:,} in "
                  f"the backbone, {arch['feature_dim']}-dimensional features), {arch['trainable']:,} of them trained. Built from "
                  f"{base.link}'s recorded model settings:", ""]
        lines += table(["layer", "what", "output (C×H×W)", "parameters"], arch["rows"])
    lines += [f"Training strategy of the baseline {base.link}:", ""] + recipe_lines(base) + [""]
    rows = []
    for g in groups:
        r = g[0]
        rows.append([r.name, init_text(ctx, r), len(g), r.summary.get("best_epoch"), r.summary.get("epochs_run"),
                     r.summary.get("steps"), r.link])
    lines += ["Every headline detector uses that recipe; they differ in where the backbone starts:", ""]
    lines += table(["run", "backbone init", "seeds", "best epoch", "epochs run", "steps", "run folder"], rows)
    differ = [g[0] for g in groups if _recipe_key(g[0]) != _recipe_key(base)]
    if differ:
        lines += ["Runs whose recipe settings differ from the baseline's: "
                  + ", ".join(f"{r.link} ({_recipe_diff(base, r)})" for r in differ) + ".", ""]
    return lines


RECIPE_KEYS = ("lr", "weight_decay", "batch_size", "epochs", "warmup_epochs", "balance", "augment", "patience")


def _recipe_key(r: RunInfo) -> tuple:
    t = r.config.get("train", {})
    return tuple(t.get(k) for k in RECIPE_KEYS) + (tuple(sorted((r.summary.get("model") or {}).items())),)


def _recipe_diff(a: RunInfo, b: RunInfo) -> str:
    ta, tb = a.config.get("train", {}), b.config.get("train", {})
    return ", ".join(f"train.{k}={tb.get(k)}" for k in RECIPE_KEYS if ta.get(k) != tb.get(k)) or "model"
