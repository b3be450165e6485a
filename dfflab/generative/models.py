"""Class-conditional generators and discriminators: ResNet (SNGAN / BigGAN) or DCGAN style.

``gan.arch = "resnet"`` (the full preset):

Generator: z (+ class) -> 4x4 -> ``log2(size/4)`` up-sampling ResNet blocks -> tanh image.
Conditioning is class-conditional BatchNorm (``cond_bn=True``: each class owns a BN
gain and bias, as in BigGAN) or, for the plain baseline, a class embedding
concatenated to z with ordinary BatchNorm.

Discriminator: ``log2(size/4)`` down-sampling ResNet blocks + one more block at 4x4 ->
ReLU -> global sum pool -> linear. Conditioning is the projection head
(``projection=True``: ``+ <embed(y), h>``, Miyato & Koyama 2018) or, for the baseline,
one-hot class maps concatenated to the input image. Spectral norm wraps every conv and
linear of D when ``spectral_norm=True``.

``gan.arch = "dcgan"`` (the quick preset's lean 32 px nets, Radford et al. 2016 with
SNGAN's conditioning): G is z -> 4x4 -> ``log2(size/4)`` x (4x4 stride-2 transposed
conv, BN, ReLU) -> 3x3 conv -> tanh; D is ``log2(size/4)`` x (4x4 stride-2 conv, LReLU)
-> 3x3 conv -> LReLU -> sum pool -> linear (+ projection). One convolution per
resolution instead of a ResNet block's three, BatchNorms and two up-samplings: about a
fifth of the operators for the same FLOPs, which is what a small-batch CPU step pays for.

Build from a config with :func:`build_gan` (``cfg.gan``); images are (B, 3, S, S) in
[-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn


def num_blocks(image_size: int) -> int:
    """Up- (or down-) sampling blocks between 4x4 and ``image_size``."""
    n = math.log2(image_size / 4) if image_size > 0 else -1
    if n < 2 or n != int(n) or image_size > 256:
        raise ValueError(f"gan.image-size={image_size}: must be a power of two from 16 to 256")
    return int(n)


# -- generator ------------------------------------------------------------------------


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine, then a per-class gain and bias (gain starts at 1)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = self.gain(y)[:, :, None, None]  # (B, C, 1, 1)
        b = self.bias(y)[:, :, None, None]
        return self.bn(x) * g + b


class PlainBatchNorm(nn.BatchNorm2d):
    """Ordinary BatchNorm with the conditional one's call signature (ignores y)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class GBlock(nn.Module):
    """Pre-activation up-sampling block: BN-ReLU-up-conv-BN-ReLU-conv + up-conv1x1 skip."""

    def __init__(self, c_in: int, c_out: int, num_classes: int, cond_bn: bool):
        super().__init__()

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNorm(c, num_classes) if cond_bn else PlainBatchNorm(c)

        self.bn1, self.bn2 = norm(c_in), norm(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    """(z (B, z_dim), y (B,)) -> images (B, 3, S, S) in [-1, 1]."""

    def __init__(self, image_size: int = 32, num_classes: int = 4, z_dim: int = 128,
                 width: int = 64, cond_bn: bool = True):
        super().__init__()
        n = num_blocks(image_size)
        chans = [width * min(8, 2 ** (n - i)) for i in range(n + 1)]  # 4x4 ... S x S
        self.image_size, self.num_classes, self.z_dim, self.cond_bn = image_size, num_classes, z_dim, cond_bn
        # The baseline feeds the class through z; cond-BN needs no input embedding.
        self.embed = None if cond_bn else nn.Embedding(num_classes, z_dim)
        z_in = z_dim if cond_bn else 2 * z_dim
        self.linear = nn.Linear(z_in, chans[0] * 16)
        self.blocks = nn.ModuleList(GBlock(chans[i], chans[i + 1], num_classes, cond_bn) for i in range(n))
        self.out = nn.Sequential(nn.BatchNorm2d(chans[-1]), nn.ReLU(), nn.Conv2d(chans[-1], 3, 3, 1, 1),
                                 nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        h = self.linear(z).view(z.shape[0], -1, 4, 4)  # (B, C0, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return self.out(h)  # (B, 3, S, S)


# -- discriminator ----------------------------------------------------------------------


class DBlock(nn.Module):
    """ReLU-conv-ReLU-conv (+ avg-pool) with a conv1x1 skip; the first block skips the
    leading ReLU so the raw image is not rectified (SNGAN's "optimized" block)."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool, sn):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = sn(nn.Conv2d(c_in, c_out, 1)) if (c_in != c_out or down) else None
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # pool first: the 1x1 conv then runs on 4x fewer pixels
            s = F.avg_pool2d(s, 2) if self.down else s
            s = self.skip(s) if self.skip is not None else s
        else:
            s = self.skip(s) if self.skip is not None else s
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class Discriminator(nn.Module):
    """(images (B, 3, S, S), y (B,)) -> realness logits (B,)."""

    def __init__(self, image_size: int = 32, num_classes: int = 4, width: int = 64,
                 projection: bool = True, spectral_norm: bool = True):
        super().__init__()
        n = num_blocks(image_size)
        sn = _sn if spectral_norm else (lambda m: m)
        chans = [width * min(8, 2 ** i) for i in range(n + 1)]  # after each block
        self.image_size, self.num_classes, self.projection = image_size, num_classes, projection
        c_in = 3 if projection else 3 + num_classes
        blocks = []
        for i, c in enumerate(chans):
            blocks.append(DBlock(c_in, c, down=i < n, first=i == 0, sn=sn))
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.linear = sn(nn.Linear(c_in, 1))
        self.embed = sn(nn.Embedding(num_classes, c_in)) if projection else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is None:  # baseline: one-hot class maps as extra input channels
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, onehot.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, C) global sum pool
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out  # (B,)


# -- lean DCGAN-style nets ------------------------------------------------------------------


class DCGenerator(nn.Module):
    """(z (B, z_dim), y (B,)) -> images (B, 3, S, S): one transposed conv per resolution.

    The last feature map is at half the output size: it is ReLU'd there, up-sampled
    (nearest) and a 3x3 convolution writes the colours. No BatchNorm or ReLU runs at the
    output resolution, where a CPU step spent most of its time on them and on dtype casts,
    and no transposed convolution writes pixels (its checkerboard shows at 32 px).
    """

    def __init__(self, image_size: int = 32, num_classes: int = 4, z_dim: int = 128,
                 width: int = 64, cond_bn: bool = True):
        super().__init__()
        n = num_blocks(image_size)
        chans = [width * min(8, 2 ** (n - i)) for i in range(n)]  # 4x4 ... S/2 x S/2
        self.image_size, self.num_classes, self.z_dim, self.cond_bn = image_size, num_classes, z_dim, cond_bn
        self.embed = None if cond_bn else nn.Embedding(num_classes, z_dim)

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNorm(c, num_classes) if cond_bn else PlainBatchNorm(c)

        self.linear = nn.Linear(z_dim if cond_bn else 2 * z_dim, chans[0] * 16)
        self.bns = nn.ModuleList(norm(c) for c in chans)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1) for i in range(n - 1))
        self.out = nn.Conv2d(chans[-1], 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        h = F.relu(self.bns[0](self.linear(z).view(z.shape[0], -1, 4, 4), y))  # (B, C0, 4, 4)
        for up, bn in zip(self.ups, self.bns[1:], strict=True):
            h = F.relu(bn(up(h), y))  # resolution doubles
        return torch.tanh(self.out(F.interpolate(h, scale_factor=2, mode="nearest")))  # (B, 3, S, S)


class DCDiscriminator(nn.Module):
    """(images (B, 3, S, S), y (B,)) -> realness logits (B,): one strided conv per resolution."""

    def __init__(self, image_size: int = 32, num_classes: int = 4, width: int = 64,
                 projection: bool = True, spectral_norm: bool = True):
        super().__init__()
        n = num_blocks(image_size)
        sn = _sn if spectral_norm else (lambda m: m)
        self.image_size, self.num_classes, self.projection = image_size, num_classes, projection
        c_in = 3 if projection else 3 + num_classes
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [sn(nn.Conv2d(c_in, width * min(8, 2 ** i), 4, 2, 1)), nn.LeakyReLU(0.1)]
            c_in = width * min(8, 2 ** i)
        c_out = c_in  # no doubling at 4x4: that 3x3 conv was a third of D's FLOPs
        layers += [sn(nn.Conv2d(c_in, c_out, 3, 1, 1)), nn.LeakyReLU(0.1)]  # at 4x4
        self.blocks = nn.Sequential(*layers)
        self.linear = sn(nn.Linear(c_out, 1))
        self.embed = sn(nn.Embedding(num_classes, c_out)) if projection else None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is None:
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, onehot.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        h = self.blocks(x).sum(dim=(2, 3))  # (B, C)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1)
        return out  # (B,)


ARCHS = {"resnet": (Generator, Discriminator), "dcgan": (DCGenerator, DCDiscriminator)}


def _arch(name: str) -> tuple[type, type]:
    if name not in ARCHS:
        raise ValueError(f"gan.arch='{name}' (known: {', '.join(ARCHS)})")
    return ARCHS[name]


def build_gan(gan_cfg, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Generator and discriminator for a ``GANConfig``."""
    g_cls, d_cls = _arch(gan_cfg.arch)
    g = g_cls(gan_cfg.image_size, num_classes, gan_cfg.z_dim, gan_cfg.g_width, gan_cfg.cond_bn)
    d = d_cls(gan_cfg.image_size, num_classes, gan_cfg.d_width, gan_cfg.projection, gan_cfg.spectral_norm)
    return g, d


def make_generator(arch: str = "resnet", **kwargs) -> nn.Module:
    """A generator from :func:`generator_kwargs` (checkpoints before ``arch`` existed are ResNets)."""
    return _arch(arch)[0](**kwargs)


def generator_kwargs(g: nn.Module, width: int) -> dict:
    """The constructor arguments of ``g`` (stored in generator.pt to rebuild it)."""
    arch = next(k for k, (g_cls, _) in ARCHS.items() if isinstance(g, g_cls))
    return {"arch": arch, "image_size": g.image_size, "num_classes": g.num_classes, "z_dim": g.z_dim,
            "width": width, "cond_bn": g.cond_bn}
