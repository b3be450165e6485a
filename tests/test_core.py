"""The shared training core and the detection metrics."""

import numpy as np
import pytest
import torch
from torch import nn

from dfflab.detector.scoring import score_batches
from dfflab.metrics import binary_metrics, choose_threshold, eer, per_source_metrics
from dfflab.train.augment import hflip, make_augment, translate
from dfflab.train.core import detection_loss, epoch_rows, train_one_epoch, warmup_cosine


def test_metrics_match_hand_computation():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    m = binary_metrics(scores, labels, threshold=0.5)
    # at 0.5: predictions 0 0 0 1 1 0 -> tp=2 fn=1 tn=3 fp=0
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 3, 0)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)
    # AUROC by counting pairs: positives .35 .8 .7 vs negatives .1 .4 .2 -> 8 of 9 pairs ordered
    assert m["auroc"] == pytest.approx(8 / 9)
    # AP: ranks .8(+) .7(+) .4(-) .35(+) -> (1 + 1 + 3/4) / 3
    assert m["ap"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_eer_by_hand():
    # perfectly separated -> 0; perfectly inverted -> 1
    assert eer(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.0)
    assert eer(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    # one negative above one of two positives: FPR=FNR=0.5 at threshold .6
    s, y = torch.tensor([0.1, 0.6, 0.5, 0.9]), torch.tensor([0, 0, 1, 1])
    assert eer(s, y) == pytest.approx(0.5)


def test_per_source_and_threshold():
    scores = torch.tensor([0.1, 0.2, 0.9, 0.3, 0.95, 0.15])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    src = torch.tensor([0, 0, 1, 2, 1, 2])
    per = per_source_metrics(scores, labels, src, ["wiki", "a", "b"])
    assert per["a"]["auroc"] == pytest.approx(1.0)
    assert per["b"]["auroc"] == pytest.approx(0.75)  # .3 beats both reals, .15 beats .1 only
    thr = choose_threshold(scores, labels)
    assert binary_metrics(scores, labels, thr)["balanced_accuracy"] >= binary_metrics(scores, labels, 0.5)["balanced_accuracy"]


def test_augment_moves_pixels_without_resampling():
    x = torch.rand(8, 3, 16, 16)
    t = translate(x, 3, torch.Generator().manual_seed(0))
    assert t.shape == x.shape
    # translation copies pixel values: every output value exists in the (reflect-padded) input
    assert torch.isin(t[:, :, 3:-3, 3:-3], x).all()
    f = hflip(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(2)) for i in range(8))
    assert make_augment("none") is None
    with pytest.raises(ValueError):
        make_augment("jitter")


def test_schedule_warms_up_then_decays():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, 5, 20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[4] == pytest.approx(1.0) and lrs[-1] < 0.1


def test_balancing():
    labels = np.array([0] * 25 + [1] * 75)
    loss = detection_loss(labels, "weight", torch.device("cpu"))
    assert loss.pos_weight.item() == pytest.approx(1 / 3)
    rows = epoch_rows(np.arange(100), labels, "sample", 0)
    assert 0.4 < labels[rows].mean() < 0.6
    assert sorted(epoch_rows(np.arange(100), labels, "weight", 0)) == list(range(100))


def test_core_learns_a_separable_toy_problem():
    torch.manual_seed(0)
    # fakes carry a bright top-left patch; reals don't
    x = torch.randint(0, 128, (256, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(256) % 2
    x[y == 1, :, :3, :3] = 250
    src = y.clone()

    def batches():
        for i in range(0, 256, 32):
            yield x[i:i + 32], y[i:i + 32], src[i:i + 32]

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                          nn.Linear(4, 1), nn.Flatten(0))
    dev = torch.device("cpu")
    before = score_batches(model, batches(), dev, ["wiki", "fake"], threshold=0.5).overall
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(15):
        stats = train_one_epoch(model, batches(), opt, nn.BCEWithLogitsLoss(), dev)
    scored = score_batches(model, batches(), dev, ["wiki", "fake"], threshold=0.5, loss_fn=nn.BCEWithLogitsLoss())
    after, per, pred = scored.overall, scored.per_source, scored.pred
    assert stats["images"] == 256 and stats["loss"] < 0.3
    assert after["accuracy"] > 0.95 and after["auroc"] > 0.99 and after["auroc"] > before["auroc"]
    assert per["fake"]["auroc"] == after["auroc"] and pred.logits.shape == (256,)


def test_nan_loss_stops_training():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1), nn.Flatten(0))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    x = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(FloatingPointError):
        train_one_epoch(model, [(x, torch.ones(4), torch.ones(4))], torch.optim.SGD(model.parameters(), 0.1),
                        nn.BCEWithLogitsLoss(), torch.device("cpu"))


def test_reestimated_batchnorm_statistics_are_the_datas():
    from dfflab.train.core import reestimate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(1))
    x = torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8)
    model(x[:2].float() / 255)
    model[1].running_mean.fill_(5.0)  # stale statistics, e.g. an average over clients
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [(x[i:i + 16], torch.zeros(16), torch.zeros(16)) for i in range(0, 64, 16)]
    assert reestimate_batchnorm(model, batches, torch.device("cpu"), amp=False) == 64
    with torch.no_grad():
        feats = model[0](x.float() / 255)  # (64, 4, 8, 8)
    assert torch.allclose(model[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())  # weights untouched
    assert not model.training and model[1].momentum == 0.1
