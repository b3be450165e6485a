"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable augmentations for GANs.

The same random colour, translation and cutout transforms are applied to real and
generated images before the discriminator sees them, in both the D and the G step.
Because every op is differentiable, G still receives gradients through them; D cannot
memorize the few real images a small dataset has. Ops follow the paper's reference
implementation (images in [-1, 1], translation ratio 1/8, cutout ratio 1/2) and are
batched: one random draw per image, no Python loop over the batch, drawn on the
images' device when the generator lives there.

    aug = make_diffaug("color,translation,cutout")
    d_real = D(aug(x_real, gen), y)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Gen = torch.Generator | None


def _rand(x: torch.Tensor, gen: Gen, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) draws from ``gen``, made where ``gen`` lives (x's device in training: no copy)."""
    where = gen.device if gen is not None else x.device
    return torch.rand(*shape, generator=gen, device=where).to(device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor, gen: Gen = None) -> torch.Tensor:
    return x + (_rand(x, gen, x.shape[0], 1, 1, 1) - 0.5)


def saturation(x: torch.Tensor, gen: Gen = None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W) grey
    return (x - mean) * (_rand(x, gen, x.shape[0], 1, 1, 1) * 2) + mean


def contrast(x: torch.Tensor, gen: Gen = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen, x.shape[0], 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, gen: Gen = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side; vacated pixels are zero."""
    b, c, h, w = x.shape
    ph, pw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, gen, b) * (2 * ph + 1)).long().clamp_(max=2 * ph)  # in [0, 2*ph]
    dx = (_rand(x, gen, b) * (2 * pw + 1)).long().clamp_(max=2 * pw)
    xp = F.pad(x, (pw, pw, ph, ph))  # (B, C, H+2ph, W+2pw), zeros
    rows = dy[:, None] + torch.arange(h, device=x.device)[None]  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None]  # (B, W)
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, xp.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def cutout(x: torch.Tensor, gen: Gen = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of side ``ratio`` x image side at a random place per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # The square's centre may sit anywhere, so it can hang over the border (as in the paper).
    cy = (_rand(x, gen, b) * (h + (1 - ch % 2))).long()
    cx = (_rand(x, gen, b) * (w + (1 - cw % 2))).long()
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)  # (B, H)
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)  # (B, W)
    inside_y = (ys >= 0) & (ys < ch)
    inside_x = (xs >= 0) & (xs < cw)
    mask = ~(inside_y[:, :, None] & inside_x[:, None, :])  # (B, H, W) keep
    return x * mask[:, None].to(x.dtype)


POLICIES: dict[str, list[Callable]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


def parse_policy(policy: str) -> list[str]:
    """``"color,translation"`` -> ``["color", "translation"]``; ``none``/empty -> []."""
    names = [p.strip() for p in policy.split(",") if p.strip() and p.strip() != "none"]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"gan.diffaug: unknown op(s) {unknown} (known: {', '.join(POLICIES)}, none)")
    return names


def diff_augment(x: torch.Tensor, policy: str, gen: Gen = None) -> torch.Tensor:
    """Apply the ops of ``policy`` in order to a (B, 3, H, W) batch."""
    for name in parse_policy(policy):
        for op in POLICIES[name]:
            x = op(x, gen)
    return x.contiguous()


def make_diffaug(policy: str) -> Callable[[torch.Tensor, Gen], torch.Tensor] | None:
    """The augmentation for a ``gan.diffaug`` policy, or ``None`` when it is off."""
    if not parse_policy(policy):
        return None
    return lambda x, gen=None: diff_augment(x, policy, gen)
