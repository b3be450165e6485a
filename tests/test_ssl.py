"""SSL parts: methods' losses and steps, batched views, kNN and linear probes."""

import copy

import pytest
import torch
import torch.nn.functional as F

from dfflab.config import load_config
from dfflab.models import build_backbone
from dfflab.ssl.loop import ssl_step
from dfflab.ssl.methods import METHODS, build_method
from dfflab.ssl.probes import (
    accuracies,
    fit_linear,
    knn_classify,
    knn_scores,
    knn_votes,
    linear_scores,
)
from dfflab.ssl.views import (
    VIEWS,
    colour_jitter,
    gaussian_blur,
    make_view,
    random_crop,
    resized_crop,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _method(name: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config("tiny").ssl
    return build_method(name, build_backbone("resnet-narrow", 8), cfg)


def _views(n: int = 16, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    view = make_view("shift")
    return view(x, g), view(x, g)


def _ntxent_reference(z0, z1, t):
    """NT-Xent by its definition (SimCLR eq. 1): each of 2N views against the 2N - 1 others."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = len(z0)
    sim = z @ z.T / t
    losses = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        losses.append(-sim[i, pos] + torch.logsumexp(others, 0))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_simclr_loss_is_ntxent_of_both_views(t):
    m = _method("simclr")
    m.criterion.temperature = t
    x0, x1 = _views()
    m.train()
    z = m.projection_head(m.backbone(torch.cat([x0, x1])))  # same BN batch as the method
    ref = _ntxent_reference(*z.chunk(2), t)
    assert m.loss(x0, x1, 0, 10).item() == pytest.approx(ref.item(), rel=1e-4)


def test_byol_loss_is_symmetric_negative_cosine_to_the_target():
    m = _method("byol")
    x0, x1 = _views()
    m.train()
    online = copy.deepcopy(m)
    loss = m.loss(x0, x1, 0, 10)  # step 0: target = online weights (deep copy), momentum update is a no-op
    x = torch.cat([x0, x1])
    p0, p1 = online.prediction_head(online.projection_head(online.backbone(x))).chunk(2)
    z0, z1 = online.projection_head(online.backbone(x)).chunk(2)
    ref = -0.5 * (F.cosine_similarity(p0, z1).mean() + F.cosine_similarity(p1, z0).mean())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_lowers_the_loss(name):
    m = _method(name, seed=1)
    x0, x1 = _views(seed=2)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    m.train()
    with torch.no_grad():
        before = m.loss(x0, x1, 0, 100).item()
    ssl_step(m, opt, x0, x1, 1, 100)
    with torch.no_grad():
        after = m.loss(x0, x1, 2, 100).item()
    assert after < before
    if name == "byol":  # the target moved towards the online network, but not all the way
        online = dict(m.backbone.named_parameters())
        target = dict(m.backbone_momentum.named_parameters())
        assert not any(p.requires_grad for p in target.values())
        assert any(not torch.equal(online[k], target[k]) for k in online)


def test_unknown_names_fail_naming_the_setting():
    with pytest.raises(ValueError, match="ssl.method='moco'"):
        build_method("moco", build_backbone("resnet-narrow", 8), load_config("tiny").ssl)
    with pytest.raises(ValueError, match="ssl.views='blur'"):
        make_view("blur")


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views_are_batched_random_per_image_and_reproducible(name):
    x = torch.rand(1, 3, 32, 32).expand(8, 3, 32, 32).contiguous()  # 8 copies of one image
    view = make_view(name)
    a = view(x, torch.Generator().manual_seed(0))
    b = view(x, torch.Generator().manual_seed(0))
    side = 16 if name == "patch" else 32  # patch views are half-side windows
    assert a.shape == (8, 3, side, side) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert len({tuple(v.flatten()[:64].tolist()) for v in a}) > 1  # copies got different draws


def test_shift_view_and_crop_only_move_pixels():
    x = torch.rand(8, 3, 32, 32)
    y = make_view("shift")(x, torch.Generator().manual_seed(0))
    assert torch.isin(y, x).all()  # no value was resampled, blurred or recoloured
    c = random_crop(x, 12, torch.Generator().manual_seed(0))
    for i in range(8):  # each crop is a window of its own image
        hits = [(dy, dx) for dy in range(21) for dx in range(21)
                if torch.equal(c[i], x[i, :, dy:dy + 12, dx:dx + 12])]
        assert len(hits) == 1


def test_view_parts_reduce_to_identity_at_zero_strength():
    x = torch.rand(4, 3, 16, 16)
    assert torch.allclose(resized_crop(x, (1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-5)
    assert torch.allclose(colour_jitter(x, (0, 0, 0, 0), p=1.0), x, atol=1e-5)
    assert torch.allclose(gaussian_blur(x, (1e-3, 1e-3), p=1.0), x, atol=1e-5)
    blurred = gaussian_blur(x, (2.0, 2.0), p=1.0)
    assert torch.allclose(blurred.mean((2, 3)), x.mean((2, 3)), atol=0.05)  # blur keeps the mean...
    assert blurred.std() < x.std()  # ... and smooths


def test_imagenet_views_change_colour_statistics_shift_views_do_not():
    x = torch.rand(64, 3, 32, 32) * 0.5 + 0.25
    g = torch.Generator().manual_seed(0)
    shifted, jittered = make_view("shift")(x, g), make_view("imagenet")(x, g)
    colour = lambda t: t.mean((2, 3))  # noqa: E731  per-image mean colour (B, 3)
    assert (colour(shifted) - colour(x)).abs().max() < 0.1
    assert (colour(jittered) - colour(x)).abs().max() > 0.2


def _toy(n_per: int, seed: int, spread: float = 0.3):
    """4 Gaussian clusters in 16-D: source id = cluster, label real (0) for cluster 0 else fake."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 3
    src = torch.arange(4).repeat_interleave(n_per)
    feats = centres[src] + spread * torch.randn(len(src), 16, generator=g)
    return feats, (src > 0).long(), src


def test_knn_and_linear_probe_separate_a_separable_toy_set():
    train, val = _toy(30, 0), _toy(20, 1)
    knn = knn_scores(train, val, n_sources=4, k=5, t=0.1)
    assert knn["knn_real_fake_acc"] > 0.95 and knn["knn_real_fake_bacc"] > 0.95
    assert knn["knn_source_acc"] > 0.95 and knn["knn_real_fake_auroc"] > 0.95
    lin = linear_scores(train, {"val": val}, n_sources=4, l2=1e-4)
    assert lin["linear_real_fake_bacc_val"] > 0.95 and lin["linear_source_acc_val"] > 0.95


def test_knn_vote_matches_lightly_and_corrects_the_class_prior():
    from lightly.utils.benchmarking import knn_predict

    train, val = _toy(30, 0, spread=2.0), _toy(20, 1, spread=2.0)  # overlapping clusters
    bank = F.normalize(train[0], dim=1)
    ref = knn_predict(F.normalize(val[0], dim=1), bank.T, train[2], 4, knn_k=7, knn_t=0.1)[:, 0]
    ours = knn_votes(train[0], train[2], val[0], 4, k=7, t=0.1, balanced=False)
    assert torch.equal(ours.argmax(1), ref)
    assert torch.allclose(ours.sum(1), torch.ones(len(ours)))
    # 1 real : 3 fakes with uninformative features: the raw vote says "fake" far more often
    # than the balanced one, which divides each class's votes by its share of the bank
    g = torch.Generator().manual_seed(0)
    feats, y = torch.randn(800, 8, generator=g), (torch.rand(800, generator=g) < 0.75).long()
    raw = knn_classify(feats[:600], y[:600], feats[600:], 2, k=20, balanced=False)
    bal = knn_classify(feats[:600], y[:600], feats[600:], 2, k=20, balanced=True)
    assert raw.float().mean() > 0.9 and 0.25 < bal.float().mean() < 0.75


def test_probes_are_at_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    feats, y = torch.randn(400, 16, generator=g), torch.randint(0, 2, (400,), generator=g)
    pred = knn_classify(feats[:200], y[:200], feats[200:], 2, k=10)
    assert 0.3 < accuracies(pred, y[200:])[0] < 0.7
    clf = fit_linear(feats[:200], y[:200], 2)
    assert 0.3 < accuracies(clf(feats[200:]), y[200:])[0] < 0.7


def test_accuracies_by_hand():
    pred, target = torch.tensor([1, 1, 1, 1, 0]), torch.tensor([1, 1, 1, 0, 0])
    acc, bacc = accuracies(pred, target)
    assert acc == pytest.approx(4 / 5)
    assert bacc == pytest.approx((1.0 + 0.5) / 2)  # recall fake 3/3, real 1/2
