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
from dfflab.generative.models import (
    ARCHS,
    DCGenerator,
    Discriminator,
    Generator,
    generator_kwargs,
    make_generator,
    num_blocks,
)
from dfflab.generative.steps import (
    GANParts,
    d_loss_fn,
    d_step,
    ema_update,
    g_loss_fn,
    g_step,
    make_fakes,
    resolve_precision,
    standing_stats,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on one thread: on shared cores OpenMP's waiting threads made two slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_shapes_for_every_resolution(size, full, arch):
    g_cls, d_cls = ARCHS[arch]
    g = g_cls(size, num_classes=4, z_dim=8, width=4, cond_bn=full)
    d = d_cls(size, num_classes=4, width=4, projection=full, spectral_norm=full)
    y = torch.tensor([0, 3])
    x = g(torch.randn(2, 8), y)
    assert x.shape == (2, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x, y).shape == (2,)
    if arch == "resnet":
        assert len(g.blocks) == num_blocks(size) and len(d.blocks) == num_blocks(size) + 1
    else:
        assert len(g.ups) == num_blocks(size) - 1  # the last doubling is the output layer's up-sampling
    rebuilt = make_generator(**generator_kwargs(g, 4))  # what generator.pt stores
    assert type(rebuilt) is g_cls and rebuilt.load_state_dict(g.state_dict())


def test_unknown_arch_and_precision_name_the_setting():
    from dfflab.generative.models import build_gan

    class Cfg:
        arch, image_size, z_dim, g_width, d_width, cond_bn, projection, spectral_norm = "vit", 16, 8, 4, 4, 1, 1, 1

    with pytest.raises(ValueError, match="gan.arch"):
        build_gan(Cfg, 4)
    with pytest.raises(ValueError, match="gan.precision"):
        resolve_precision("fp8", torch.device("cpu"))
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


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


def _parts(diffaug: str = "color,translation,cutout", arch: str = "resnet", amp=None) -> GANParts:
    torch.manual_seed(0)
    g_cls, d_cls = ARCHS[arch]
    g = g_cls(16, num_classes=4, z_dim=8, width=4)
    d = d_cls(16, num_classes=4, width=4)
    return GANParts(g, d, torch.optim.Adam(g.parameters(), 1e-2, betas=(0.0, 0.9)),
                    torch.optim.Adam(d.parameters(), 1e-2, betas=(0.0, 0.9)), "hinge", make_diffaug(diffaug),
                    amp_dtype=amp)


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _changed(before: dict, m: torch.nn.Module) -> set[str]:
    return {k for k, v in m.named_parameters() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_d_step_changes_d_parameters_only(arch, amp):
    parts = _parts(arch=arch, amp=amp)
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    fake = make_fakes(parts, y, gen)
    assert fake.requires_grad and fake.shape == (6, 3, 16, 16)
    g0, d0 = _params(parts.g), _params(parts.d)
    stats = d_step(parts, torch.rand(6, 3, 16, 16) * 2 - 1, y, fake, gen)
    assert set(stats) == {"d_loss", "d_real", "d_fake", "d_acc"}
    assert all(v.ndim == 0 and not v.requires_grad for v in stats.values())  # device scalars, no graph
    assert 0 <= stats["d_acc"] <= 1 and torch.isfinite(stats["d_loss"])
    assert _changed(g0, parts.g) == set()
    assert _changed(d0, parts.d) == set(d0)  # every D parameter moved


def test_d_step_sees_real_and_fake_as_one_batch_with_the_hinge_loss():
    parts = _parts(diffaug="none")
    seen = []
    parts.d.register_forward_hook(lambda m, inp, out: seen.append((inp[0].shape[0], out.detach())))
    real, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 3])
    fake = make_fakes(parts, y, torch.Generator().manual_seed(0))
    stats = d_step(parts, real, y, fake)
    (b, out), = seen  # one forward of D: reals and fakes concatenated
    assert b == 8
    assert stats["d_loss"].item() == pytest.approx(d_loss_fn("hinge", out[:4], out[4:]).item(), rel=1e-5)


def test_g_step_reuses_the_fakes_changes_g_only_and_leaves_d_untouched():
    parts = _parts()
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    fake = make_fakes(parts, y, gen)
    d_step(parts, torch.rand(6, 3, 16, 16) * 2 - 1, y, fake, gen)
    g0, d0 = _params(parts.g), _params(parts.d)
    d_state = copy.deepcopy(parts.d.state_dict())  # incl. spectral-norm u/v buffers
    calls = []
    parts.g.register_forward_hook(lambda *a: calls.append(1))
    g_step(parts, fake, y, gen)
    assert calls == []  # no second G forward: the D step's fakes carry the graph
    assert _changed(d0, parts.d) == set()
    assert all(torch.equal(v, d_state[k]) for k, v in parts.d.state_dict().items())
    moved = _changed(g0, parts.g)
    # Only the classes drawn get BN-embedding gradients; every conv/linear must move.
    assert {k for k in g0 if "gain" not in k and "bias.weight" not in k} <= moved
    assert parts.d.training and all(p.requires_grad for p in parts.d.parameters())


def test_ema_update_follows_the_formula_and_leaves_buffers_alone():
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
    # the live generator's statistics belong to its weights: the EMA gets standing statistics instead
    assert torch.equal(ema.blocks[0].bn1.bn.running_mean, torch.zeros(16))
    assert ema_update(ema, model, 0.999, step=10**6) == 0.999


@pytest.mark.parametrize("g_cls", [Generator, DCGenerator])
def test_standing_statistics_match_a_recomputed_pass(g_cls):
    """After standing_stats every BN holds the mean over batches of its inputs' batch mean and
    unbiased variance on the same noise, recomputed here by hand with hooks."""
    torch.manual_seed(0)
    g = g_cls(16, num_classes=4, z_dim=8, width=4)
    with torch.no_grad():  # statistics that the live training would never give these weights
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(5.0)
                m.running_var.fill_(0.01)
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    standing_stats(g, batches=3, batch_size=10, seed=7)
    assert not g.training and all(m.momentum == 0.1 for m in bns)  # momenta restored
    got = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    seen = {i: [] for i in range(len(bns))}
    for i, m in enumerate(bns):
        m.register_forward_pre_hook(lambda m, inp, i=i: seen[i].append(inp[0].detach()))
    gen = torch.Generator().manual_seed(7)
    g.train()
    with torch.no_grad():
        for _ in range(3):  # the same draws as standing_stats: noise, then classes, per batch
            z = torch.randn(10, 8, generator=gen)
            g(z, torch.randint(0, 4, (10,), generator=gen))
    for i, (mean_got, var_got) in enumerate(got):
        mean = torch.stack([x.mean((0, 2, 3)) for x in seen[i]]).mean(0)
        var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in seen[i]]).mean(0)
        assert torch.allclose(mean_got, mean, atol=1e-5)
        assert torch.allclose(var_got, var, rtol=1e-4, atol=1e-6)


def test_standing_statistics_bring_eval_close_to_batch_statistics():
    """With standing stats an eval-mode sample matches a large train-mode batch far better than
    with statistics from other weights (what copying the live generator's buffers gave the EMA)."""
    torch.manual_seed(0)
    g = DCGenerator(16, num_classes=4, z_dim=8, width=4)
    z, y = torch.randn(512, 8), torch.arange(512) % 4
    with torch.no_grad():
        batch = g.train()(z, y)
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
        stale = g.eval()(z, y)
        standing_stats(g, batches=8, batch_size=256)
        fresh = g(z, y)
    assert (fresh - batch).abs().mean() < 0.2 * (stale - batch).abs().mean()


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
