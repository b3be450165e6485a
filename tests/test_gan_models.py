"""GAN networks, losses, DiffAugment, one D/G step and the EMA."""

from __future__ import annotations

import copy

import pytest
import torch

from dfflab.generative.diffaug import (
    cutout,
    diff_augment,
    make_diffaug,
    parse_policy,
    translation,
)
from dfflab.generative.models import Discriminator, Generator, num_blocks
from dfflab.generative.steps import (
    GANParts,
    d_loss_fn,
    d_step,
    ema_update,
    g_loss_fn,
    g_step,
)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("full", [True, False])
def test_shapes_for_every_resolution(size, full):
    g = Generator(size, num_classes=4, z_dim=8, width=4, cond_bn=full)
    d = Discriminator(size, num_classes=4, width=4, projection=full, spectral_norm=full)
    y = torch.tensor([0, 3])
    x = g(torch.randn(2, 8), y)
    assert x.shape == (2, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x, y).shape == (2,)
    assert len(g.blocks) == num_blocks(size) and len(d.blocks) == num_blocks(size) + 1


@pytest.mark.parametrize("size", [0, 8, 48, 512])
def test_bad_image_size_names_the_setting(size):
    with pytest.raises(ValueError, match="gan.image-size"):
        Generator(size)


def test_conditioning_switches_change_the_architecture():
    assert any("parametrizations" in k for k in Discriminator(16, width=4).state_dict())
    assert not any("parametrizations" in k for k in Discriminator(16, width=4, spectral_norm=False).state_dict())
    assert Discriminator(16, width=4, projection=False).embed is None
    assert Generator(16, width=4, cond_bn=False).embed is not None
    g = Generator(16, num_classes=4, z_dim=8, width=4).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    a, b = g(z, torch.tensor([0, 1])).unbind()
    assert torch.equal(a, b)  # cond-BN starts at gain 1, bias 0 for every class
    with torch.no_grad():
        g.blocks[0].bn1.bias.weight[1] += 1.0
    a, b = g(z, torch.tensor([0, 1])).unbind()
    assert not torch.allclose(a, b)  # the class now changes the image


def test_losses_match_hand_computed_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert d_loss_fn("hinge", real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert g_loss_fn("hinge", fake).item() == pytest.approx(1.0)
    sp = torch.nn.functional.softplus
    assert d_loss_fn("bce", real, fake).item() == pytest.approx((sp(-real).mean() + sp(fake).mean()).item())
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert g_loss_fn("bce", fake).item() == pytest.approx(bce(fake, torch.ones(2)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="gan.loss"):
        d_loss_fn("wgan", real, fake)


def _parts(diffaug: str = "color,translation,cutout") -> GANParts:
    torch.manual_seed(0)
    g = Generator(16, num_classes=4, z_dim=8, width=4)
    d = Discriminator(16, num_classes=4, width=4)
    return GANParts(g, d, torch.optim.Adam(g.parameters(), 1e-2, betas=(0.0, 0.9)),
                    torch.optim.Adam(d.parameters(), 1e-2, betas=(0.0, 0.9)), "hinge", make_diffaug(diffaug))


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _changed(before: dict, m: torch.nn.Module) -> set[str]:
    return {k for k, v in m.named_parameters() if not torch.equal(before[k], v)}


def test_d_step_changes_d_parameters_only():
    parts = _parts()
    gen = torch.Generator().manual_seed(0)
    g0, d0 = _params(parts.g), _params(parts.d)
    stats = d_step(parts, torch.rand(6, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3, 0, 1]), gen)
    assert set(stats) == {"d_loss", "d_real", "d_fake"}
    assert _changed(g0, parts.g) == set()
    assert _changed(d0, parts.d) == set(d0)  # every D parameter moved


def test_g_step_changes_g_parameters_only_and_leaves_d_untouched():
    parts = _parts()
    gen = torch.Generator().manual_seed(0)
    g0, d0 = _params(parts.g), _params(parts.d)
    d_state = copy.deepcopy(parts.d.state_dict())  # incl. spectral-norm u/v buffers
    g_step(parts, 6, torch.device("cpu"), gen)
    assert _changed(d0, parts.d) == set()
    assert all(torch.equal(v, d_state[k]) for k, v in parts.d.state_dict().items())
    moved = _changed(g0, parts.g)
    # Only the classes drawn get BN-embedding gradients; every conv/linear must move.
    assert {k for k in g0 if "gain" not in k and "bias.weight" not in k} <= moved
    assert parts.d.training and all(p.requires_grad for p in parts.d.parameters())


def test_ema_update_follows_the_formula_and_copies_buffers():
    torch.manual_seed(0)
    model = Generator(16, num_classes=2, z_dim=4, width=4)
    ema = copy.deepcopy(model)
    before = _params(ema)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.blocks[0].bn1.bn.running_mean.fill_(3.0)
    decay = ema_update(ema, model, 0.999, step=0)
    assert decay == pytest.approx(1 / 10)  # warmed up: (1 + 0) / (10 + 0)
    for k, p in ema.named_parameters():
        expect = decay * before[k] + (1 - decay) * dict(model.named_parameters())[k]
        assert torch.allclose(p, expect, atol=1e-6)
    assert torch.equal(ema.blocks[0].bn1.bn.running_mean, model.blocks[0].bn1.bn.running_mean)
    assert ema_update(ema, model, 0.999, step=10**6) == 0.999


def test_diffaug_is_batched_reproducible_and_differentiable():
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert make_diffaug("none") is None and parse_policy(" color , cutout") == ["color", "cutout"]
    with pytest.raises(ValueError, match="gan.diffaug"):
        parse_policy("color,rotate")


def test_translation_shifts_with_zero_fill_and_cutout_zeros_a_square():
    x = torch.ones(64, 1, 16, 16)
    t = translation(x, torch.Generator().manual_seed(0))
    shifted = (t == 0).flatten(1).any(1)
    assert shifted.float().mean() > 0.5  # most images moved (ratio 1/8 = up to 2 px)
    assert ((t == 0) | (t == 1)).all()  # pure shifts: no interpolation
    c = cutout(x, torch.Generator().manual_seed(0))
    zeros = (c == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # an 8x8 square, clipped at borders
